//! The operator's surface: the call log's filters and cursor over the JSON API, and the web
//! page's sign-in, session, CSRF and same-origin checks, dead letter replay and discard.

use std::time::Duration;

use callgate::{
    domain::phone_number::PhoneNumber,
    store::keys,
    testing::fake_retailcrm::{Fault, FaultRule},
};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::{
    calls::{after_call, tracking},
    helpers::{
        ADMIN_TOKEN, TestApp, add_alinas_customer, eventually, manual_worker, mirror_on,
        redis_store, spawn_app, spawn_app_with_crm, start_fake_crm,
    },
    operator_seed::{seed_calls, seed_dead_letter},
    redis_support::RedisKeys,
};

/// A client that shows redirects instead of following them, and keeps no cookies.
fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn calls(app: &TestApp, query: &str) -> (StatusCode, Value) {
    admin_get(app, &format!("/admin/calls?{query}")).await
}

async fn call_ids(app: &TestApp, query: &str) -> Vec<String> {
    let (status, body) = calls(app, query).await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    body["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| c["call_id"].as_str().expect("call_id").to_owned())
        .collect()
}

#[tokio::test]
async fn every_call_log_filter_narrows_the_list() {
    let app = spawn_app(manual_worker).await;
    seed_calls(&*app.state.store).await;

    let cases: [(&str, &[&str]); 12] = [
        ("", &["c6", "c5", "c4", "c3", "c2", "c1"]),
        ("site=shop-pl", &["c5", "c3"]),
        // The tracking number in any format a human types.
        ("external_number=%2B48%2022%20123%2045%2067", &["c5", "c3"]),
        ("external_number=48221234567", &["c5", "c3"]),
        ("order_date=2024-07-30", &["c6", "c1"]),
        ("manager_id=28", &["c6", "c3"]),
        ("result=answered", &["c6", "c3", "c1"]),
        ("caller=098%20123%2045%2067", &["c6", "c2", "c1"]),
        ("caller=anonymous", &["c4"]),
        (
            "from=2024-07-31T14:02&to=2024-07-31T14:05",
            &["c4", "c3", "c2"],
        ),
        ("site=shop-ua&result=answered&manager_id=27", &["c1"]),
        // An HTML form sends every field; empty ones mean "any".
        (
            "site=&external_number=&order_date=&manager_id=&result=&caller=&from=&to=&cursor=",
            &["c6", "c5", "c4", "c3", "c2", "c1"],
        ),
    ];
    for (query, expected) in cases {
        assert_eq!(call_ids(&app, query).await, expected, "{query}");
    }
}

#[tokio::test]
async fn the_call_log_pages_with_an_opaque_cursor() {
    let app = spawn_app(manual_worker).await;
    seed_calls(&*app.state.store).await;

    let (_, first) = calls(&app, "limit=4").await;
    assert_eq!(first["calls"].as_array().expect("calls").len(), 4);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (_, second) = calls(&app, &format!("limit=4&cursor={cursor}")).await;
    let ids: Vec<&str> = second["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .filter_map(|c| c["call_id"].as_str())
        .collect();
    assert_eq!(ids, ["c2", "c1"]);
    assert_eq!(second["next_cursor"], Value::Null, "the last page says so");

    // The cursor keeps its filter's company.
    let (_, filtered) = calls(&app, "site=shop-ua&limit=1").await;
    let cursor = filtered["next_cursor"].as_str().expect("next").to_owned();
    assert_eq!(
        call_ids(&app, &format!("site=shop-ua&limit=10&cursor={cursor}")).await,
        ["c4", "c2", "c1"]
    );
}

#[tokio::test]
async fn a_bad_call_log_filter_is_named() {
    let app = spawn_app(manual_worker).await;
    for (query, field) in [
        ("external_number=call-me", "external_number"),
        ("order_date=31.07.2024", "order_date"),
        ("manager_id=alina", "manager_id"),
        ("result=great", "result"),
        ("from=yesterday", "from"),
        ("to=2024-13-01T00:00", "to"),
        ("cursor=not-a-cursor", "cursor"),
    ] {
        let (status, body) = calls(&app, query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["field"], field, "{query}: {body}");
    }
}

/// Posts the sign-in form with `token` from `origin`; returns the response and its
/// `Set-Cookie`.
async fn post_sign_in(app: &TestApp, origin: &str, token: &str) -> (StatusCode, Option<String>) {
    let r = plain_client()
        .post(app.url("/admin/signin"))
        .header(header::ORIGIN, origin)
        .form(&[("token", token)])
        .send()
        .await
        .expect("sign in");
    let cookie = r
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (r.status(), cookie)
}

/// Signs in through the form; returns the `name=value` of the session cookie.
async fn sign_in(app: &TestApp) -> String {
    let (status, cookie) = post_sign_in(app, &app.address, ADMIN_TOKEN).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = cookie.expect("a session cookie");
    cookie.split(';').next().expect("name=value").to_owned()
}

async fn page(app: &TestApp, cookie: Option<&str>, path: &str) -> reqwest::Response {
    let mut request = plain_client().get(app.url(path));
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    request.send().await.expect("page")
}

/// The CSRF token of the first form on a page.
async fn csrf_of(app: &TestApp, cookie: &str, path: &str) -> String {
    let html = page(app, Some(cookie), path)
        .await
        .text()
        .await
        .expect("html");
    let at = html
        .find(r#"name="csrf" value=""#)
        .expect("a form with a CSRF token");
    html[at + r#"name="csrf" value=""#.len()..]
        .split('"')
        .next()
        .expect("token")
        .to_owned()
}

async fn post_button(
    app: &TestApp,
    cookie: &str,
    path: &str,
    origin: Option<&str>,
    csrf: &str,
) -> reqwest::Response {
    let mut request = plain_client()
        .post(app.url(path))
        .header(header::COOKIE, cookie)
        .form(&[("csrf", csrf)]);
    if let Some(origin) = origin {
        request = request.header(header::ORIGIN, origin);
    }
    request.send().await.expect("post")
}

#[tokio::test]
async fn every_page_wants_a_session_and_sign_in_hands_out_a_strict_cookie() {
    let app = spawn_app(manual_worker).await;
    for path in [
        "/admin",
        "/admin/",
        "/admin/ui/calls/c1",
        "/admin/ui/dead-letters",
        "/admin/ui/quarantine",
    ] {
        let r = page(&app, None, path).await;
        let location = r.headers().get(header::LOCATION).cloned();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(
            location.as_ref().and_then(|l| l.to_str().ok()),
            Some("/admin/signin"),
            "{path}"
        );
        let forged = page(&app, Some("callgate_session=00"), path).await;
        assert_eq!(
            forged.status(),
            StatusCode::SEE_OTHER,
            "{path} with a made-up session"
        );
    }

    assert_eq!(
        post_sign_in(&app, &app.address, "guess").await,
        (StatusCode::UNAUTHORIZED, None)
    );
    assert_eq!(
        post_sign_in(&app, "http://evil.example", ADMIN_TOKEN).await,
        (StatusCode::FORBIDDEN, None)
    );
    let (status, set_cookie) = post_sign_in(&app, &app.address, ADMIN_TOKEN).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let set_cookie = set_cookie.expect("cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(!set_cookie.contains(ADMIN_TOKEN), "never the token itself");
    assert!(
        !set_cookie.contains("Secure"),
        "served over plain HTTP: {set_cookie}"
    );
    let cookie = set_cookie.split(';').next().expect("name=value");
    for path in ["/admin/", "/admin/ui/dead-letters", "/admin/ui/quarantine"] {
        let r = page(&app, Some(cookie), path).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert!(
            r.headers()[header::CONTENT_TYPE]
                .to_str()
                .expect("type")
                .starts_with("text/html")
        );
    }

    // The cookie is not a key to the JSON API, and the bearer API works as before.
    let json = plain_client()
        .get(app.url("/admin/calls"))
        .header(header::COOKIE, cookie)
        .send()
        .await
        .expect("api");
    assert_eq!(json.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(call_ids(&app, "").await, Vec::<String>::new());
}

#[tokio::test]
async fn the_call_list_masks_numbers_and_a_calls_page_shows_them_whole() {
    let app = spawn_app(manual_worker).await;
    seed_calls(&*app.state.store).await;
    let cookie = sign_in(&app).await;

    let list = page(&app, Some(&cookie), "/admin/?site=shop-ua")
        .await
        .text()
        .await
        .expect("html");
    assert!(list.contains("+38098*****67"), "masked in the list");
    assert!(!list.contains("380981234567"), "never whole in the list");
    assert!(list.contains("/admin/ui/calls/c6") && !list.contains("/admin/ui/calls/c5"));

    let detail = page(&app, Some(&cookie), "/admin/ui/calls/c6")
        .await
        .text()
        .await
        .expect("html");
    assert!(detail.contains("+380981234567"), "whole on the call's page");

    assert_eq!(
        page(&app, Some(&cookie), "/admin/ui/calls/nope")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let bad = page(&app, Some(&cookie), "/admin/?result=great").await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(
        bad.text()
            .await
            .expect("html")
            .contains("result must be one of")
    );
}

#[tokio::test]
async fn replay_and_discard_want_the_sessions_csrf_token_and_this_sites_origin() {
    let app = spawn_app(manual_worker).await;
    let store = app.state.store.clone();
    let replayed = seed_dead_letter(&*store, "call-a", "400 Errors in the entity format").await;
    let discarded = seed_dead_letter(&*store, "call-b", "400 Errors in the entity format").await;
    let cookie = sign_in(&app).await;
    let csrf = csrf_of(&app, &cookie, "/admin/ui/dead-letters").await;
    let replay = format!("/admin/ui/dead-letters/{replayed}/replay");
    let discard = format!("/admin/ui/dead-letters/{discarded}/discard");

    // Refused: a wrong token, another site, no origin at all, a GET.
    let own = Some(app.address.as_str());
    for (origin, token) in [
        (own, "0".repeat(64)),
        (own, String::new()),
        (Some("http://evil.example"), csrf.clone()),
        (None, csrf.clone()),
    ] {
        let r = post_button(&app, &cookie, &replay, origin, &token).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{origin:?}");
    }
    assert_eq!(
        page(&app, Some(&cookie), &replay).await.status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        store.dead_letter_count().await.expect("count"),
        2,
        "nothing changed"
    );

    let r = post_button(&app, &cookie, &replay, own, &csrf).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = post_button(&app, &cookie, &discard, own, &csrf).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(store.dead_letter_count().await.expect("count"), 0);
    let queued: Vec<u64> = store
        .list_queue(10)
        .await
        .expect("queue")
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(
        queued,
        [replayed],
        "replayed back to the queue, discarded gone"
    );
    let notice = page(
        &app,
        Some(&cookie),
        "/admin/ui/dead-letters?done=discarded&id=2",
    )
    .await
    .text()
    .await
    .expect("html");
    assert!(notice.contains("was discarded"));

    // Signing out ends the session: its cookie no longer opens pages.
    let r = post_button(&app, &cookie, "/admin/signout", own, &csrf).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        page(&app, Some(&cookie), "/admin/").await.status(),
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn without_an_admin_token_the_page_is_not_configured() {
    let app = spawn_app(|s| {
        manual_worker(s);
        s.admin.token = "".into();
    })
    .await;
    for path in ["/admin/", "/admin/signin"] {
        assert_eq!(
            page(&app, None, path).await.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{path}"
        );
    }
}

async fn admin_get(app: &TestApp, path: &str) -> (StatusCode, Value) {
    let r = app
        .client
        .get(app.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request");
    let status = r.status();
    (status, r.json().await.expect("json body"))
}

fn steps(trail: &Value) -> Vec<&str> {
    trail["trail"]
        .as_array()
        .expect("trail")
        .iter()
        .map(|s| s["step"].as_str().expect("step"))
        .collect()
}

#[tokio::test]
async fn a_calls_trail_shows_its_plan_and_each_crm_action_with_the_crms_ids() {
    let crm = start_fake_crm().await;
    let app = spawn_app_with_crm(&crm, |s| {
        manual_worker(s);
        tracking(s);
    })
    .await;
    app.post_webhook(&after_call("trail-1", "0981234567", "ANSWERED", 1028))
        .await;
    app.run_worker_until_idle().await;

    let (status, body) = admin_get(&app, "/admin/calls/trail-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["calls"][0]["call_id"], "trail-1");
    let trail = body["trail"].as_array().expect("trail");
    assert_eq!(trail[0]["step"], "plan", "{body:#}");
    assert_eq!(trail[0]["event"], "end");
    assert!(
        trail[0]["scenarios"]
            .as_array()
            .expect("scenarios")
            .contains(&json!("S1")),
        "{body:#}"
    );
    let planned = trail[0]["actions"].as_array().expect("actions").clone();
    let done: Vec<&Value> = trail.iter().filter(|s| s["step"] == "action").collect();
    assert_eq!(
        done.iter()
            .map(|s| &s["action"])
            .cloned()
            .collect::<Vec<_>>(),
        planned,
        "each planned action, in order"
    );
    let customer = done
        .iter()
        .find(|s| s["action"] == "customer")
        .expect("customer action");
    let crm_customer = crm.customers()[0]["id"].clone();
    assert_eq!(customer["customer_id"], crm_customer, "the CRM's id");
    let order = done.iter().find(|s| s["action"] == "order").expect("order");
    assert_eq!(order["order_id"], crm.orders()[0]["id"]);

    let (status, _) = admin_get(&app, "/admin/calls/no-such-call").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_calls_trail_shows_its_retries_and_its_dead_letter() {
    let crm = start_fake_crm().await;
    let app = spawn_app_with_crm(&crm, |s| {
        manual_worker(s);
        tracking(s);
    })
    .await;
    // One 500 (retried), then the CRM refuses the customer for good (dead letter).
    crm.add_fault_rule(FaultRule::new(Fault::Status500).times(1));
    crm.add_fault_rule(FaultRule::new(Fault::ValidationError).on_path("/api/v5/customers/create"));
    app.post_webhook(&after_call("trail-2", "0981234567", "ANSWERED", 1028))
        .await;
    app.drain_queue(std::time::Duration::from_secs(10)).await;

    let (_, body) = admin_get(&app, "/admin/calls/trail-2").await;
    let kinds = steps(&body);
    // The 500 came while gathering the CRM's facts, before any plan.
    assert_eq!(kinds.first(), Some(&"retry"), "{body:#}");
    assert!(kinds.contains(&"plan"), "{body:#}");
    assert_eq!(kinds.last(), Some(&"dead_letter"), "{body:#}");
    let retry = body["trail"]
        .as_array()
        .expect("trail")
        .iter()
        .find(|s| s["step"] == "retry")
        .expect("retry");
    assert_eq!(retry["attempt"], 1);
    assert!(retry["delay_ms"].as_u64().is_some(), "{retry}");
    let dead = body["trail"]
        .as_array()
        .and_then(|t| t.last())
        .expect("last");
    assert!(
        dead["reason"]
            .as_str()
            .expect("reason")
            .contains("Errors in the entity format"),
        "{dead}"
    );
}

#[tokio::test]
async fn explain_says_which_rule_policy_owner_and_status_made_the_answer() {
    let app = spawn_app(manual_worker).await;
    add_alinas_customer(&app).await;

    let (status, x) = admin_get(&app, "/admin/lookup/explain?caller=0981234567").await;
    assert_eq!(status, StatusCode::OK, "{x}");
    assert_eq!(x["caller"], "+380981234567");
    assert_eq!(x["owner"], 27);
    assert_eq!(x["owner_source"], "crm", "asked the CRM on a miss");
    assert_eq!(x["reason"], "owner");
    assert_eq!(x["destination"], "shop_alina");
    assert_eq!(x["rule"], Value::Null);

    assert_eq!(app.set_user_status(27, "dinner").await.status(), 200);
    let (_, x) = admin_get(
        &app,
        "/admin/lookup/explain?caller=%2B380981234567&dst=0441234567",
    )
    .await;
    assert_eq!(x["owner_source"], "index", "{x}");
    assert_eq!(x["owner_state"]["status"], "dinner", "{x}");
    assert_eq!(x["reason"], "owner_unavailable", "{x}");
    assert_eq!(x["destination"], Value::Null);

    let (_, x) = admin_get(&app, "/admin/lookup/explain?caller=anonymous").await;
    assert_eq!(x["reason"], "not_a_number", "{x}");
    let (status, x) = admin_get(&app, "/admin/lookup/explain?caller=").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{x}");
    assert_eq!(x["field"], "caller");
}

/// The trail's steps of `call_id` once it has at least `at_least` (the lookup's decision
/// reaches the store from a background task).
async fn trail_of(app: &TestApp, call_id: &str, at_least: usize) -> Value {
    eventually(
        Duration::from_secs(5),
        "the call's trail is recorded",
        || async {
            let (status, body) = admin_get(app, &format!("/admin/calls/{call_id}")).await;
            (status == StatusCode::OK && body["trail"].as_array()?.len() >= at_least)
                .then_some(body)
        },
    )
    .await
}

/// A lookup with Ringostat's `call_id` (a JSON body with `uuid` and `step_forward`, as its
/// docs show) lands in that call's trail before the plan; one without lands in the trail of
/// the next call from that caller, once.
async fn the_lookup_that_routed_a_call_is_in_its_trail(app: TestApp) {
    add_alinas_customer(&app).await;
    let r = app
        .client
        .post(app.url("/ringostat/route"))
        .json(&json!({
            "call_id": "lt-1", "uuid": "0f3c-11", "step_forward": "webhookNumber%3A120",
            "caller": "0981234567", "dst": "380441112233",
        }))
        .send()
        .await
        .expect("route");
    assert_eq!(r.text().await.expect("body"), "shop_alina");

    let body = trail_of(&app, "lt-1", 1).await;
    let lookup = &body["trail"][0];
    assert_eq!(lookup["step"], "lookup", "{body:#}");
    assert_eq!(lookup["reason"], "owner");
    assert_eq!(lookup["destination"], "shop_alina");
    assert_eq!(lookup["manager_id"], 27);
    assert_eq!(lookup["owner"], 27);
    assert_eq!(lookup["owner_state"]["status"], "free", "{lookup}");
    assert_eq!(lookup["policy"], "owner_if_available");
    assert_eq!(lookup["rule"], Value::Null);
    assert!(
        !body["trail"].to_string().contains("981234567"),
        "no client number in a trail: {body}"
    );
    app.post_webhook(&after_call("lt-1", "0981234567", "ANSWERED", 1028))
        .await;
    app.run_worker_until_idle().await;
    let body = trail_of(&app, "lt-1", 2).await;
    assert_eq!(steps(&body)[..2], ["lookup", "plan"], "{body:#}");

    // No call id: kept under the caller until the call's event names the call.
    assert_eq!(app.set_user_status(27, "dinner").await.status(), 200);
    let r = app.get_route("caller=%2B380981234567&format=json").await;
    let answer: Value = r.json().await.expect("json");
    assert_eq!(answer["reason"], "owner_unavailable");
    let store = app.state.store.clone();
    let pending = keys::caller_lookup(&PhoneNumber::from_e164("+380981234567").expect("e164"));
    eventually(
        Duration::from_secs(5),
        "the decision is kept for its call",
        || async { store.get_raw(&pending).await.expect("get").map(|_| ()) },
    )
    .await;
    app.post_webhook(&after_call("lt-2", "0981234567", "NO ANSWER", -1))
        .await;
    app.run_worker_until_idle().await;
    let body = trail_of(&app, "lt-2", 2).await;
    assert_eq!(steps(&body)[..2], ["lookup", "plan"], "{body:#}");
    let lookup = &body["trail"][0];
    assert_eq!(lookup["reason"], "owner_unavailable", "{lookup}");
    assert_eq!(lookup["owner_state"]["status"], "dinner", "{lookup}");
    assert_eq!(lookup["destination"], Value::Null);
    assert_eq!(
        store.get_raw(&pending).await.expect("get"),
        None,
        "joined once"
    );

    app.post_webhook(&after_call("lt-3", "0981234567", "NO ANSWER", -1))
        .await;
    app.run_worker_until_idle().await;
    let body = trail_of(&app, "lt-3", 1).await;
    assert!(!steps(&body).contains(&"lookup"), "{body:#}");

    // The call's page shows it.
    let cookie = sign_in(&app).await;
    let html = page(&app, Some(&cookie), "/admin/ui/calls/lt-2")
        .await
        .text()
        .await
        .expect("html");
    assert!(html.contains("Lookup"), "{html}");
    assert!(html.contains("owner_unavailable") && html.contains("dinner at that moment"));
}

#[tokio::test]
async fn the_lookup_that_routed_a_call_is_in_its_trail_on_the_embedded_store() {
    the_lookup_that_routed_a_call_is_in_its_trail(spawn_app(manual_worker).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lookup_that_routed_a_call_is_in_its_trail_on_redis() {
    let redis = RedisKeys::new();
    let app = spawn_app(|s| {
        manual_worker(s);
        redis_store(s, &redis.url, &redis.prefix);
    })
    .await;
    the_lookup_that_routed_a_call_is_in_its_trail(app).await;
}

#[tokio::test]
async fn a_lookup_decision_with_no_call_and_no_number_is_not_kept() {
    let app = spawn_app(manual_worker).await;
    let r = app.get_route("caller=anonymous").await;
    assert_eq!(r.status(), StatusCode::OK);
    // A later lookup that is kept proves the recorder ran past the first one.
    app.get_route("caller=0981234567&call_id=after").await;
    trail_of(&app, "after", 1).await;
    assert!(
        app.state
            .store
            .scan_prefix("lookup:", 10)
            .await
            .expect("scan")
            .is_empty()
    );
}

#[tokio::test]
async fn the_call_log_page_charts_the_last_hours_lookup_latency() {
    let app = spawn_app(manual_worker).await;
    let cookie = sign_in(&app).await;
    let html = page(&app, Some(&cookie), "/admin/")
        .await
        .text()
        .await
        .expect("html");
    assert!(html.contains("No lookups in this hour."), "{html}");

    for _ in 0..3 {
        assert_eq!(app.get_route("caller=0981234567").await.status(), 200);
    }
    let html = page(&app, Some(&cookie), "/admin/")
        .await
        .text()
        .await
        .expect("html");
    assert!(html.contains("Lookup latency, last hour"), "{html}");
    assert!(html.contains("3 lookups · slowest p99"), "{html}");
    // p50 and p99 of each minute with lookups (two minutes if the clock turned meanwhile).
    let points = html.matches("<circle").count();
    assert!(points == 2 || points == 4, "{points} points: {html}");
}

/// Posts the sign-in form with `token` from this site with extra `headers`; returns the
/// status, the `Set-Cookie` and the body.
async fn sign_in_with(
    app: &TestApp,
    token: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Option<String>, String) {
    let mut request = plain_client()
        .post(app.url("/admin/signin"))
        .header(header::ORIGIN, &app.address)
        .form(&[("token", token)]);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let r = request.send().await.expect("sign in");
    let cookie = r
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let retry_after = r.headers().get(header::RETRY_AFTER).cloned();
    let status = r.status();
    let body = r.text().await.expect("body");
    if status == StatusCode::TOO_MANY_REQUESTS {
        let seconds: u64 = retry_after
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .expect("a 429 says when to come back");
        assert!(seconds > 0 && seconds <= 15 * 60, "{seconds}");
    }
    (status, cookie, body)
}

#[tokio::test]
async fn the_session_cookie_is_secure_when_the_page_is_served_over_https() {
    let forwarded_https: [&[(&str, &str)]; 2] = [
        &[("x-forwarded-proto", "https")],
        &[("forwarded", "for=203.0.113.9;proto=https")],
    ];
    // Behind a trusted proxy that says the request came over HTTPS.
    let app = spawn_app(|s| {
        manual_worker(s);
        s.server.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
    })
    .await;
    for headers in forwarded_https {
        let (status, cookie, _) = sign_in_with(&app, ADMIN_TOKEN, headers).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let cookie = cookie.expect("cookie");
        assert!(cookie.ends_with("; Secure"), "{headers:?}: {cookie}");
    }
    let (_, cookie, _) = sign_in_with(&app, ADMIN_TOKEN, &[("x-forwarded-proto", "http")]).await;
    assert!(!cookie.expect("cookie").contains("Secure"));

    // From a peer that is not a trusted proxy the header means nothing.
    let app = spawn_app(manual_worker).await;
    let (_, cookie, _) = sign_in_with(&app, ADMIN_TOKEN, forwarded_https[0]).await;
    assert!(!cookie.expect("cookie").contains("Secure"));

    // `server.public_url` on HTTPS: always.
    let app = spawn_app(|s| {
        manual_worker(s);
        s.server.public_url = "https://callgate.shop.example".to_owned();
    })
    .await;
    let (_, cookie, _) = sign_in_with(&app, ADMIN_TOKEN, &[]).await;
    assert!(cookie.expect("cookie").ends_with("; Secure"));
}

#[tokio::test]
async fn failed_sign_ins_are_limited_per_source() {
    let app = spawn_app(|s| {
        manual_worker(s);
        s.server.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
    })
    .await;
    let guesser = [("x-forwarded-for", "203.0.113.9")];
    for attempt in 0..5 {
        let (status, _, _) = sign_in_with(&app, "guess", &guesser).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    let (status, _, body) = sign_in_with(&app, "guess", &guesser).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(body.contains("Too many failed sign-ins"), "{body}");
    // Once limited, even the right token is not checked: guessing on tells nothing.
    let (status, cookie, _) = sign_in_with(&app, ADMIN_TOKEN, &guesser).await;
    assert_eq!((status, cookie), (StatusCode::TOO_MANY_REQUESTS, None));
    // Another source is not limited by this one's failures.
    let (status, cookie, _) =
        sign_in_with(&app, ADMIN_TOKEN, &[("x-forwarded-for", "198.51.100.7")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(cookie.is_some());
}

/// The page at `path`, once `ready` holds for its HTML (bounded).
async fn page_once(
    app: &TestApp,
    cookie: &str,
    path: &str,
    ready: impl Fn(&str) -> bool,
) -> String {
    eventually(Duration::from_secs(10), path, || async {
        let html = page(app, Some(cookie), path).await.text().await.ok()?;
        ready(&html).then_some(html)
    })
    .await
}

#[tokio::test]
async fn the_mirror_page_shows_the_sync_state_and_the_last_error() {
    // Off: the page says so.
    let app = spawn_app(manual_worker).await;
    let cookie = sign_in(&app).await;
    let html = page_once(&app, &cookie, "/admin/ui/mirror", |_| true).await;
    assert!(html.contains("The owner mirror is off"), "{html}");
    assert!(
        html.contains(r#"href="/admin/ui/mirror""#),
        "linked from the layout"
    );

    // On, with a CRM whose customer list fails until it does not.
    let crm = start_fake_crm().await;
    crm.add_fault_rule(
        FaultRule::new(Fault::Status500)
            .on_path("/api/v5/customers")
            .times(1),
    );
    let app = spawn_app_with_crm(&crm, |s| {
        manual_worker(s);
        mirror_on(s);
    })
    .await;
    let cookie = sign_in(&app).await;
    let html = page_once(&app, &cookie, "/admin/ui/mirror", |html| {
        html.contains("following the CRM")
    })
    .await;
    assert!(html.contains("Last error"), "{html}");
    assert!(html.contains("step <code>import</code>"), "{html}");
    assert!(html.contains("0 customers · 0 numbers"), "{html}");
    assert!(
        html.contains("<dt>First import</dt><dd>done</dd>"),
        "{html}"
    );
}
