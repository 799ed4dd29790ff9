//! No input panics anything, and the lookup answers every caller value (SPEC §3, §9; issue 14
//! items 1 and 2). The panic probe (`x-callgate-test-panic`, `GET /__test/panic`) exists in
//! test builds only (feature `panic-probe`).

use callgate::{domain::call_log::CallLogFilter, http::panic::PROBE_HEADER};
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

use crate::{
    calls::{after_call, tracking},
    helpers::{
        TestApp, WEBHOOK_TOKEN, manual_worker, spawn_app, spawn_app_with_crm, start_fake_crm,
    },
};

const TELEPHONY_MANAGER: &str = "GET /api/v5/telephony/manager";

/// Callers that are not numbers, in several scripts and shapes.
const NOT_NUMBERS: &[&str] = &[
    "Скрытый номер",
    "anonymous",
    "shop_alina",
    "sip:alice@pbx.example",
    "Ünbekannt",
    "未知号码",
    "رقم مخفي",
    "📞📞📞",
    "Ｓｋｒｙｔｙｊ",
    "\u{200b}\u{feff}",
    "098\u{301}123",
];

/// The app of the lookup tests: a fake CRM (to count how often it is asked) and either the
/// fast path (no public guard) or the router (a per-source limit puts every request through it).
async fn lookup_app(through_router: bool) -> TestApp {
    let crm = start_fake_crm().await;
    crm.add_customer(&["0981234567"], Some(27));
    spawn_app_with_crm(&crm, move |s| {
        if through_router {
            s.server.per_ip_rps = 100_000;
        }
    })
    .await
}

/// Which way the lookup went, for assertion messages.
fn path_name(through_router: bool) -> &'static str {
    if through_router {
        "router"
    } else {
        "fast path"
    }
}

/// Posts `body` as JSON to the lookup.
async fn post_json(app: &TestApp, query: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/ringostat/route?{query}")))
        .json(body)
        .send()
        .await
        .expect("lookup request")
}

/// Asserts a 200 JSON "nobody" answer with `reason`, in the plain JSON or the JSON-RPC shape.
async fn assert_nobody(r: reqwest::Response, reason: &str, what: &str) -> Value {
    assert_eq!(r.status(), 200, "{what}");
    let body: Value = r.json().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    let object = body.get("result").unwrap_or(&body);
    assert_eq!(object["destination"], Value::Null, "{what}: {body}");
    assert_eq!(object["manager_id"], Value::Null, "{what}: {body}");
    assert_eq!(object["reason"], reason, "{what}: {body}");
    body
}

#[tokio::test]
async fn every_caller_value_in_every_layout_is_200_nobody_not_a_number() {
    for through_router in [false, true] {
        let app = lookup_app(through_router).await;
        let path = path_name(through_router);

        // Query string and form body: text values, and no caller at all.
        let r = app.get_route("format=json").await;
        assert_nobody(r, "not_a_number", &format!("{path}: no caller")).await;
        let r = app.get_route("dst=380441112233&format=json").await;
        assert_nobody(r, "not_a_number", &format!("{path}: dst only")).await;
        for caller in NOT_NUMBERS.iter().copied().chain(["", "   "]) {
            let what = format!("{path}: query caller {caller:?}");
            let r = app
                .client
                .get(app.url("/ringostat/route"))
                .query(&[("caller", caller), ("format", "json")])
                .send()
                .await
                .unwrap();
            assert_nobody(r, "not_a_number", &what).await;
            let what = format!("{path}: form caller_number {caller:?}");
            let r = app
                .client
                .post(app.url("/ringostat/route"))
                .form(&[("caller_number", caller), ("format", "json")])
                .send()
                .await
                .unwrap();
            assert_nobody(r, "not_a_number", &what).await;
            // The text format: 200 with an empty body.
            let r = app
                .client
                .get(app.url("/ringostat/route"))
                .query(&[("caller", caller)])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{what} (text)");
            assert_eq!(r.text().await.unwrap(), "", "{what} (text)");
        }

        // JSON and JSON-RPC: any JSON value.
        let values = NOT_NUMBERS.iter().map(|s| json!(s)).chain([
            json!(""),
            Value::Null,
            json!(42),
            json!(-1),
            json!(1.5),
            json!(1e300),
            json!(true),
            json!([]),
            json!(["0981234567"]),
            json!({}),
            json!({"number": "0981234567"}),
        ]);
        for value in values {
            let what = format!("{path}: JSON caller {value}");
            let r = post_json(&app, "format=json", &json!({"caller": value})).await;
            assert_nobody(r, "not_a_number", &what).await;
            let what = format!("{path}: JSON-RPC userfield {value}");
            let call = json!({"jsonrpc": "2.0", "id": 9, "method": "route", "params": {"userfield": value}});
            let body = assert_nobody(post_json(&app, "", &call).await, "not_a_number", &what).await;
            assert_eq!(body["id"], 9, "{what}");
        }
        // A JSON body without any caller field, and JSON-RPC without params.
        let r = post_json(&app, "format=json", &json!({"dst": "380441112233"})).await;
        assert_nobody(r, "not_a_number", &format!("{path}: JSON without caller")).await;
        let call = json!({"jsonrpc": "2.0", "id": "x", "method": "route"});
        let body = assert_nobody(post_json(&app, "", &call).await, "not_a_number", path).await;
        assert_eq!(body["id"], "x");

        // None of these asked the CRM.
        assert_eq!(app.fake().request_count(TELEPHONY_MANAGER), 0, "{path}");
        // And the lookup still works for a number.
        let r = app.get_route("caller=0981234567").await;
        assert_eq!(r.text().await.unwrap(), "shop_alina", "{path}");
    }
}

#[tokio::test]
async fn unreadable_bodies_and_unknown_formats_are_200_nobody() {
    for through_router in [false, true] {
        let app = lookup_app(through_router).await;
        let path = path_name(through_router);
        let cases: &[(&str, &[u8])] = &[
            ("application/json", b"{nope"),
            ("application/json", b"\xff\xfe\x00garbage"),
            ("application/json", b"[1, 2, 3]"),
            ("application/json", b"\"caller\""),
            ("application/json", b"null"),
            ("text/plain", b"{\"caller\": "),
            ("application/x-www-form-urlencoded", b"caller=%ZZ%&&==\xff"),
        ];
        for (content_type, body) in cases {
            let what = format!("{path}: {content_type} {:?}", String::from_utf8_lossy(body));
            let r = app
                .client
                .post(app.url("/ringostat/route?format=json"))
                .header(CONTENT_TYPE, *content_type)
                .body(body.to_vec())
                .send()
                .await
                .unwrap();
            assert_nobody(r, "not_a_number", &what).await;
        }
        // JSON-RPC whose params are not an object: nobody, with the id echoed.
        let call = json!({"jsonrpc": "2.0", "id": 5, "method": "route", "params": ["0981234567"]});
        let body = assert_nobody(post_json(&app, "", &call).await, "not_a_number", path).await;
        assert_eq!(body["id"], 5, "{path}");
        // An unknown format is the configured one (text), not an error.
        let r = app.get_route("caller=anonymous&format=xml").await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.text().await.unwrap(), "", "{path}");
        let r = app.get_route("caller=0981234567&format=xml").await;
        assert_eq!(r.text().await.unwrap(), "shop_alina", "{path}");
    }
}

#[tokio::test]
async fn a_panicking_lookup_answers_200_nobody_in_the_requested_format() {
    for through_router in [false, true] {
        let app = lookup_app(through_router).await;
        let path = path_name(through_router);
        let r = app
            .client
            .get(app.url("/ringostat/route?caller=0981234567&format=json"))
            .header(PROBE_HEADER, "1")
            .send()
            .await
            .unwrap();
        assert_nobody(r, "unavailable", path).await;
        let call = json!({"jsonrpc": "2.0", "id": 3, "method": "route", "params": {"caller": "0981234567"}});
        let r = app
            .client
            .post(app.url("/ringostat/route"))
            .header(PROBE_HEADER, "1")
            .json(&call)
            .send()
            .await
            .unwrap();
        let body = assert_nobody(r, "unavailable", path).await;
        assert_eq!(body["id"], 3, "{path}");
        let r = app
            .client
            .get(app.url("/ringostat/route?caller=0981234567"))
            .header(PROBE_HEADER, "1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.text().await.unwrap(), "", "{path}");
        // The connection and the server survived: the same number routes without the probe.
        let r = app.get_route("caller=0981234567").await;
        assert_eq!(r.text().await.unwrap(), "shop_alina", "{path}");
    }
}

#[tokio::test]
async fn a_panicking_webhook_answers_json_500_and_its_raw_payload_is_quarantined() {
    let app = spawn_app(|_| {}).await;
    let webhook = format!("/ringostat/webhook?token={WEBHOOK_TOKEN}&event=end");

    // JSON body.
    let r = app
        .client
        .post(app.url(&webhook))
        .header(PROBE_HEADER, "1")
        .json(&after_call("panic-1", "0981234567", "ANSWERED", 1027))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "internal");
    // Form body.
    let r = app
        .client
        .post(app.url(&webhook))
        .header(PROBE_HEADER, "1")
        .form(&[("uniqueid", "panic-2"), ("caller", "Скрытый номер")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "internal");

    let quarantine = app.state.store.list_quarantine(10).await.unwrap();
    assert_eq!(quarantine.len(), 2, "{quarantine:#?}");
    let json = quarantine
        .iter()
        .find(|q| q.raw.contains("panic-1"))
        .expect("the JSON payload is kept");
    assert!(json.reason.contains("panicked"), "{json:?}");
    assert!(json.raw.contains("\"caller\":\"0981234567\""), "{json:?}");
    assert_eq!(json.content_type.as_deref(), Some("application/json"));
    let form = quarantine
        .iter()
        .find(|q| q.raw.contains("panic-2"))
        .expect("the form payload is kept");
    assert!(form.raw.contains("event=end"), "{form:?}");
    assert!(
        quarantine.iter().all(|q| !q.raw.contains(WEBHOOK_TOKEN)),
        "the secret is not kept"
    );
    assert_eq!(app.state.store.queue_depth().await.unwrap(), 0);

    // The same event without the probe is accepted.
    let r = app
        .post_webhook(&after_call("panic-1", "0981234567", "ANSWERED", 1027))
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn any_other_panicking_route_answers_json_500_and_the_server_lives_on() {
    let app = spawn_app(|_| {}).await;
    let r = app
        .client
        .get(app.url("/__test/panic"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(
        r.headers()[CONTENT_TYPE].to_str().unwrap(),
        "application/json"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "internal", "{body}");
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_webhook_whose_caller_is_not_a_number_is_accepted_logged_and_creates_no_customer() {
    let crm = start_fake_crm().await;
    let app = spawn_app_with_crm(&crm, |s| {
        manual_worker(s);
        tracking(s);
    })
    .await;
    for (i, caller) in NOT_NUMBERS.iter().enumerate() {
        let id = format!("hidden-{i}");
        // The four layouts of SPEC §4: JSON at the root, JSON nested under
        // `additional_call_data`, a form body, the query string.
        let event = after_call(&id, caller, "ANSWERED", 1027);
        let r = match i % 4 {
            0 => app.post_webhook(&event).await,
            1 => {
                app.post_webhook(&json!({"additional_call_data": event}))
                    .await
            }
            2 => {
                let fields: Vec<(String, String)> = event
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().map_or(v.to_string(), str::to_owned)))
                    .collect();
                app.client
                    .post(app.url(&format!("/ringostat/webhook?token={WEBHOOK_TOKEN}")))
                    .form(&fields)
                    .send()
                    .await
                    .unwrap()
            }
            _ => {
                let mut fields: Vec<(String, String)> = event
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().map_or(v.to_string(), str::to_owned)))
                    .collect();
                fields.push(("token".to_owned(), WEBHOOK_TOKEN.to_owned()));
                app.client
                    .get(app.url("/ringostat/webhook"))
                    .query(&fields)
                    .send()
                    .await
                    .unwrap()
            }
        };
        assert_eq!(r.status(), 200, "{caller:?}: {:?}", r.text().await);
    }
    app.run_worker_until_idle().await;

    assert_eq!(app.state.store.queue_depth().await.unwrap(), 0);
    assert!(
        app.state
            .store
            .list_quarantine(10)
            .await
            .unwrap()
            .is_empty()
    );
    let customers = crm.customers();
    assert!(customers.is_empty(), "{customers:#?}");
    let log = app
        .state
        .store
        .query_call_log(&CallLogFilter::default(), 100)
        .await
        .unwrap();
    for (i, caller) in NOT_NUMBERS.iter().enumerate() {
        let entry = log
            .iter()
            .find(|e| e.call_id == format!("hidden-{i}"))
            .unwrap_or_else(|| panic!("{caller:?} is in the call log: {log:#?}"));
        assert_eq!(entry.client_phone, None, "{caller:?}");
        assert_eq!(entry.client_raw.as_deref(), Some(*caller), "{caller:?}");
    }
}
