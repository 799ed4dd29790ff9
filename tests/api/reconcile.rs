//! Reconciliation (flow E, SPEC §6) end to end: a fake Ringostat's call log, callgate's
//! webhook endpoint and worker, a strict fake retailCRM. Calls that never arrived by webhook
//! reach the CRM after one run; nothing reaches it twice, across overlapping windows, a
//! restart, an outage and a call received both ways.

use std::{collections::HashMap, time::Duration};

use callgate::{
    domain::reconcile::CALLS_PER_REQUEST_CAP,
    testing::{
        fake_retailcrm::FakeRetailCrm,
        fake_ringostat::{FakeCall, FakeRingostat, FakeRingostatConfig},
    },
};
use chrono::NaiveDateTime;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::{
    calls::{after_call, tracking},
    helpers::{TestApp, crm_settings, manual_worker, start_fake_crm, start_in, with_ringostat},
};

const DRAIN: Duration = Duration::from_secs(30);

/// Now in the fake project's time zone (Kyiv, its default).
pub(crate) fn now_local() -> NaiveDateTime {
    let now = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Kyiv)
        .naive_local();
    now - chrono::Duration::nanoseconds(i64::from(chrono::Timelike::nanosecond(&now)))
}

/// Call `i` of a test: an incoming call from its own number, answered by Tatiana (even) or
/// missed (odd), as the call-log entry and as the after-call webhook.
pub(crate) fn burst_call(prefix: &str, i: usize, date: NaiveDateTime) -> (FakeCall, Value) {
    let caller = format!("09812{i:05}");
    let (disposition, staff) = if i.is_multiple_of(2) {
        ("ANSWERED", 1028)
    } else {
        ("NO ANSWER", -1)
    };
    let mut webhook = after_call(&format!("{prefix}-{i}"), &caller, disposition, staff);
    webhook["calldate"] = json!(date.format("%Y-%m-%d %H:%M:%S").to_string());
    let mut fields = webhook.as_object().cloned().expect("an object");
    fields.remove("calldate");
    (
        FakeCall {
            calldate: date,
            fields,
        },
        webhook,
    )
}

/// How many times each call id reached the CRM.
fn crm_calls(crm: &FakeRetailCrm) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for c in crm.calls() {
        let id = c["externalId"].as_str().expect("externalId").to_owned();
        *seen.entry(id).or_insert(0) += 1;
    }
    seen
}

fn assert_each_once(crm: &FakeRetailCrm, prefix: &str, n: usize) {
    let seen = crm_calls(crm);
    for i in 0..n {
        assert_eq!(
            seen.get(&format!("{prefix}-{i}")),
            Some(&1),
            "call {prefix}-{i} in the CRM: {seen:?}"
        );
    }
    assert_eq!(seen.len(), n, "{seen:?}");
}

struct Setup {
    crm: FakeRetailCrm,
    ringostat: FakeRingostat,
    dir: TempDir,
}

async fn setup() -> Setup {
    Setup {
        crm: start_fake_crm().await,
        ringostat: FakeRingostat::start(FakeRingostatConfig::default()).await,
        dir: TempDir::new().expect("temp dir"),
    }
}

impl Setup {
    async fn app(&self) -> TestApp {
        let mut settings = crm_settings(&self.crm, &self.dir);
        manual_worker(&mut settings);
        tracking(&mut settings);
        with_ringostat(&mut settings, &self.ringostat);
        start_in(settings, Some(self.crm.clone())).await
    }
}

fn query<'a>(req: &'a callgate::testing::fake_ringostat::RingostatRequest, name: &str) -> &'a str {
    req.query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .expect("parameter sent")
}

#[tokio::test]
async fn a_burst_with_a_third_of_the_webhooks_lost_ends_with_every_call_in_the_crm_once() {
    let s = setup().await;
    let app = s.app().await;
    let n = 30;
    let start = now_local() - chrono::Duration::minutes(3);
    let mut lost = 0;
    for i in 0..n {
        let (call, webhook) = burst_call("burst", i, start + chrono::Duration::seconds(i as i64));
        s.ringostat.add_call(call);
        if i.is_multiple_of(3) {
            lost += 1;
            continue;
        }
        assert_eq!(app.post_webhook(&webhook).await.status(), 200);
    }
    app.drain_queue(DRAIN).await;
    assert_eq!(crm_calls(&s.crm).len(), n - lost);

    let report = app
        .reconciler
        .as_ref()
        .expect("reconciler")
        .run_once()
        .await
        .unwrap();
    assert_eq!(
        (
            report.windows,
            report.listed,
            report.recovered,
            report.already_received
        ),
        (1, n, lost, n - lost),
        "{report:?}"
    );
    app.drain_queue(DRAIN).await;
    assert_each_once(&s.crm, "burst", n);
    assert_eq!(app.state.store.dead_letter_count().await.unwrap(), 0);

    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!("callgate_reconcile_recovered_calls_total {lost}")),
        "{metrics}"
    );
    assert!(
        metrics.contains("callgate_reconcile_windows_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("callgate_reconcile_lag_seconds "),
        "{metrics}"
    );
}

#[tokio::test]
async fn overlapping_windows_and_a_restart_in_between_double_nothing() {
    let s = setup().await;
    let start = now_local() - chrono::Duration::minutes(5);
    let mut app = s.app().await;
    for i in 0..6 {
        s.ringostat
            .add_call(burst_call("ovl", i, start + chrono::Duration::seconds(i as i64)).0);
    }
    let first = app.reconciler.as_ref().unwrap().run_once().await.unwrap();
    assert_eq!(first.recovered, 6, "{first:?}");
    app.drain_queue(DRAIN).await;
    // The webhook of a recovered call arriving late is a duplicate: queued once.
    let late = burst_call("ovl", 0, start).1;
    let answer: Value = app.post_webhook(&late).await.json().await.unwrap();
    assert_eq!(answer["duplicate"], true, "{answer}");

    app.stop().await.unwrap().unwrap();
    drop(app);
    let app = s.app().await;
    let reconciler = app.reconciler.as_ref().unwrap();
    assert_eq!(
        reconciler.reconciled_point().await.unwrap(),
        first.reconciled_to,
        "the reconciled point survives the restart"
    );
    for i in 6..9 {
        let (call, webhook) =
            burst_call("ovl", i, start + chrono::Duration::seconds(60 + i as i64));
        s.ringostat.add_call(call);
        if i == 6 {
            // Received both ways.
            assert_eq!(app.post_webhook(&webhook).await.status(), 200);
        }
    }
    let second = reconciler.run_once().await.unwrap();
    assert_eq!(
        (second.recovered, second.already_received),
        (2, 7),
        "{second:?}"
    );
    let requests = s.ringostat.requests();
    assert!(
        query(&requests[1], "from") < query(&requests[0], "to"),
        "the second window overlaps the first: {requests:?}"
    );
    app.drain_queue(DRAIN).await;
    let third = reconciler.run_once().await.unwrap();
    assert_eq!(
        (third.recovered, third.already_received),
        (0, 9),
        "{third:?}"
    );
    app.drain_queue(DRAIN).await;
    assert_each_once(&s.crm, "ovl", 9);
}

#[tokio::test]
async fn a_ringostat_outage_delays_reconciliation_without_losing_the_window() {
    let s = setup().await;
    let app = s.app().await;
    let start = now_local() - chrono::Duration::minutes(4);
    for i in 0..4 {
        s.ringostat
            .add_call(burst_call("out", i, start + chrono::Duration::seconds(i as i64)).0);
    }
    let reconciler = app.reconciler.as_ref().unwrap();
    s.ringostat.set_outage(true);
    let err = reconciler.run_once().await.unwrap_err();
    assert!(err.to_string().contains("Ringostat"), "{err}");
    assert_eq!(reconciler.reconciled_point().await.unwrap(), None);
    assert_eq!(app.state.store.queue_depth().await.unwrap(), 0);

    s.ringostat.set_outage(false);
    let report = reconciler.run_once().await.unwrap();
    assert_eq!(report.recovered, 4, "{report:?}");
    app.drain_queue(DRAIN).await;
    assert_each_once(&s.crm, "out", 4);
}

#[tokio::test]
async fn a_window_over_the_cap_is_split_and_every_call_is_queued_once() {
    let s = setup().await;
    let app = s.app().await;
    let n = CALLS_PER_REQUEST_CAP + 1;
    let start = now_local() - chrono::Duration::minutes(15);
    for i in 0..n {
        // Ten calls a second: the call log has second resolution.
        let date = start + chrono::Duration::seconds((i / 10) as i64);
        s.ringostat.add_call(burst_call("cap", i, date).0);
    }
    let report = app.reconciler.as_ref().unwrap().run_once().await.unwrap();
    assert_eq!((report.recovered, report.listed), (n, n), "{report:?}");
    assert_eq!(
        report.windows, 3,
        "one full answer, then its two halves: {report:?}"
    );
    assert_eq!(app.state.store.queue_depth().await.unwrap(), n as u64);
}

#[tokio::test]
async fn a_run_is_skipped_while_another_instance_holds_the_lease() {
    let s = setup().await;
    let app = s.app().await;
    s.ringostat
        .add_call(burst_call("lease", 0, now_local() - chrono::Duration::minutes(3)).0);
    let lease = format!("lock:reconcile:{}", s.ringostat.project_id());
    let store = &app.state.store;
    store
        .set_raw(&lease, b"another-instance", Some(Duration::from_secs(60)))
        .await
        .unwrap();
    let reconciler = app.reconciler.as_ref().unwrap();
    let skipped = reconciler.run_once().await.unwrap();
    assert!(!skipped.ran, "{skipped:?}");
    assert_eq!(s.ringostat.request_count("/calls/list"), 0);
    assert_eq!(
        store.get_raw(&lease).await.unwrap().as_deref(),
        Some(&b"another-instance"[..]),
        "another instance's lease is left alone"
    );
    store.delete(&lease).await.unwrap();
    let report = reconciler.run_once().await.unwrap();
    assert_eq!((report.ran, report.recovered), (true, 1), "{report:?}");
    assert_eq!(
        store.get_raw(&lease).await.unwrap(),
        None,
        "released after the run"
    );
}
