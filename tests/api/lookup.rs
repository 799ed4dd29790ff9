//! The pre-call lookup, end to end (SPEC §3).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use callgate::{config::LookupFormat, domain::lookup::LookupPolicy};

use crate::helpers::{spawn_app, spawn_app_with_crm, start_fake_crm};

const TELEPHONY_MANAGER: &str = "GET /api/v5/telephony/manager";

#[tokio::test]
async fn a_number_stored_nationally_is_found_when_asked_internationally_in_every_format() {
    // Arrange: Alina's customer was typed in by hand as 0981234567.
    let crm = start_fake_crm().await;
    crm.add_customer(&["0981234567"], Some(27));
    let app = spawn_app_with_crm(&crm, |_| {}).await;

    // Act + Assert: text (the default format).
    let r = app.get_route("caller=380981234567").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "shop_alina");

    // json
    let r = app.get_route("caller=380981234567&format=json").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"destination": "shop_alina", "manager_id": 27, "reason": "owner"})
    );

    // form body
    let r = app
        .client
        .post(app.url("/ringostat/route"))
        .form(&[("caller_number", "+38 (098) 123-45-67"), ("format", "json")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["destination"],
        "shop_alina"
    );

    // JSON body
    let r = app
        .client
        .post(app.url("/ringostat/route?format=text"))
        .json(&json!({"caller": 380981234567_u64, "dst": "380441112233"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "shop_alina");

    // JSON-RPC 2.0 echoes the id and answers in kind.
    let r = app
        .client
        .post(app.url("/ringostat/route"))
        .json(&json!({"jsonrpc": "2.0", "id": "abc-1", "method": "route", "params": {"userfield": "380981234567"}}))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["jsonrpc"], "2.0");
    assert_eq!(body["id"], "abc-1");
    assert_eq!(body["result"]["destination"], "shop_alina");
    assert_eq!(body["result"]["manager_id"], 27);

    // Only the first lookup asked the CRM: the index is warm afterwards.
    assert_eq!(crm.request_count(TELEPHONY_MANAGER), 1);
}

#[tokio::test]
async fn the_response_key_is_configurable() {
    let crm = start_fake_crm().await;
    crm.add_customer(&["0981234567"], Some(27));
    let app = spawn_app_with_crm(&crm, |s| {
        s.lookup.response_key = "forward".to_owned();
        s.lookup.format = LookupFormat::Json;
    })
    .await;
    let body: Value = app
        .get_route("caller=0981234567")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["forward"], "shop_alina");
    assert!(body.get("destination").is_none());
}

#[tokio::test]
async fn a_manager_at_dinner_gets_no_routed_call_from_the_next_lookup_on() {
    let crm = start_fake_crm().await;
    crm.add_customer(&["0981234567"], Some(27));
    let app = spawn_app_with_crm(&crm, |_| {}).await;
    assert_eq!(
        app.get_route("caller=380981234567")
            .await
            .text()
            .await
            .unwrap(),
        "shop_alina"
    );

    let r = app.set_user_status(27, "dinner").await;
    assert_eq!(r.status(), 200);

    let r = app.get_route("caller=380981234567&format=json").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"destination": null, "manager_id": null, "reason": "owner_unavailable"})
    );
    // Text format: an empty body means "nobody", so the forwarding scheme goes on.
    assert_eq!(
        app.get_route("caller=380981234567")
            .await
            .text()
            .await
            .unwrap(),
        ""
    );

    // Back from dinner.
    app.set_user_status(27, "free").await;
    assert_eq!(
        app.get_route("caller=380981234567")
            .await
            .text()
            .await
            .unwrap(),
        "shop_alina"
    );
}

#[tokio::test]
async fn the_owner_policy_routes_to_the_owner_whatever_the_status() {
    let crm = start_fake_crm().await;
    crm.add_customer(&["0981234567"], Some(27));
    let app = spawn_app_with_crm(&crm, |s| s.lookup.policy = LookupPolicy::Owner).await;
    app.set_user_status(27, "dinner").await;
    assert_eq!(
        app.get_route("caller=380981234567")
            .await
            .text()
            .await
            .unwrap(),
        "shop_alina"
    );
}

#[tokio::test]
async fn ignore_owner_never_routes_by_owner() {
    let crm = start_fake_crm().await;
    crm.add_customer(&["0981234567"], Some(27));
    let app = spawn_app_with_crm(&crm, |s| s.lookup.policy = LookupPolicy::IgnoreOwner).await;
    let body: Value = app
        .get_route("caller=380981234567&format=json")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["reason"], "ignore_owner");
    assert_eq!(
        crm.request_count(TELEPHONY_MANAGER),
        0,
        "no CRM request at all"
    );
}

#[tokio::test]
async fn with_the_crm_hung_every_lookup_answers_nobody_within_the_deadline() {
    let crm = start_fake_crm().await;
    crm.set_fault(callgate::testing::fake_retailcrm::Fault::Hang);
    let app = spawn_app_with_crm(&crm, |s| s.lookup.deadline_ms = 200).await;
    let deadline = Duration::from_millis(200);

    let lookups = (0..20).map(|i| {
        let app = &app;
        async move {
            let started = Instant::now();
            let r = app
                .get_route(&format!("caller=09812345{i:02}&format=json"))
                .await;
            let elapsed = started.elapsed();
            (r.status(), r.json::<Value>().await.unwrap(), elapsed)
        }
    });
    let answers = futures::future::join_all(lookups).await;

    for (status, body, elapsed) in answers {
        assert_eq!(status, 200);
        assert_eq!(body["destination"], Value::Null);
        assert_eq!(body["reason"], "timeout");
        // "Within the deadline plus a few milliseconds"; the margin covers a loaded CI box.
        // load-tests/ measures the real figure.
        assert!(
            elapsed < deadline + Duration::from_millis(150),
            "answered after {elapsed:?}"
        );
        assert!(
            elapsed >= deadline - callgate::lookup::DEADLINE_MARGIN,
            "gave up early after {elapsed:?}"
        );
    }
    crm.clear_faults();
}

#[tokio::test]
async fn a_burst_of_lookups_for_one_unknown_number_makes_one_crm_request() {
    let crm = start_fake_crm().await;
    // Slow enough that all 100 lookups wait on the same request.
    crm.set_fault(callgate::testing::fake_retailcrm::Fault::Delay(
        Duration::from_millis(100),
    ));
    let app = spawn_app_with_crm(&crm, |_| {}).await;

    let lookups = (0..100).map(|_| app.get_route("caller=0501234567&format=json"));
    let answers = futures::future::join_all(lookups).await;

    for r in answers {
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["reason"], "none");
    }
    assert_eq!(crm.request_count(TELEPHONY_MANAGER), 1);
    // The negative answer is indexed: the next lookup asks nobody.
    app.get_route("caller=0501234567").await;
    assert_eq!(crm.request_count(TELEPHONY_MANAGER), 1);
}

#[tokio::test]
async fn a_caller_that_is_not_a_number_or_missing_is_nobody_and_an_unknown_format_is_the_default() {
    let crm = start_fake_crm().await;
    let app = spawn_app_with_crm(&crm, |_| {}).await;
    for caller in ["anonymous", "sip:alice", "12"] {
        let body: Value = app
            .get_route(&format!("caller={caller}&format=json"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(body["reason"], "not_a_number", "{caller}");
    }
    // SPEC §3: the lookup always answers 200 (tests/api/hardening.rs has every layout).
    let r = app.get_route("dst=380441112233&format=json").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["reason"], "not_a_number");
    let r = app.get_route("caller=anonymous&format=xml").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "");
    assert_eq!(crm.request_count(TELEPHONY_MANAGER), 0);
}

#[tokio::test]
async fn user_status_rejects_unknown_statuses_by_name() {
    let app = spawn_app(|_| {}).await;
    let r = app.set_user_status(27, "vacation").await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["field"], "status");
    assert!(body["detail"].as_str().unwrap().contains("vacation"));
}

#[tokio::test]
async fn health_ready_and_metrics_answer() {
    let app = spawn_app(|_| {}).await;
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    app.get_route("caller=0981234567").await;
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("callgate_lookup_latency_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains("callgate_lookup_outcomes_total{reason=\"none\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn the_sandbox_crm_answers_lookups_for_customers_added_through_the_admin_api() {
    let app = spawn_app(|_| {}).await;
    let r = app
        .client
        .post(app.url("/admin/sandbox/customers"))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .json(&json!({"phones": ["098 123 45 67"], "manager_id": 28}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    assert_eq!(
        app.get_route("caller=%2B380981234567")
            .await
            .text()
            .await
            .unwrap(),
        "shop_tatiana"
    );
}

#[tokio::test]
async fn a_source_over_its_rate_limit_gets_429_and_a_foreign_address_403() {
    let app = spawn_app(|s| s.server.per_ip_rps = 2).await;
    let mut limited = None;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = app.get_route("caller=0981234567").await;
        statuses.push(r.status().as_u16());
        if r.status() == 429 && limited.is_none() {
            limited = Some(r);
        }
    }
    assert_eq!(&statuses[..2], &[200, 200], "{statuses:?}");
    let r = limited.unwrap_or_else(|| panic!("no 429 among {statuses:?}"));
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    // Health endpoints are not rate limited.
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let app = spawn_app(|s| {
        s.server.ip_allowlist = vec!["10.1.2.3".parse().expect("an IP")];
    })
    .await;
    let r = app.get_route("caller=0981234567").await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "forbidden");
}

#[tokio::test]
async fn a_lookup_body_over_the_limit_is_refused_on_the_fast_path_too() {
    let app = spawn_app(|_| {}).await;
    let big = "x".repeat(70 * 1024);
    let r = app
        .client
        .post(app.url("/ringostat/route"))
        .form(&[("caller", "0981234567"), ("padding", big.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "too_large");
}

/// One customer per format a human types numbers in, each with its own number and owner.
pub const SIX_FORMATS: [(&str, &str); 6] = [
    ("0981234567", "+380981234567"),
    ("+380981234568", "380981234568"),
    ("380981234569", "0981234569"),
    ("(098) 123-45-60", "380981234560"),
    ("+38 (098) 123 45 61", "0981234561"),
    ("098-123-45-62", "+38 098 123 45 62"),
];

#[tokio::test]
async fn a_customer_stored_in_any_of_six_formats_is_routed_by_the_crm_fetch() {
    // Arrange: the fake matches the query's digits as a substring of the stored digits, the
    // strictest plausible rule; the first three belong to Alina, the others to Tatiana.
    let crm = start_fake_crm().await;
    for (i, (stored, _)) in SIX_FORMATS.iter().enumerate() {
        crm.add_customer(&[stored], Some(if i < 3 { 27 } else { 28 }));
    }
    let app = spawn_app_with_crm(&crm, |_| {}).await;

    for (i, (stored, asked)) in SIX_FORMATS.iter().enumerate() {
        // Act
        let r = app.get_route(&format!("caller={}", urlencode(asked))).await;

        // Assert
        let want = if i < 3 { "shop_alina" } else { "shop_tatiana" };
        assert_eq!(
            r.text().await.unwrap(),
            want,
            "stored as {stored:?}, asked as {asked:?}"
        );
    }
    // The fetch sent the national significant number, never the international digits.
    for r in crm.requests() {
        if let Some((_, phone)) = r.query.iter().find(|(k, _)| k == "phone") {
            assert_eq!(phone.len(), 9, "{phone}");
        }
    }
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("v", s)])
        .expect("encodes")
        .trim_start_matches("v=")
        .to_owned()
}
