//! The fake Ringostat API is as strict as the documented one (PROTOCOLS §1.4), and callgate's
//! Ringostat client speaks it: raw HTTP for the refusals, the client for the happy paths.

use std::time::Duration;

use callgate::{
    domain::{phone_number::PhoneNumber, reconcile::CALLS_PER_REQUEST_CAP},
    ringostat::{RingostatClient, RingostatConfig, RingostatError},
    testing::fake_ringostat::{FakeCall, FakeRingostat, FakeRingostatConfig},
};
use chrono::NaiveDateTime;
use serde_json::{Map, Value, json};

fn at(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
}

fn call(id: &str, date: &str) -> FakeCall {
    let fields: Map<String, Value> = json!({
        "uniqueid": id, "caller": "380981234567", "dst": "380441112233",
        "call_type": "in", "disposition": "ANSWERED", "billsec": 12, "waittime": "3"
    })
    .as_object()
    .cloned()
    .unwrap();
    FakeCall {
        calldate: at(date),
        fields,
    }
}

async fn fake() -> FakeRingostat {
    FakeRingostat::start(FakeRingostatConfig {
        extensions: vec!["380671110027".into()],
        ..FakeRingostatConfig::default()
    })
    .await
}

fn client(fake: &FakeRingostat, key: &str, project: &str) -> RingostatClient {
    RingostatClient::new(RingostatConfig {
        base_url: fake.base_url(),
        auth_key: key.into(),
        project_id: project.into(),
        timeout: Duration::from_secs(5),
    })
    .unwrap()
}

async fn raw_get(fake: &FakeRingostat, path_and_query: &str, key: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(format!("{}{path_and_query}", fake.base_url()));
    if let Some(k) = key {
        req = req.header("Auth-key", k);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn calls_list_without_or_with_a_wrong_key_is_401() {
    let fake = fake().await;
    assert_eq!(raw_get(&fake, "/calls/list", None).await.0, 401);
    assert_eq!(raw_get(&fake, "/calls/list", Some("nope")).await.0, 401);
    let err = client(&fake, "nope", fake.project_id())
        .calls_list(
            at("2026-01-01 00:00:00"),
            at("2026-01-01 01:00:00"),
            &["uniqueid"],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RingostatError::Unauthorized { status: 401, .. }),
        "{err}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn another_project_is_403_and_query_auth_beside_the_header_is_400() {
    let fake = fake().await;
    let err = client(&fake, fake.auth_key(), "999")
        .calls_list(
            at("2026-01-01 00:00:00"),
            at("2026-01-01 01:00:00"),
            &["uniqueid"],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RingostatError::Unauthorized { status: 403, .. }),
        "{err}"
    );
    let (status, body) = raw_get(&fake, "/calls/list?token=x", Some(fake.auth_key())).await;
    assert_eq!(status, 400);
    assert!(body.contains("<html>"), "{body}");
}

#[tokio::test]
async fn calls_list_refuses_unknown_fields_bad_dates_and_unknown_parameters() {
    let fake = fake().await;
    let key = Some(fake.auth_key());
    let (status, body) = raw_get(&fake, "/calls/list?fields=uniqueid,phone", key).await;
    assert_eq!(
        (status, body.contains("incorrect field phone")),
        (400, true),
        "{body}"
    );
    let (status, body) = raw_get(&fake, "/calls/list?from=2026-01-01T00:00:00", key).await;
    assert_eq!((status, body.contains("from")), (400, true), "{body}");
    let (status, _) = raw_get(
        &fake,
        "/calls/list?from=2026-01-02%2000:00:00&to=2026-01-01%2000:00:00",
        key,
    )
    .await;
    assert_eq!(status, 400);
    let (status, body) = raw_get(&fake, "/calls/list?limit=10", key).await;
    assert_eq!((status, body.contains("limit")), (400, true), "{body}");
}

#[tokio::test]
async fn calls_list_answers_the_window_inclusive_with_exactly_the_fields_asked() {
    let fake = fake().await;
    fake.add_call(call("a", "2026-01-01 09:59:59"));
    fake.add_call(call("b", "2026-01-01 10:00:00"));
    fake.add_call(call("c", "2026-01-01 10:30:00"));
    fake.add_call(call("d", "2026-01-01 11:00:00"));
    fake.add_call(call("e", "2026-01-01 11:00:01"));
    let rows = client(&fake, fake.auth_key(), fake.project_id())
        .calls_list(
            at("2026-01-01 10:00:00"),
            at("2026-01-01 11:00:00"),
            &["uniqueid", "calldate", "billsec"],
        )
        .await
        .unwrap();
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r["uniqueid"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["b", "c", "d"]);
    assert_eq!(rows[0].len(), 3, "{:?}", rows[0]);
    assert_eq!(rows[0]["calldate"], "2026-01-01T10:00:00+0200");
    assert_eq!(rows[0]["billsec"], 12);
    let req = &fake.requests()[0];
    let q = |k: &str| {
        req.query
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(q("from").as_deref(), Some("2026-01-01 10:00:00"));
    assert_eq!(q("export_type").as_deref(), Some("json"));
    assert_eq!(q("project_id").as_deref(), Some(fake.project_id()));
}

#[tokio::test]
async fn calls_list_cuts_silently_at_the_cap() {
    let fake = fake().await;
    for i in 0..CALLS_PER_REQUEST_CAP + 10 {
        let mut c = call(&format!("c{i}"), "2026-01-01 10:00:00");
        c.calldate += chrono::Duration::milliseconds(i as i64);
        fake.add_call(c);
    }
    let rows = client(&fake, fake.auth_key(), fake.project_id())
        .calls_list(
            at("2026-01-01 09:00:00"),
            at("2026-01-01 11:00:00"),
            &["uniqueid"],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), CALLS_PER_REQUEST_CAP);
}

#[tokio::test]
async fn outward_call_takes_a_form_from_the_client_and_json_from_others() {
    let fake = fake().await;
    let manager = PhoneNumber::from_e164("+380671110027").unwrap();
    let clientn = PhoneNumber::from_e164("+380981234567").unwrap();
    client(&fake, fake.auth_key(), fake.project_id())
        .outward_call(&manager, &clientn)
        .await
        .unwrap();
    let req = fake.requests().pop().unwrap();
    assert_eq!(req.body, "extension=380671110027&destination=380981234567");
    let resp = reqwest::Client::new()
        .post(format!("{}/callback/outward_call", fake.base_url()))
        .header("Auth-key", fake.auth_key())
        .json(&json!({"extension": "380671110027", "destination": "+380981234568"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let calls = fake.outward_calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].destination, "380981234568");
}

#[tokio::test]
async fn outward_call_refusals_name_the_problem() {
    let fake = fake().await;
    let post = |body: &'static str, ct: &'static str| {
        let fake = fake.clone();
        async move {
            let resp = reqwest::Client::new()
                .post(format!("{}/callback/outward_call", fake.base_url()))
                .header("Auth-key", fake.auth_key())
                .header("Content-Type", ct)
                .body(body)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let form = "application/x-www-form-urlencoded";
    let (s, b) = post("destination=380981234567", form).await;
    assert_eq!((s, b.contains("extension is required")), (400, true), "{b}");
    let (s, b) = post("extension=380671110027&destination=abc", form).await;
    assert_eq!(
        (s, b.contains("destination is not a phone number")),
        (400, true),
        "{b}"
    );
    let (s, _) = post(
        "extension=380671110027&destination=380981234567",
        "text/plain",
    )
    .await;
    assert_eq!(s, 415);
    assert!(fake.outward_calls().is_empty());

    let err = client(&fake, fake.auth_key(), fake.project_id())
        .outward_call(
            &PhoneNumber::from_e164("+380679999999").unwrap(),
            &PhoneNumber::from_e164("+380981234567").unwrap(),
        )
        .await
        .unwrap_err();
    match err {
        RingostatError::Refused {
            status: 400,
            detail,
        } => {
            assert!(detail.contains("not connected to the project"), "{detail}")
        }
        other => panic!("expected a refusal, got {other}"),
    }
}

#[tokio::test]
async fn an_outage_is_retryable_and_recorded() {
    let fake = fake().await;
    fake.set_outage(true);
    let err = client(&fake, fake.auth_key(), fake.project_id())
        .calls_list(
            at("2026-01-01 00:00:00"),
            at("2026-01-01 01:00:00"),
            &["uniqueid"],
        )
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(fake.request_count("/calls/list"), 1);
}
