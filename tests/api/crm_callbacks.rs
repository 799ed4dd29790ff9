//! retailCRM's callbacks (SPEC §8): `clientId` (`crm.client_id`) is required, checked in
//! constant time; a refused call and a user outside the manager directory change nothing.

use callgate::{
    domain::manager::{ManagerId, ManagerStatus},
    store::Store,
};
use serde_json::Value;

use crate::{
    helpers::{CLIENT_ID, TestApp, redis_store, spawn_app},
    redis_support::RedisKeys,
};

/// `POST /retailcrm/user-status` as a form, with `client_id` when given.
async fn user_status(
    app: &TestApp,
    client_id: Option<&str>,
    user_id: u64,
    status: &str,
) -> reqwest::Response {
    let user_id = user_id.to_string();
    let mut form = vec![("userId", user_id.as_str()), ("status", status)];
    if let Some(id) = client_id {
        form.push(("clientId", id));
    }
    app.client
        .post(app.url("/retailcrm/user-status"))
        .form(&form)
        .send()
        .await
        .expect("user-status request")
}

/// Everything a store holds that a status change could touch: the raw keys and the states of
/// a directory manager (27) and of a stranger (999).
async fn snapshot(store: &dyn Store) -> (Vec<(String, Vec<u8>)>, Vec<Option<ManagerStatus>>) {
    let raw = store.scan_prefix("", 100_000).await.expect("scan");
    let mut states = Vec::new();
    for id in [27, 999] {
        let state = store.get_manager_state(ManagerId(id)).await.expect("state");
        states.push(state.map(|s| s.status));
    }
    (raw, states)
}

async fn expect_code(response: reqwest::Response, status: u16, code: &str) {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["code"], code, "{body}");
}

#[tokio::test]
async fn a_missing_or_wrong_client_id_is_refused_and_changes_nothing() {
    let app = spawn_app(|_| {}).await;
    let before = snapshot(app.state.store.as_ref()).await;

    expect_code(
        user_status(&app, None, 27, "dinner").await,
        401,
        "unauthorized",
    )
    .await;
    expect_code(
        user_status(&app, Some("callgate-tes"), 27, "dinner").await,
        401,
        "unauthorized",
    )
    .await;
    expect_code(
        user_status(&app, Some(&format!("{CLIENT_ID}x")), 27, "dinner").await,
        401,
        "unauthorized",
    )
    .await;
    // In the query string of a GET, as retailCRM may send it.
    let r = app
        .client
        .get(app.url("/retailcrm/user-status?clientId=nope&userId=27&status=dinner"))
        .send()
        .await
        .unwrap();
    expect_code(r, 401, "unauthorized").await;
    // An unreadable body does not tell a stranger what is wrong with it.
    let r = app
        .client
        .post(app.url("/retailcrm/user-status"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect_code(r, 401, "unauthorized").await;

    assert_eq!(snapshot(app.state.store.as_ref()).await, before);
}

#[tokio::test]
async fn the_right_client_id_changes_the_status_in_any_layout() {
    let app = spawn_app(|_| {}).await;
    let r = user_status(&app, Some(CLIENT_ID), 27, "dinner").await;
    assert_eq!(r.status(), 200);
    let state = app.state.store.get_manager_state(ManagerId(27)).await;
    assert_eq!(
        state.unwrap().map(|s| s.status),
        Some(ManagerStatus::Dinner)
    );

    let r = app
        .client
        .get(app.url(&format!(
            "/retailcrm/user-status?clientId={CLIENT_ID}&userId=27&status=busy"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .client
        .post(app.url("/retailcrm/user-status"))
        .json(&serde_json::json!({"clientId": CLIENT_ID, "code": "127", "status": "break"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let state = app.state.store.get_manager_state(ManagerId(27)).await;
    assert_eq!(state.unwrap().map(|s| s.status), Some(ManagerStatus::Break));

    // An authenticated caller learns what is wrong with a bad body.
    let r = app
        .client
        .post(app.url(&format!("/retailcrm/user-status?clientId={CLIENT_ID}")))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect_code(r, 400, "malformed_json").await;
}

#[tokio::test]
async fn without_a_configured_client_id_every_callback_is_refused_with_503() {
    let app = spawn_app(|s| s.crm.client_id = "".into()).await;
    let before = snapshot(app.state.store.as_ref()).await;
    for given in [None, Some(""), Some(CLIENT_ID)] {
        expect_code(
            user_status(&app, given, 27, "dinner").await,
            503,
            "not_configured",
        )
        .await;
    }
    assert_eq!(snapshot(app.state.store.as_ref()).await, before);
}

/// A user outside the manager directory: 200 (retailCRM reports every user's changes) and
/// nothing stored.
async fn unknown_user_is_ignored(app: &TestApp) {
    let before = snapshot(app.state.store.as_ref()).await;
    let r = user_status(app, Some(CLIENT_ID), 999, "dinner").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["ignored"], "unknown_user", "{body}");
    assert_eq!(snapshot(app.state.store.as_ref()).await, before);
    // The same request for a directory manager is stored: the snapshot would have seen it.
    assert_eq!(
        user_status(app, Some(CLIENT_ID), 27, "dinner")
            .await
            .status(),
        200
    );
    assert_ne!(snapshot(app.state.store.as_ref()).await, before);
}

#[tokio::test]
async fn a_user_outside_the_directory_is_not_stored_on_the_embedded_store() {
    let app = spawn_app(|_| {}).await;
    unknown_user_is_ignored(&app).await;
}

#[tokio::test]
async fn a_user_outside_the_directory_is_not_stored_on_the_redis_store() {
    let redis = RedisKeys::new();
    let app = spawn_app(|s| redis_store(s, &redis.url, &redis.prefix)).await;
    unknown_user_is_ignored(&app).await;
}
