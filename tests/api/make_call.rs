//! Click-to-call (flow D, PROTOCOLS §2.5): retailCRM's `makeCallUrl` → Ringostat's
//! `POST /callback/outward_call`, against the fake Ringostat. Alina (user 27, code 127) has a
//! number connected to the project; Tatiana's (28) is not connected; the senior manager (1)
//! has no number at all.

use callgate::testing::fake_ringostat::{FakeRingostat, FakeRingostatConfig, OutwardCall};
use serde_json::Value;
use tempfile::TempDir;

use crate::helpers::{TestApp, start_in, test_settings, with_ringostat};

const CLIENT_ID: &str = "test-client-id";

async fn setup(client_id: &str) -> (TestApp, FakeRingostat, TempDir) {
    let ringostat = FakeRingostat::start(FakeRingostatConfig {
        extensions: vec!["380671110027".into()],
        ..FakeRingostatConfig::default()
    })
    .await;
    let dir = TempDir::new().expect("temp dir");
    let mut settings = test_settings(&dir);
    settings.crm.client_id = client_id.into();
    with_ringostat(&mut settings, &ringostat);
    (start_in(settings, None).await, ringostat, dir)
}

async fn get(app: &TestApp, query: &str) -> (u16, Value) {
    let resp = app
        .client
        .get(app.url(&format!("/retailcrm/make-call?{query}")))
        .send()
        .await
        .expect("make-call request");
    (
        resp.status().as_u16(),
        resp.json().await.expect("a JSON answer"),
    )
}

#[tokio::test]
async fn click_to_call_rings_the_managers_own_number_then_the_normalized_client() {
    let (app, ringostat, _dir) = setup(CLIENT_ID).await;
    let (status, body) = get(
        &app,
        &format!("clientId={CLIENT_ID}&userId=27&code=127&phone=098%20123%2045%2067&externalPhone=380441112233"),
    )
    .await;
    assert_eq!(
        (status, &body["success"]),
        (200, &Value::Bool(true)),
        "{body}"
    );
    // By extension code only, as a form POST.
    let resp = app
        .client
        .post(app.url("/retailcrm/make-call"))
        .form(&[
            ("clientId", CLIENT_ID),
            ("code", "127"),
            ("phone", "+380981234568"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        ringostat.outward_calls(),
        vec![
            OutwardCall {
                extension: "380671110027".into(),
                destination: "380981234567".into()
            },
            OutwardCall {
                extension: "380671110027".into(),
                destination: "380981234568".into()
            },
        ]
    );
}

#[tokio::test]
async fn a_missing_or_wrong_client_id_is_401_and_places_nothing() {
    let (app, ringostat, _dir) = setup(CLIENT_ID).await;
    for query in [
        "userId=27&phone=0981234567".to_owned(),
        "clientId=wrong&userId=27&phone=0981234567".to_owned(),
        format!("clientId={CLIENT_ID}x&userId=27&phone=0981234567"),
    ] {
        let (status, body) = get(&app, &query).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("unauthorized")),
            "{query}: {body}"
        );
    }
    assert_eq!(ringostat.request_count("/callback/outward_call"), 0);
}

#[tokio::test]
async fn without_a_configured_client_id_click_to_call_is_503() {
    let (app, ringostat, _dir) = setup("").await;
    let (status, body) = get(&app, "clientId=&userId=27&phone=0981234567").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("crm.client_id"),
        "{body}"
    );
    assert_eq!(ringostat.request_count("/callback/outward_call"), 0);
}

#[tokio::test]
async fn each_refusal_comes_back_to_the_crm_as_a_clear_json_error() {
    let (app, ringostat, _dir) = setup(CLIENT_ID).await;
    let cases = [
        ("userId=1&phone=0981234567", 422, "manager_has_no_phone"),
        (
            "userId=99&code=199&phone=0981234567",
            422,
            "unknown_manager",
        ),
        ("userId=27&phone=shop_alina", 400, "bad_phone"),
        ("userId=27&phone=abc", 400, "bad_phone"),
        ("userId=27", 400, "missing_field"),
        ("userId=x27&phone=0981234567", 400, "bad_user"),
        ("userId=28&phone=0981234567", 502, "ringostat_refused"),
    ];
    for (query, want_status, want_code) in cases {
        let (status, body) = get(&app, &format!("clientId={CLIENT_ID}&{query}")).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (want_status, Some(want_code)),
            "{query}: {body}"
        );
        assert!(!body["detail"].as_str().unwrap_or("").is_empty(), "{body}");
    }
    let (_, body) = get(
        &app,
        &format!("clientId={CLIENT_ID}&userId=28&phone=0981234567"),
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("not connected to the project"),
        "Ringostat's reason is passed on: {body}"
    );
    ringostat.set_outage(true);
    let (status, body) = get(
        &app,
        &format!("clientId={CLIENT_ID}&userId=27&phone=0981234567"),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (502, Some("ringostat_unavailable")),
        "{body}"
    );
    assert!(ringostat.outward_calls().is_empty());
}

#[tokio::test]
async fn without_the_ringostat_api_click_to_call_is_503() {
    let dir = TempDir::new().unwrap();
    let mut settings = test_settings(&dir);
    settings.crm.client_id = CLIENT_ID.into();
    let app = start_in(settings, None).await;
    let (status, body) = get(
        &app,
        &format!("clientId={CLIENT_ID}&userId=27&phone=0981234567"),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("ringostat.auth_key"),
        "{body}"
    );
}
