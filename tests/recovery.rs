//! Recovery after `kill -9` (SPEC §10 "Recovery", §6; issue 14 item 6), black box: the real
//! `callgate serve` binary against the fake retailCRM (served by this test process), on the
//! embedded store and on Redis.
//!
//! Each test acknowledges [`EVENTS`] after-call webhooks of missed calls from new numbers
//! (S5: one open call-back task on the senior manager per caller, S12: one call record per
//! call), lets the worker apply some of them, then freezes the CRM's customer searches and
//! task creations (the first CRM request of every task: a search while the owner mirror is
//! not synced, `tasks/create` once it is) so that each worker loop holds a leased task (and
//! its number lock) in the middle of its work, and kills the process with SIGKILL. A new process on the
//! same store must bring every acknowledged event's effect into the CRM within
//! [`RECOVERY_BOUND`] of its start — the `eventually` bound is the assertion — and exactly
//! once: one task per caller, one call record per call id, nothing dead-lettered. The
//! measured recovery time is printed (`cargo test --test recovery -- --nocapture`) and
//! recorded in load-tests/RESULTS.md ("Fault figures").
//!
//! A frozen `tasks/create` is never applied (`Fault::Hang` holds the request unprocessed);
//! a create the CRM applied but never answered is tests/api/guarantees.rs's case. Everything else a kill can interrupt here — leases, number locks, a gathered batch of call
//! records, an upload in flight — is covered.

#[path = "support/redis.rs"]
mod redis_support;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use callgate::testing::{
    eventually,
    fake_retailcrm::{FakeCrmConfig, FakeRetailCrm, FakeUser, Fault, FaultRule},
};
use redis_support::RedisKeys;
use serde_json::{Value, json};

/// Acknowledged events per test.
const EVENTS: usize = 50;
/// SPEC §10: every acknowledged event reaches the CRM within 20 s of the restart.
const RECOVERY_BOUND: Duration = Duration::from_secs(20);
/// Worker loops per process (`worker.concurrency`): each holds one leased task at the kill.
const CONCURRENCY: usize = 4;
/// Applied before the kill (some applied, the rest queued or leased).
const APPLIED_BEFORE_KILL: usize = 10;
/// The senior manager: S5 call-back tasks go to them.
const SENIOR: u64 = 1;
const TOKEN: &str = "recovery-webhook-token";
const ADMIN: &str = "recovery-admin-token";

/// A running `callgate serve`; killed (SIGKILL) on drop if the test fails first.
struct Serve {
    child: Child,
    port: u16,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// Starts the binary with `config`; its log goes to `log` (kept for a failed run).
    fn start(config: &Path, dir: &Path, log: &Path) -> Serve {
        let port = free_port();
        let log = std::fs::File::create(log).expect("create the serve log");
        let child = Command::new(env!("CARGO_BIN_EXE_callgate"))
            .args(["--config", config.to_str().expect("utf-8 path"), "serve"])
            .env_remove("CALLGATE_CONFIG")
            .env("CALLGATE__SERVER__PORT", port.to_string())
            // The production log filter: what an operator's log would hold.
            .env_remove("RUST_LOG")
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("callgate serve starts");
        Serve { child, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `kill -9`: no shutdown code of callgate runs.
    fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL the server");
        let status = self.child.wait().expect("reap the server");
        assert!(!status.success(), "killed, not exited: {status}");
    }
}

/// A free loopback port (bound, read, released: `serve` binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The caller of event `i`: a distinct new mobile number per event.
fn caller(i: usize) -> String {
    format!("067{:07}", 1_000_000 + i)
}

fn call_id(i: usize) -> String {
    format!("recovery-{i}")
}

/// An after-call webhook of a missed call from a new number.
fn missed_call(i: usize) -> Value {
    json!({
        "uniqueid": call_id(i),
        "calldate": "2024-07-31 14:59:35",
        "caller": caller(i),
        "call_type": "in",
        "disposition": "NO ANSWER",
        "billsec": 0,
        "waittime": "12",
    })
}

fn write_config(dir: &Path, crm: &FakeRetailCrm, store: &str) -> PathBuf {
    let path = dir.join("callgate.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[store]
{store}
[crm]
kind = "retailcrm"
base_url = "{base}"
api_key = "{key}"
senior_manager_id = {SENIOR}
default_site = "shop1"
[ringostat]
webhook_token = "{TOKEN}"
[admin]
token = "{ADMIN}"
[worker]
concurrency = {CONCURRENCY}
[rules]
dir = "{rules}"
"#,
            base = crm.base_url(),
            key = crm.api_key(),
            rules = dir.join("rules").display(),
        ),
    )
    .expect("write the config");
    path
}

/// Call-back tasks per caller (by the E.164 digits in the task's text) and call records per
/// call id, as the CRM holds them.
fn effects(crm: &FakeRetailCrm) -> (HashMap<usize, usize>, HashMap<String, usize>) {
    let mut tasks = HashMap::new();
    for t in crm.tasks() {
        let text = t["text"].as_str().unwrap_or_default();
        let owner = (0..EVENTS).find(|&i| text.contains(&format!("38{}", caller(i))));
        *tasks.entry(owner.unwrap_or(usize::MAX)).or_insert(0) += 1;
    }
    let mut calls = HashMap::new();
    for c in crm.calls() {
        let id = c["externalId"].as_str().unwrap_or_default().to_owned();
        *calls.entry(id).or_insert(0) += 1;
    }
    (tasks, calls)
}

/// Every event has its task and its call record (maybe more than one: checked after).
fn all_applied(crm: &FakeRetailCrm) -> bool {
    let (tasks, calls) = effects(crm);
    (0..EVENTS).all(|i| tasks.contains_key(&i) && calls.contains_key(&call_id(i)))
}

/// In-flight customer searches (`GET customers?filter[name]=…`) and task creations received
/// since `since`.
fn hung_requests(crm: &FakeRetailCrm, since: Instant) -> usize {
    crm.requests()
        .iter()
        .filter(|r| {
            let search =
                r.path == "/api/v5/customers" && r.query.iter().any(|(k, _)| k == "filter[name]");
            r.at >= since && r.status.is_none() && (search || r.path == "/api/v5/tasks/create")
        })
        .count()
}

async fn admin_get(client: &reqwest::Client, serve: &Serve, path: &str) -> Option<Value> {
    let r = client
        .get(serve.url(path))
        .bearer_auth(ADMIN)
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

/// The whole scenario on one store (`store` is the `[store]` section); returns the
/// recovery time.
async fn kill_9_mid_way_then_recover(label: &str, store: &str) -> Duration {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let crm = FakeRetailCrm::start(FakeCrmConfig::default()).await;
    crm.add_user(FakeUser::manager(SENIOR, "Senior", None));
    let config = write_config(dir.path(), &crm, store);
    let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let client = reqwest::Client::new();

    // 1. Acknowledged events.
    let first = Serve::start(
        &config,
        dir.path(),
        &logs.join(format!("recovery-{label}-1.log")),
    );
    eventually(
        Duration::from_secs(30),
        "the first callgate answers /healthz",
        || async {
            let r = client.get(first.url("/healthz")).send().await.ok()?;
            r.status().is_success().then_some(())
        },
    )
    .await;
    for i in 0..EVENTS {
        let r = client
            .post(first.url(&format!("/ringostat/webhook?token={TOKEN}")))
            .json(&missed_call(i))
            .send()
            .await
            .expect("webhook sent");
        assert_eq!(r.status(), 200, "event {i} acknowledged");
    }

    // 2. Mid-way: some applied, then every worker loop caught holding a leased task.
    eventually(
        Duration::from_secs(30),
        "the worker applies the first events",
        || std::future::ready((crm.tasks().len() >= APPLIED_BEFORE_KILL).then_some(())),
    )
    .await;
    let frozen_at = Instant::now();
    crm.add_fault_rule(FaultRule::new(Fault::Hang).on_path("/api/v5/customers"));
    crm.add_fault_rule(FaultRule::new(Fault::Hang).on_path("/api/v5/tasks/create"));
    eventually(
        Duration::from_secs(10),
        "every worker loop waits on a CRM request of its leased task",
        || std::future::ready((hung_requests(&crm, frozen_at) >= CONCURRENCY).then_some(())),
    )
    .await;
    let applied = crm.tasks().len();
    first.kill_9();
    assert!(
        applied < EVENTS,
        "killed mid-way ({applied} of {EVENTS} applied)"
    );
    // The CRM answers again (the searches the dead process left parked went with its
    // connections).
    crm.clear_faults();

    // 3. A new process on the same store.
    let restarted_at = Instant::now();
    let second = Serve::start(
        &config,
        dir.path(),
        &logs.join(format!("recovery-{label}-2.log")),
    );
    eventually(
        RECOVERY_BOUND,
        &format!("every acknowledged event in the CRM after the restart ({label})"),
        || std::future::ready(all_applied(&crm).then_some(())),
    )
    .await;
    let recovery = restarted_at.elapsed();
    println!(
        "recovery after kill -9 ({label} store): {:.2} s ({applied} of {EVENTS} applied before the kill)",
        recovery.as_secs_f64()
    );

    // 4. Exactly once: the queue drains with nothing parked, and nothing is doubled.
    eventually(RECOVERY_BOUND, "the queue drains", || async {
        let q = admin_get(&client, &second, "/admin/queue").await?;
        (q["depth"] == 0).then_some(())
    })
    .await;
    let letters = admin_get(&client, &second, "/admin/dead-letters")
        .await
        .expect("dead letters readable");
    assert_eq!(letters["dead_letters"], json!([]), "nothing dead-lettered");
    let (tasks, calls) = effects(&crm);
    assert_eq!(
        tasks.get(&usize::MAX),
        None,
        "only call-back tasks: {:#?}",
        crm.tasks()
    );
    for i in 0..EVENTS {
        assert_eq!(tasks.get(&i), Some(&1), "one call-back task for event {i}");
        assert_eq!(
            calls.get(&call_id(i)),
            Some(&1),
            "one call record for event {i}"
        );
    }
    assert_eq!(crm.tasks().len(), EVENTS);
    assert_eq!(crm.calls().len(), EVENTS);
    assert!(
        crm.tasks().iter().all(|t| t["performer"] == SENIOR),
        "S5: call-backs on the senior manager"
    );
    drop(second);

    // SPEC §9: neither process logged a secret or a caller's full number.
    for n in 1..=2 {
        let log = std::fs::read_to_string(logs.join(format!("recovery-{label}-{n}.log")))
            .expect("the serve log");
        assert!(!log.is_empty(), "serve {n} logged something");
        for secret in [TOKEN, ADMIN, crm.api_key()] {
            assert!(!log.contains(secret), "serve {n} logged a secret");
        }
        if let Some(i) = (0..EVENTS).find(|&i| log.contains(&caller(i))) {
            panic!("serve {n} logged the full number of event {i}");
        }
    }
    recovery
}

#[tokio::test]
async fn after_kill_9_every_acknowledged_event_reaches_the_crm_within_20_s_embedded() {
    let store = "kind = \"embedded\"\npath = \"callgate.redb\"";
    kill_9_mid_way_then_recover("embedded", store).await;
}

#[tokio::test]
async fn after_kill_9_every_acknowledged_event_reaches_the_crm_within_20_s_redis() {
    let keys = RedisKeys::new();
    let store = format!(
        "kind = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"{}\"",
        keys.url, keys.prefix
    );
    kill_9_mid_way_then_recover("redis", &store).await;
}
