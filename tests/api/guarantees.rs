//! SPEC §6 and §9 guarantees that no other test file proves (README "Guarantees").

use std::{io::ErrorKind, net::TcpListener, time::Duration};

use callgate::{
    testing::fake_retailcrm::{FakeRetailCrm, Fault, FaultRule},
    worker::ExecutionOutcome,
};
use serde_json::Value;

use crate::{
    calls::{after_call, tracking},
    helpers::{ADMIN_TOKEN, TestApp, manual_worker, spawn_app_with_crm, start_fake_crm},
};

/// SPEC §9: recording URLs are passed to the CRM, never fetched.
#[tokio::test]
async fn a_recording_url_is_passed_to_the_crm_and_never_fetched() {
    let crm = start_fake_crm().await;
    let app = spawn_app_with_crm(&crm, |s| {
        manual_worker(s);
        tracking(s);
    })
    .await;
    // Where the recording "lives": a listener nobody should ever connect to.
    let recordings = TcpListener::bind("127.0.0.1:0").expect("bind");
    recordings.set_nonblocking(true).expect("non-blocking");
    let url = format!(
        "http://{}/recordings/rec-1.ogg",
        recordings.local_addr().expect("addr")
    );
    let mut event = after_call("rec-1", "0981234567", "ANSWERED", 1028);
    event["recording"] = Value::String(url.clone());
    assert_eq!(app.post_webhook(&event).await.status(), 200);

    app.drain_queue(Duration::from_secs(10)).await;
    let calls = crm.calls();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0]["recordUrl"], url.as_str(), "passed on as it came");
    assert!(
        crm.tasks()
            .iter()
            .any(|t| t["commentary"].as_str().is_some_and(|c| c.contains(&url))),
        "linked in the task: {:#?}",
        crm.tasks()
    );
    match recordings.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("callgate connected to the recording's host: {other:?}"),
    }
}

/// SPEC §6: a task waiting out a long retry delay goes through at once when an operator
/// asks (`POST /admin/queue/retry-now`).
#[tokio::test]
async fn retry_now_makes_a_delayed_task_due_at_once() {
    let crm = start_fake_crm().await;
    let app = spawn_app_with_crm(&crm, |s| {
        manual_worker(s);
        tracking(s);
        // A retry an hour away: only the operator's button brings it back today.
        s.worker.retry_base_ms = 3_600_000;
        s.worker.retry_max_ms = 3_600_000;
    })
    .await;
    crm.add_fault_rule(FaultRule::new(Fault::Status500).times(1));
    assert_eq!(
        app.post_webhook(&after_call("now-1", "0981234567", "NO ANSWER", -1))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.run_worker_until_idle().await,
        [ExecutionOutcome::TaskRetried]
    );
    assert_eq!(
        app.run_worker_until_idle().await,
        [],
        "the retry is not due yet"
    );

    let r = reqwest::Client::new()
        .post(app.url("/admin/queue/retry-now"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("retry-now");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["rescheduled"], 1, "{body}");
    app.drain_queue(Duration::from_secs(10)).await;
    assert_eq!(crm.tasks().len(), 1);
    assert_eq!(app.state.store.queue_depth().await.unwrap(), 0);
}

/// An answered call whose first write to `path` the CRM applies but never answers: the
/// worker times out and parks the event for a retry that waits until the test calls it.
async fn one_call_whose_write_is_never_answered(crm: &FakeRetailCrm, path: &str) -> TestApp {
    let app = spawn_app_with_crm(crm, |s| {
        manual_worker(s);
        tracking(s);
        s.crm.timeout_ms = 300;
        s.worker.retry_base_ms = 3_600_000;
        s.worker.retry_max_ms = 3_600_000;
    })
    .await;
    crm.add_fault_rule(FaultRule::new(Fault::AnswerLost).on_path(path).times(1));
    let event = after_call("lost-answer-1", "0981234567", "ANSWERED", 1028);
    assert_eq!(app.post_webhook(&event).await.status(), 200);
    assert_eq!(
        app.run_worker_until_idle().await,
        [ExecutionOutcome::TaskRetried],
        "timed out waiting for the CRM's answer"
    );
    app
}

/// SPEC §6: a CRM write whose answer never came back (the CRM applied it, callgate timed
/// out — the same window as a crash between the write and its record) is not doubled: the
/// rerun finds the customer and the order by their `externalId`.
#[tokio::test]
async fn a_write_applied_by_the_crm_but_never_answered_is_not_doubled() {
    let crm = start_fake_crm().await;
    let app = one_call_whose_write_is_never_answered(&crm, "/api/v5/customers/create").await;
    assert_eq!(crm.customers().len(), 1, "the CRM applied the write");

    assert_eq!(app.state.store.retry_all_now().await.unwrap(), 1);
    app.drain_queue(Duration::from_secs(10)).await;
    assert_eq!(crm.customers().len(), 1, "{:#?}", crm.customers());
    assert_eq!(crm.orders().len(), 1, "{:#?}", crm.orders());
    assert_eq!(crm.tasks().len(), 1, "{:#?}", crm.tasks());
    assert_eq!(crm.calls().len(), 1);
}

/// SPEC §6, issue 14 item 10: retailCRM tasks have no `externalId`, so callgate marks each
/// task with the call and action it belongs to; a `tasks/create` the CRM applied but never
/// answered (the same window as a crash between the create and its record) is found by that
/// mark on the rerun and not repeated.
#[tokio::test]
async fn a_task_created_by_the_crm_but_never_answered_is_not_repeated() {
    let crm = start_fake_crm().await;
    let app = one_call_whose_write_is_never_answered(&crm, "/api/v5/tasks/create").await;
    assert_eq!(crm.tasks().len(), 1, "the CRM applied the create");
    let commentary = crm.tasks()[0]["commentary"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mark = commentary.lines().last().unwrap_or_default();
    assert!(
        mark.starts_with("callgate:") && !mark.contains("981234567"),
        "the task carries its mark, no phone number in it: {commentary}"
    );

    assert_eq!(app.state.store.retry_all_now().await.unwrap(), 1);
    app.drain_queue(Duration::from_secs(10)).await;
    assert_eq!(crm.tasks().len(), 1, "{:#?}", crm.tasks());
    assert_eq!(
        crm.request_count("GET /api/v5/tasks"),
        1,
        "the rerun looked for the mark once"
    );
    assert_eq!(crm.request_count("POST /api/v5/tasks/create"), 1);
    assert_eq!(crm.customers().len(), 1);
    assert_eq!(crm.orders().len(), 1);
}
