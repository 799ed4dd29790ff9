//! Call events end to end: webhook → durable queue → worker → a strict fake retailCRM over
//! real HTTP (SPEC §4, §6). Each scenario's webhook sequence must leave exactly the expected
//! customers, orders, tasks and call records.

use std::time::Duration;

use callgate::testing::fake_retailcrm::{Fault, FaultRule};
use serde_json::{Value, json};

use callgate::config::{CreateOnIncoming, Settings};

use crate::helpers::{
    TestApp, WEBHOOK_TOKEN, fast_retries, manual_worker, respawn_app_with_crm, site,
    spawn_app_with_crm, start_fake_crm,
};

/// An after-call webhook in the call-log naming, as Ringostat sends it.
pub(crate) fn after_call(id: &str, caller: &str, disposition: &str, staff: i64) -> Value {
    json!({
        "uniqueid": id,
        "calldate": "2024-07-31 14:59:35",
        "caller": caller,
        "dst": "380441112233",
        "call_type": "in",
        "disposition": disposition,
        "billsec": if disposition == "ANSWERED" { 61 } else { 0 },
        "waittime": "12",
        "recording": format!("https://app.ringostat.com/recordings/{id}.ogg?token=x"),
        "has_recording": if disposition == "ANSWERED" || disposition == "VOICEMAIL" { "1" } else { "0" },
        "employee_number": staff,
        "utm_source": "google",
        "utm_medium": "cpc",
        "utm_campaign": "summer",
        "client_id": "1169999034.1555555510",
    })
}

/// The shop's site with its one tracking number.
pub(crate) fn tracking(settings: &mut Settings) {
    settings.sites.push(site("shop1", &["+380441112233"]));
}

async fn app() -> TestApp {
    let crm = start_fake_crm().await;
    spawn_app_with_crm(&crm, |s| {
        manual_worker(s);
        tracking(s);
    })
    .await
}

fn tasks_of(app: &TestApp, performer: u64) -> Vec<Value> {
    app.fake()
        .tasks()
        .into_iter()
        .filter(|t| t["performer"] == performer)
        .collect()
}

#[tokio::test]
async fn s1_a_new_caller_answered_by_tatiana_becomes_customer_order_closed_task_and_call() {
    let app = app().await;

    let r = app
        .post_webhook(&after_call(
            "ua1_-1718037213.2974122",
            "0981234567",
            "ANSWERED",
            1028,
        ))
        .await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    app.run_worker_until_idle().await;

    let crm = app.fake();
    let customers = crm.customers();
    assert_eq!(customers.len(), 1, "{customers:#?}");
    assert_eq!(customers[0]["phones"][0]["number"], "+380981234567");
    assert_eq!(customers[0]["managerId"], 28);
    let orders = crm.orders();
    assert_eq!(orders.len(), 1, "{orders:#?}");
    assert_eq!(orders[0]["status"], "new");
    assert_eq!(orders[0]["orderMethod"], "phone");
    assert_eq!(orders[0]["managerId"], 28);
    let tasks = crm.tasks();
    assert_eq!(tasks.len(), 1, "{tasks:#?}");
    assert_eq!(tasks[0]["performer"], 28);
    assert_eq!(tasks[0]["complete"], true);
    assert_eq!(tasks[0]["order"]["id"], orders[0]["id"]);
    assert!(
        tasks[0]["commentary"]
            .as_str()
            .unwrap()
            .contains("recordings/ua1_-1718037213.2974122.ogg")
    );
    let calls = crm.calls();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0]["externalId"], "ua1_-1718037213.2974122");
    assert_eq!(calls[0]["result"], "answered");
    assert_eq!(calls[0]["type"], "in");
    assert_eq!(calls[0]["duration"], 73);
    assert_eq!(calls[0]["durationWaiting"], 12);
    // The new customer is in the owner index at once: the next lookup asks no CRM.
    let lookups_before = crm.request_count("GET /api/v5/telephony/manager");
    let r = app.get_route("caller=380981234567").await;
    assert_eq!(r.text().await.unwrap(), "shop_tatiana");
    assert_eq!(
        crm.request_count("GET /api/v5/telephony/manager"),
        lookups_before
    );
}

#[tokio::test]
async fn s2_alinas_customer_with_an_open_order_gets_only_a_closed_task_on_that_order() {
    let app = app().await;
    let crm = app.fake();
    let customer = crm.add_customer(&["098 123 45 67"], Some(27));
    let order = crm.add_order(customer, "new", Some(27));

    app.post_webhook(&after_call("c2", "380981234567", "ANSWERED", 1027))
        .await;
    app.run_worker_until_idle().await;

    assert_eq!(crm.customers().len(), 1, "no duplicate for 098… vs 38098…");
    assert_eq!(crm.orders().len(), 1);
    let tasks = crm.tasks();
    assert_eq!(tasks.len(), 1, "{tasks:#?}");
    assert_eq!(tasks[0]["performer"], 27);
    assert_eq!(tasks[0]["complete"], true);
    assert_eq!(tasks[0]["order"]["id"], order);
    assert_eq!(crm.calls().len(), 1);
}

#[tokio::test]
async fn s3_a_customer_whose_orders_are_all_closed_gets_a_new_order_for_their_manager() {
    let app = app().await;
    let crm = app.fake();
    let customer = crm.add_customer(&["+380981234567"], Some(27));
    crm.add_order(customer, "complete", Some(27));

    // Tatiana answers; the new order still belongs to Alina, who worked with the client.
    app.post_webhook(&after_call("c3", "0981234567", "ANSWERED", 1028))
        .await;
    app.run_worker_until_idle().await;

    let orders = crm.orders();
    assert_eq!(orders.len(), 2, "{orders:#?}");
    let new_order = orders
        .iter()
        .find(|o| o["status"] == "new")
        .expect("a new order");
    assert_eq!(new_order["managerId"], 27);
    assert_eq!(
        tasks_of(&app, 28).len(),
        1,
        "closed task for whoever answered"
    );
    assert_eq!(tasks_of(&app, 28)[0]["complete"], true);
}

#[tokio::test]
async fn s5_and_s14_repeated_missed_calls_from_a_new_number_make_one_call_back_task() {
    let app = app().await;
    let crm = app.fake();

    app.post_webhook(&after_call("m1", "0671234567", "NO ANSWER", -1))
        .await;
    app.run_worker_until_idle().await;
    app.post_webhook(&after_call("m2", "0671234567", "NO ANSWER", -1))
        .await;
    app.run_worker_until_idle().await;

    let tasks = crm.tasks();
    assert_eq!(
        tasks.len(),
        1,
        "one call-back task per caller and window: {tasks:#?}"
    );
    assert_eq!(
        tasks[0]["performer"], 1,
        "the senior manager calls new numbers back"
    );
    assert_eq!(tasks[0]["complete"], false);
    assert!(
        tasks[0]["text"].as_str().unwrap().contains('2'),
        "{tasks:#?}"
    );
    assert!(
        crm.customers().is_empty(),
        "a missed call creates no customer"
    );
    assert_eq!(crm.calls().len(), 2);
    assert!(crm.calls().iter().all(|c| c["result"] == "no answer"));
}

#[tokio::test]
async fn s10_a_transferred_call_is_recorded_for_every_manager_who_talked() {
    let app = app().await;
    let crm = app.fake();
    let customer = crm.add_customer(&["0981234567"], Some(27));
    crm.add_order(customer, "new", Some(27));

    app.post_webhook(&after_call("t1", "0981234567", "ANSWERED", 1028))
        .await;
    app.post_webhook(&after_call("t1", "0981234567", "ANSWERED", 1027))
        .await;
    app.run_worker_until_idle().await;

    assert_eq!(
        tasks_of(&app, 28)
            .iter()
            .filter(|t| t["complete"] == true)
            .count(),
        1
    );
    assert_eq!(
        tasks_of(&app, 27)
            .iter()
            .filter(|t| t["complete"] == true)
            .count(),
        1
    );
}

#[tokio::test]
async fn one_webhook_delivered_three_times_makes_one_set_of_records() {
    let app = app().await;
    let event = after_call("dup-1", "0981234567", "ANSWERED", 1028);
    for _ in 0..3 {
        let r = app.post_webhook(&event).await;
        assert_eq!(r.status(), 200);
    }
    app.run_worker_until_idle().await;
    let crm = app.fake();
    assert_eq!(crm.customers().len(), 1);
    assert_eq!(crm.orders().len(), 1);
    assert_eq!(crm.tasks().len(), 1);
    assert_eq!(crm.calls().len(), 1);
}

#[tokio::test]
async fn two_simultaneous_calls_from_one_new_number_make_one_customer() {
    let crm = start_fake_crm().await;
    let app = spawn_app_with_crm(&crm, |s| {
        s.worker.concurrency = 4;
        fast_retries(s);
        tracking(s);
    })
    .await;

    let first = after_call("sim-1", "0931112233", "ANSWERED", 1028);
    let second = after_call("sim-2", "+380931112233", "ANSWERED", 1027);
    let (a, b) = tokio::join!(app.post_webhook(&first), app.post_webhook(&second));
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    crate::helpers::eventually(Duration::from_secs(10), "both calls uploaded", || async {
        (crm.calls().len() == 2).then_some(())
    })
    .await;
    assert_eq!(crm.customers().len(), 1, "{:#?}", crm.customers());
    assert_eq!(
        crm.orders().len(),
        1,
        "the second call sees the first call's open order"
    );
}

#[tokio::test]
async fn a_crm_validation_error_parks_the_event_with_the_crms_message() {
    let app = app().await;
    app.fake()
        .add_fault_rule(FaultRule::new(Fault::ValidationError).on_path("/api/v5/customers/create"));

    app.post_webhook(&after_call("bad-1", "0981234567", "ANSWERED", 1028))
        .await;
    app.run_worker_until_idle().await;

    let r = app
        .client
        .get(app.url("/admin/dead-letters"))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    let letters = body["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{body:#}");
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap()
            .contains("Errors in the entity format"),
        "{body:#}"
    );
    assert_eq!(app.state.store.queue_depth().await.unwrap(), 0);
}

#[tokio::test]
async fn a_403_fixed_mid_run_is_delivered_after_the_fix_without_operator_action() {
    let app = app().await;
    let crm = app.fake();
    crm.set_fault(Fault::AccessDenied403);

    app.post_webhook(&after_call("acl-1", "0981234567", "ANSWERED", 1028))
        .await;
    let outcomes = app.run_worker_until_idle().await;
    assert!(
        outcomes.contains(&callgate::worker::ExecutionOutcome::TaskRetried),
        "{outcomes:?}"
    );
    assert_eq!(
        app.state.store.queue_depth().await.unwrap(),
        1,
        "kept, not dropped"
    );

    crm.clear_faults();
    app.drain_queue(Duration::from_secs(10)).await;
    assert_eq!(crm.customers().len(), 1);
    assert_eq!(crm.calls().len(), 1);
    assert_eq!(app.state.store.dead_letter_count().await.unwrap(), 0);
}

#[tokio::test]
async fn with_the_crm_down_for_a_while_everything_is_delivered_once_when_it_is_back() {
    let app = app().await;
    let crm = app.fake();
    crm.add_fault_rule(FaultRule::new(Fault::Status503).times(5));
    crm.add_fault_rule(FaultRule::new(Fault::Status500).times(3));

    for i in 0..5 {
        app.post_webhook(&after_call(
            &format!("down-{i}"),
            &format!("09812345{i:02}"),
            "ANSWERED",
            1028,
        ))
        .await;
    }
    app.drain_queue(Duration::from_secs(20)).await;

    assert_eq!(crm.customers().len(), 5);
    assert_eq!(crm.orders().len(), 5);
    assert_eq!(crm.tasks().len(), 5);
    assert_eq!(crm.calls().len(), 5);
}

#[tokio::test]
async fn a_wrong_token_is_401_and_stores_nothing() {
    let app = app().await;
    let r = app
        .client
        .post(app.url("/ringostat/webhook?token=nope"))
        .json(&after_call("x", "0981234567", "ANSWERED", 1028))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = app
        .client
        .post(app.url("/ringostat/webhook"))
        .json(&after_call("x", "0981234567", "ANSWERED", 1028))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(app.state.store.queue_depth().await.unwrap(), 0);
}

#[tokio::test]
async fn a_malformed_payload_is_400_naming_the_field_and_kept_in_quarantine() {
    let app = app().await;
    let r = app
        .client
        .post(app.url(&format!("/ringostat/webhook?token={WEBHOOK_TOKEN}")))
        .form(&[("caller", "0981234567"), ("disposition", "ANSWERED")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["field"], "call_id", "{body}");

    let r = app
        .client
        .get(app.url(&format!(
            "/ringostat/webhook?token={WEBHOOK_TOKEN}&uniqueid=q2&calldate=yesterday"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["field"], "calldate");

    let quarantine = app.state.store.list_quarantine(10).await.unwrap();
    assert_eq!(quarantine.len(), 2);
    assert!(
        quarantine
            .iter()
            .any(|q| q.raw.contains("calldate=yesterday"))
    );
    assert!(
        quarantine.iter().all(|q| !q.raw.contains(WEBHOOK_TOKEN)),
        "the secret is not kept"
    );
    assert_eq!(app.state.store.queue_depth().await.unwrap(), 0);
}

#[tokio::test]
async fn a_body_over_64_kib_is_refused() {
    let app = app().await;
    let big = "x".repeat(70 * 1024);
    let r = app
        .client
        .post(app.url(&format!("/ringostat/webhook?token={WEBHOOK_TOKEN}")))
        .form(&[("uniqueid", "big"), ("landing", big.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}

/// Runs the `callgate` binary against this app's admin API.
fn cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(args)
        .args(["--url", &app.address])
        .env("CALLGATE__ADMIN__TOKEN", crate::helpers::ADMIN_TOKEN)
        .env_remove("CALLGATE_CONFIG")
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .output()
        .expect("callgate runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_and_replays_dead_letters_and_lists_the_quarantine() {
    let app = app().await;
    app.fake().add_fault_rule(
        FaultRule::new(Fault::ValidationError)
            .on_path("/api/v5/customers/create")
            .times(1),
    );
    app.post_webhook(&after_call("cli-1", "0981234567", "ANSWERED", 1028))
        .await;
    app.run_worker_until_idle().await;
    app.client
        .get(app.url(&format!(
            "/ringostat/webhook?token={WEBHOOK_TOKEN}&caller=1"
        )))
        .send()
        .await
        .unwrap();

    let out = tokio::task::block_in_place(|| cli(&app, &["dead-letters", "list"]));
    assert!(out.status.success(), "{out:?}");
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = listed["dead_letters"][0]["id"]
        .as_u64()
        .expect("one dead letter");
    assert!(
        listed["dead_letters"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("Errors in the entity format")
    );

    let out =
        tokio::task::block_in_place(|| cli(&app, &["dead-letters", "replay", &id.to_string()]));
    assert!(out.status.success(), "{out:?}");
    app.run_worker_until_idle().await;
    assert_eq!(
        app.fake().customers().len(),
        1,
        "delivered after the replay"
    );
    assert_eq!(app.state.store.dead_letter_count().await.unwrap(), 0);

    let out = tokio::task::block_in_place(|| cli(&app, &["quarantine", "list"]));
    assert!(out.status.success(), "{out:?}");
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        listed["quarantine"].as_array().unwrap().len(),
        1,
        "{listed}"
    );

    let out = tokio::task::block_in_place(|| cli(&app, &["dead-letters", "replay", "999"]));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
}

#[tokio::test]
async fn on_the_sandbox_crm_a_call_becomes_records_readable_through_the_admin_api() {
    let app = crate::helpers::spawn_app(|s| {
        s.crm.senior_manager_id = 1;
        tracking(s);
    })
    .await;

    let r = app
        .post_webhook(&after_call("sb-1", "0981234567", "ANSWERED", 1028))
        .await;
    assert_eq!(r.status(), 200);

    let admin = |path: &'static str| {
        let app = &app;
        async move {
            app.client
                .get(app.url(path))
                .bearer_auth(crate::helpers::ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let records = crate::helpers::eventually(
        Duration::from_secs(10),
        "the worker applies the call",
        || async {
            let records = admin("/admin/sandbox").await;
            (records["calls"].as_array().is_some_and(|c| c.len() == 1)).then_some(records)
        },
    )
    .await;
    assert_eq!(
        records["customers"].as_array().unwrap().len(),
        1,
        "{records:#}"
    );
    assert_eq!(records["customers"][0]["phones"][0], "+380981234567");
    assert_eq!(
        records["orders"].as_array().unwrap().len(),
        1,
        "{records:#}"
    );
    assert_eq!(records["orders"][0]["site"], "shop1");
    assert_eq!(records["tasks"].as_array().unwrap().len(), 1, "{records:#}");
    assert_eq!(records["tasks"][0]["performer_id"], 28);

    // The call log entry is written after the CRM actions: wait for it too.
    let log = crate::helpers::eventually(Duration::from_secs(10), "the call is logged", || async {
        let log = admin("/admin/calls?manager_id=28").await;
        (log["calls"].as_array().is_some_and(|c| !c.is_empty())).then_some(log)
    })
    .await;
    assert_eq!(log["calls"].as_array().unwrap().len(), 1, "{log:#}");
    assert_eq!(log["calls"][0]["result"], "answered");
    let empty = admin("/admin/calls?manager_id=27").await;
    assert!(empty["calls"].as_array().unwrap().is_empty());
    // The next lookup finds Tatiana through the index the worker filled.
    assert_eq!(
        app.get_route("caller=0981234567")
            .await
            .text()
            .await
            .unwrap(),
        "shop_tatiana"
    );
}

/// An outgoing after-call webhook: the employee's SIP calls the client at `dst`.
fn outgoing(id: &str, sip: &str, client: &str, staff: i64) -> Value {
    json!({
        "uniqueid": id, "calldate": "2024-07-31 15:10:00", "caller": sip, "dst": client,
        "call_type": "out", "disposition": "ANSWERED", "billsec": 30, "waittime": 5,
        "recording": format!("https://app.ringostat.com/recordings/{id}.ogg"), "has_recording": 1,
        "employee_number": staff,
    })
}

#[tokio::test]
async fn s4_outgoing_calls_create_nothing_for_a_stranger_and_a_closed_task_for_a_customer() {
    let app = app().await;
    let crm = app.fake();
    app.post_webhook(&outgoing("o1", "shop_tatiana", "380631234567", 1028))
        .await;
    app.run_worker_until_idle().await;
    assert!(crm.customers().is_empty(), "nothing created by default");
    assert!(crm.orders().is_empty());
    assert!(crm.tasks().is_empty());
    assert_eq!(crm.calls().len(), 1, "the call history still has the call");
    assert_eq!(crm.calls()[0]["type"], "out");

    let customer = crm.add_customer(&["063 123 45 67"], Some(28));
    crm.add_order(customer, "new", Some(28));
    app.post_webhook(&outgoing("o2", "shop_tatiana", "380631234567", 1028))
        .await;
    app.run_worker_until_idle().await;
    let tasks = tasks_of(&app, 28);
    assert_eq!(tasks.len(), 1, "{tasks:#?}");
    assert_eq!(tasks[0]["complete"], true);
    assert!(tasks[0]["commentary"].as_str().unwrap().contains("o2.ogg"));
}

#[tokio::test]
async fn s6_voicemail_from_tatianas_customer_is_a_call_back_task_on_tatiana_with_the_message() {
    let app = app().await;
    let crm = app.fake();
    crm.add_customer(&["0981234567"], Some(28));
    app.post_webhook(&after_call("vm-1", "0981234567", "VOICEMAIL", -1))
        .await;
    app.run_worker_until_idle().await;
    let tasks = crm.tasks();
    assert_eq!(tasks.len(), 1, "{tasks:#?}");
    assert_eq!(tasks[0]["performer"], 28);
    assert_eq!(tasks[0]["complete"], false);
    assert!(
        tasks[0]["commentary"]
            .as_str()
            .unwrap()
            .contains("vm-1.ogg"),
        "{tasks:#?}"
    );
    assert!(
        tasks[0]["customer"]["id"].is_number(),
        "linked to the customer (S13): {tasks:#?}"
    );
}

#[tokio::test]
async fn s7_alinas_customer_answered_by_tatiana_gives_tatiana_a_closed_task_and_alina_an_open_one()
{
    let app = app().await;
    let crm = app.fake();
    let customer = crm.add_customer(&["0981234567"], Some(27));
    crm.add_order(customer, "new", Some(27));
    app.post_webhook(&after_call("away-1", "0981234567", "ANSWERED", 1028))
        .await;
    app.run_worker_until_idle().await;
    let tatiana = tasks_of(&app, 28);
    let alina = tasks_of(&app, 27);
    assert_eq!(tatiana.len(), 1, "{tatiana:#?}");
    assert_eq!(tatiana[0]["complete"], true);
    assert_eq!(alina.len(), 1, "{alina:#?}");
    assert_eq!(alina[0]["complete"], false);
    assert!(
        alina[0]["commentary"]
            .as_str()
            .unwrap()
            .contains("away-1.ogg")
    );
    assert_eq!(crm.orders().len(), 1, "no new order: one is open");
}

#[tokio::test]
async fn s8_a_call_to_an_unknown_tracking_number_asks_the_senior_manager_to_check_it() {
    let app = app().await;
    let mut event = after_call("trk-1", "0981234567", "ANSWERED", 1028);
    event["dst"] = json!("380445556677");
    app.post_webhook(&event).await;
    app.run_worker_until_idle().await;
    let senior = tasks_of(&app, 1);
    assert_eq!(senior.len(), 1, "{senior:#?}");
    assert!(
        senior[0]["text"]
            .as_str()
            .unwrap()
            .contains("+380445556677"),
        "{senior:#?}"
    );
    assert_eq!(
        tasks_of(&app, 28).len(),
        1,
        "the call itself is handled as usual"
    );

    // More calls to the same number the same day: handled, but the senior is not asked again.
    for id in ["trk-2", "trk-3"] {
        let mut event = after_call(id, "0501234567", "ANSWERED", 1028);
        event["dst"] = json!("0445556677");
        app.post_webhook(&event).await;
    }
    app.run_worker_until_idle().await;
    assert_eq!(tasks_of(&app, 1).len(), 1, "{:#?}", tasks_of(&app, 1));
    assert_eq!(tasks_of(&app, 28).len(), 3);
    // Another unknown number gets its own reminder.
    let mut event = after_call("trk-4", "0501234567", "ANSWERED", 1028);
    event["dst"] = json!("380445556600");
    app.post_webhook(&event).await;
    app.run_worker_until_idle().await;
    assert_eq!(tasks_of(&app, 1).len(), 2);
}

#[tokio::test]
async fn s9_an_internal_call_between_managers_creates_nothing() {
    let app = app().await;
    let crm = app.fake();
    let mut event = after_call("int-1", "shop_alina", "ANSWERED", 1028);
    event["dst"] = json!("shop_tatiana");
    let r = app.post_webhook(&event).await;
    assert_eq!(r.status(), 200);
    app.run_worker_until_idle().await;
    assert!(crm.customers().is_empty());
    assert!(crm.tasks().is_empty());
    assert!(crm.calls().is_empty(), "{:#?}", crm.calls());
    let log = app
        .state
        .store
        .query_call_log(&Default::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(log.len(), 1, "logged, not sent to the CRM");
}

#[tokio::test]
async fn s13_with_customer_only_creation_the_closed_task_hangs_on_the_customer() {
    let crm = start_fake_crm().await;
    let app = spawn_app_with_crm(&crm, |s| {
        manual_worker(s);
        s.crm.create_on_incoming = CreateOnIncoming::Customer;
        tracking(s);
    })
    .await;
    app.post_webhook(&after_call("co-1", "0981234567", "ANSWERED", 1028))
        .await;
    app.run_worker_until_idle().await;
    assert_eq!(crm.customers().len(), 1);
    assert!(crm.orders().is_empty());
    let tasks = crm.tasks();
    assert_eq!(
        tasks.len(),
        1,
        "never dropped for lack of an order: {tasks:#?}"
    );
    assert_eq!(tasks[0]["customer"]["id"], crm.customers()[0]["id"]);
}

#[tokio::test]
async fn s14_a_ring_group_call_answered_on_one_leg_is_not_a_missed_call() {
    let app = app().await;
    let crm = app.fake();
    crm.add_customer(&["0981234567"], Some(27));
    // The queue rings Alina (no answer) and Tatiana (answers): two after-call legs.
    app.post_webhook(&after_call("rg-1", "0981234567", "ANSWERED", 1028))
        .await;
    app.post_webhook(&after_call("rg-1", "0981234567", "NO ANSWER", 1027))
        .await;
    app.run_worker_until_idle().await;
    let open: Vec<Value> = crm
        .tasks()
        .into_iter()
        .filter(|t| t["complete"] == false && t["text"].as_str().unwrap().contains("Call back"))
        .collect();
    assert!(open.is_empty(), "no call-back task: {:#?}", crm.tasks());
    assert_eq!(
        tasks_of(&app, 28)
            .iter()
            .filter(|t| t["complete"] == true)
            .count(),
        1
    );
}

#[tokio::test]
async fn a_ring_groups_missed_leg_then_its_answered_leg_make_one_answered_call_record() {
    // The real worker loops and the real batch window (not `run_until_idle`).
    let crm = start_fake_crm().await;
    let app = spawn_app_with_crm(&crm, |s| {
        s.worker.concurrency = 4;
        s.crm.senior_manager_id = 1;
        // Room for the answered leg's own CRM work (at the fake's 10 requests/s) on a busy
        // machine: the missed leg's record waits this long for it.
        s.crm.calls_upload_flush_ms = 3_000;
        fast_retries(s);
        tracking(s);
    })
    .await;
    crm.add_customer(&["0981234567"], Some(27));
    // Alina's leg rings out first; Tatiana answers the same call.
    let missed = app
        .post_webhook(&after_call("rg-one", "0981234567", "NO ANSWER", 1027))
        .await;
    let answered = app
        .post_webhook(&after_call("rg-one", "0981234567", "ANSWERED", 1028))
        .await;
    assert_eq!(
        (missed.status().as_u16(), answered.status().as_u16()),
        (200, 200)
    );
    let store = app.state.store.clone();
    crate::helpers::eventually(Duration::from_secs(10), "both legs settled", || async {
        (store.queue_depth().await.expect("depth") == 0 && !crm.calls().is_empty()).then_some(())
    })
    .await;
    let calls = crm.calls();
    assert_eq!(calls.len(), 1, "one call, one record: {calls:#?}");
    assert_eq!(calls[0]["externalId"], "rg-one");
    assert_eq!(calls[0]["result"], "answered", "{calls:#?}");
    assert_eq!(calls[0]["userId"], 28, "who answered: {calls:#?}");
    assert_eq!(calls[0]["duration"], 73);
    assert!(
        calls[0]["recordUrl"]
            .as_str()
            .is_some_and(|u| u.contains("recordings/rg-one.ogg")),
        "{calls:#?}"
    );
    assert_eq!(
        crm.request_count("POST /api/v5/telephony/calls/upload"),
        1,
        "the legs went in one upload"
    );
}

#[tokio::test]
async fn a_missed_call_nobody_answers_still_uploads_no_answer_after_its_window() {
    let crm = start_fake_crm().await;
    let app = spawn_app_with_crm(&crm, |s| {
        s.worker.concurrency = 2;
        s.crm.senior_manager_id = 1;
        s.crm.calls_upload_flush_ms = 300;
        fast_retries(s);
        tracking(s);
    })
    .await;
    let r = app
        .post_webhook(&after_call("alone-1", "0981234567", "NO ANSWER", -1))
        .await;
    assert_eq!(r.status(), 200);
    let store = app.state.store.clone();
    crate::helpers::eventually(
        Duration::from_secs(10),
        "the missed call settled",
        || async {
            (store.queue_depth().await.expect("depth") == 0 && !crm.calls().is_empty())
                .then_some(())
        },
    )
    .await;
    let calls = crm.calls();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0]["externalId"], "alone-1");
    assert_eq!(calls[0]["result"], "no answer");
}

#[tokio::test]
async fn a_call_record_held_when_the_process_dies_is_uploaded_once_after_the_restart() {
    use callgate::worker::ExecutionOutcome;
    let crm = start_fake_crm().await;
    let configure = |s: &mut Settings| {
        manual_worker(s);
        tracking(s);
    };
    let app = spawn_app_with_crm(&crm, configure).await;
    app.post_webhook(&after_call("died-1", "0981234567", "ANSWERED", 1028))
        .await;
    // The event's task runs and hands its record over; the record's task goes to the
    // batcher, still leased...
    let worker = &app.worker;
    assert_eq!(
        worker.try_execute_task().await.expect("worker runs"),
        ExecutionOutcome::TaskCompleted
    );
    assert_eq!(
        worker.try_execute_task().await.expect("worker runs"),
        ExecutionOutcome::RecordHeld
    );
    // ...and the process dies before its batch goes.
    let dir = app.dir();
    app.shut_down().await;
    assert!(crm.calls().is_empty(), "{:#?}", crm.calls());

    let app = respawn_app_with_crm(dir, &crm, configure).await;
    assert_eq!(
        app.state.store.queue_depth().await.expect("depth"),
        1,
        "the record's task outlived the process"
    );
    // The new process claims it again (the embedded store's leases die with the process;
    // on Redis the lease runs out first) and uploads it.
    app.drain_queue(Duration::from_secs(15)).await;
    let calls = crm.calls();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0]["externalId"], "died-1");
    assert_eq!(calls[0]["result"], "answered");
    assert_eq!(crm.customers().len(), 1, "the event itself ran once");
}

#[tokio::test]
async fn a_backlog_of_missed_calls_uploads_in_full_batches_whatever_the_worker_concurrency() {
    let crm = start_fake_crm().await;
    let app = spawn_app_with_crm(&crm, |s| {
        // Fewer worker loops than calls per batch: a held record no longer takes a loop.
        s.worker.concurrency = 2;
        s.crm.senior_manager_id = 1;
        s.crm.calls_upload_batch = 10;
        // A window no test run reaches: only full batches go.
        s.crm.calls_upload_flush_ms = 120_000;
        fast_retries(s);
        tracking(s);
    })
    .await;
    // 2 general requests per missed call (customer search, call-back task) at the CRM's
    // 10/s: 20 calls keep the test short.
    for chunk in (0..20).collect::<Vec<u32>>().chunks(10) {
        let posts = chunk.iter().map(|i| {
            let caller = format!("09812{i:05}");
            let event = after_call(&format!("backlog-{i}"), &caller, "NO ANSWER", -1);
            let app = &app;
            async move { app.post_webhook(&event).await.status().as_u16() }
        });
        for status in futures::future::join_all(posts).await {
            assert_eq!(status, 200);
        }
    }
    let store = app.state.store.clone();
    crate::helpers::eventually(Duration::from_secs(30), "20 call records", || async {
        (crm.calls().len() == 20 && store.queue_depth().await.expect("depth") == 0).then_some(())
    })
    .await;
    assert_eq!(
        crm.request_count("POST /api/v5/telephony/calls/upload"),
        2,
        "two uploads of 10 calls with 2 worker loops"
    );
    assert!(crm.calls().iter().all(|c| c["result"] == "no answer"));
}

#[tokio::test]
async fn s14_a_missed_leg_that_arrives_first_has_its_call_back_closed_by_the_answered_leg() {
    let app = app().await;
    let crm = app.fake();
    crm.add_customer(&["0981234567"], Some(27));
    app.post_webhook(&after_call("rg-2", "0981234567", "NO ANSWER", 1027))
        .await;
    app.run_worker_until_idle().await;
    assert_eq!(
        crm.tasks()
            .iter()
            .filter(|t| t["complete"] == false)
            .count(),
        1
    );

    app.post_webhook(&after_call("rg-2", "0981234567", "ANSWERED", 1028))
        .await;
    app.run_worker_until_idle().await;
    let callbacks: Vec<Value> = crm
        .tasks()
        .into_iter()
        .filter(|t| t["text"].as_str().unwrap().starts_with("Call back"))
        .collect();
    assert_eq!(callbacks.len(), 1, "{:#?}", crm.tasks());
    assert_eq!(
        callbacks[0]["complete"], true,
        "the call-back is closed: {callbacks:#?}"
    );
    // Alina's customer talked to Tatiana: S7's open task on Alina is expected.
    let open: Vec<Value> = crm
        .tasks()
        .into_iter()
        .filter(|t| t["complete"] == false)
        .collect();
    assert_eq!(open.len(), 1, "{open:#?}");
    assert_eq!(open[0]["performer"], 27);
    assert!(
        open[0]["text"].as_str().unwrap().contains("talked to"),
        "{open:#?}"
    );
}

#[tokio::test]
async fn the_call_log_dates_a_new_order_by_the_call_not_by_the_time_the_worker_ran() {
    // The call was on 2024-07-31; the worker applies it today. The order it creates is the
    // call's, so the log's order date is the call's date (the planner's), not today's.
    let app = app().await;
    let r = app
        .post_webhook(&after_call("od-1", "0981234567", "ANSWERED", 1028))
        .await;
    assert_eq!(r.status(), 200);
    app.run_worker_until_idle().await;
    assert_eq!(app.fake().orders().len(), 1, "the call made an order");

    let log = app
        .client
        .get(app.url("/admin/calls?manager_id=28"))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let calls = log["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{log:#}");
    assert_eq!(calls[0]["call_id"], "od-1");
    assert_eq!(calls[0]["order_date"], "2024-07-31", "{log:#}");
}
