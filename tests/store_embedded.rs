//! The embedded store: the shared store contract, plus what only a file can show (reopening,
//! and surviving `kill -9`).

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use callgate::{
    crm::CustomerId,
    domain::{
        manager::{ManagerId, ManagerState, ManagerStatus},
        phone_number::PhoneNumber,
    },
    store::{
        EnqueueOutcome, KeyValue, ManagerStates, OwnerEntry, OwnerIndex, Queue, Store,
        embedded::EmbeddedStore, keys,
    },
};
use tempfile::TempDir;

const DB_FILE: &str = "callgate.redb";
const LONG: Duration = Duration::from_secs(3600);

async fn fresh() -> (TempDir, Arc<dyn Store>) {
    let dir = TempDir::new().expect("temp dir");
    let store = EmbeddedStore::open(&dir.path().join(DB_FILE)).expect("open store");
    (dir, Arc::new(store))
}

callgate::store_contract_tests!(fresh);

fn phone(e164: &str) -> PhoneNumber {
    PhoneNumber::from_e164(e164).expect("canonical")
}

fn accepted(outcome: EnqueueOutcome) -> u64 {
    match outcome {
        EnqueueOutcome::Accepted { id } => id,
        EnqueueOutcome::Duplicate => panic!("expected Accepted"),
    }
}

#[tokio::test]
async fn reopening_keeps_everything_but_leases_and_locks() {
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().join(DB_FILE);
    let owner = OwnerEntry {
        customer_id: Some(CustomerId(42)),
        manager_id: Some(ManagerId(7)),
    };
    let busy = ManagerState {
        status: ManagerStatus::Busy,
        online: Some(true),
    };
    let (leased, delayed, dead, waiting);
    {
        let store = EmbeddedStore::open(&path).expect("open");
        store.set_raw("k:forever", b"1", None).await.expect("set");
        store.set_raw("k:ttl", b"2", Some(LONG)).await.expect("set");
        // A number lock and a reconcile lease a killed process held.
        let number_lock = keys::number_lock(&phone("+380981234567"));
        for lock in [number_lock.as_str(), &keys::reconcile_lease("p1")] {
            assert!(
                store
                    .set_raw_if_absent(lock, b"owner-token", Some(LONG))
                    .await
                    .expect("lock")
            );
        }
        store.next_id("seq").await.expect("next");
        store
            .put_owner(&phone("+380981234567"), owner, LONG)
            .await
            .expect("put");
        store
            .put_owner(&phone("+380501112233"), OwnerEntry::NEGATIVE, LONG)
            .await
            .expect("put");
        store
            .set_manager_state(ManagerId(7), busy)
            .await
            .expect("set");
        store.quarantine("bad", None, "raw").await.expect("q");

        leased = accepted(store.enqueue("d:1", LONG, "a", b"1").await.expect("enq"));
        delayed = accepted(store.enqueue("d:2", LONG, "b", b"2").await.expect("enq"));
        dead = accepted(store.enqueue("d:3", LONG, "c", b"3").await.expect("enq"));
        waiting = accepted(store.enqueue("d:4", LONG, "a", b"4").await.expect("enq"));
        let claimed: Vec<_> = [
            store.claim_next(LONG).await,
            store.claim_next(LONG).await,
            store.claim_next(LONG).await,
        ]
        .into_iter()
        .map(|t| t.expect("claim").expect("task").lease())
        .collect();
        assert_eq!(
            claimed.iter().map(|l| l.id).collect::<Vec<_>>(),
            [leased, delayed, dead]
        );
        store
            .reschedule(claimed[1], LONG, "down")
            .await
            .expect("resch");
        store
            .dead_letter(claimed[2], "bad content")
            .await
            .expect("dead");
        // `leased` stays leased when the store goes away.
    }

    let store = EmbeddedStore::open(&path).expect("reopen");
    assert_eq!(
        store.get_raw("k:forever").await.expect("get").as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(
        store.get_raw("k:ttl").await.expect("get").as_deref(),
        Some(&b"2"[..])
    );
    // Only one process opens the file: the locks of the one before are dead, free at once.
    for lock in [
        keys::number_lock(&phone("+380981234567")),
        keys::reconcile_lease("p1"),
    ] {
        assert_eq!(store.get_raw(&lock).await.expect("get"), None, "{lock}");
        assert!(
            store
                .set_raw_if_absent(&lock, b"new-owner", Some(LONG))
                .await
                .expect("lock")
        );
    }
    assert_eq!(store.next_id("seq").await.expect("next"), 2);
    assert_eq!(
        store.get_owner(&phone("+380981234567")).await.expect("get"),
        Some(owner)
    );
    assert_eq!(
        store.get_owner(&phone("+380501112233")).await.expect("get"),
        Some(OwnerEntry::NEGATIVE)
    );
    assert_eq!(
        store.get_manager_state(ManagerId(7)).await.expect("get"),
        Some(busy)
    );
    assert_eq!(store.list_quarantine(10).await.expect("q").len(), 1);

    assert_eq!(store.queue_depth().await.expect("depth"), 3);
    assert_eq!(store.dead_letter_count().await.expect("count"), 1);
    assert_eq!(
        store.enqueue("d:1", LONG, "a", b"1").await.expect("enq"),
        EnqueueOutcome::Duplicate,
        "dedupe keys survive"
    );
    // The lease died with the process: the task is claimable again, and its group-mate
    // still waits behind it. The rescheduled task keeps its delay.
    let again = store.claim_next(LONG).await.expect("claim").expect("task");
    assert_eq!(again.id, leased);
    assert!(store.claim_next(LONG).await.expect("claim").is_none());
    store.complete(again.lease()).await.expect("complete");
    let next = store.claim_next(LONG).await.expect("claim").expect("task");
    assert_eq!(next.id, waiting);
    let d = store.list_queue(10).await.expect("list");
    let rescheduled = d.iter().find(|t| t.id == delayed).expect("delayed task");
    assert_eq!(
        (rescheduled.attempt, rescheduled.last_error.as_deref()),
        (1, Some("down"))
    );
    assert!(store.replay_dead_letter(dead).await.expect("replay"));
    let new_id = accepted(store.enqueue("d:5", LONG, "e", b"5").await.expect("enq"));
    assert!(new_id > waiting, "ids never repeat after a reopen");
}

/// Environment variable that turns [`kill9_child_helper`] into the child of
/// [`acknowledged_enqueues_survive_kill_9`]: the store file to enqueue into.
const KILL9_DB_ENV: &str = "CALLGATE_TEST_KILL9_DB";
/// Acknowledgements the parent reads before it kills the child.
const KILL9_AFTER_ACKS: usize = 200;
/// The child gives up after this many, should the parent never kill it.
const KILL9_CHILD_MAX: u64 = 200_000;

/// A volatile write (no fsync of its own) is kept by a clean close (redb makes every commit
/// durable as it closes). After a crash, at most the last `VOLATILE_FLUSH` of them are lost:
/// not tested here (it would take a kill -9 timed against the writer's flush).
#[tokio::test]
async fn volatile_writes_are_kept_across_a_clean_close() {
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().join(DB_FILE);
    {
        let store = EmbeddedStore::open(&path).expect("open");
        store
            .set_raw_volatile("v:kept", b"decision", Some(LONG))
            .await
            .expect("set volatile");
        store
            .append_list_volatile("v:trail", b"step", LONG)
            .await
            .expect("append volatile");
    }
    let store = EmbeddedStore::open(&path).expect("reopen");
    assert_eq!(
        store.get_raw("v:kept").await.expect("get").as_deref(),
        Some(&b"decision"[..])
    );
    assert_eq!(
        store.read_list("v:trail", 10).await.expect("read"),
        [b"step".to_vec()]
    );
}

/// Not a test: the child process of [`acknowledged_enqueues_survive_kill_9`], which runs it
/// with `--ignored --exact` and [`KILL9_DB_ENV`] set. It enqueues from 16 concurrent tasks
/// and prints `ACK <id>` after each acknowledged enqueue, until killed. Ignored, so a plain
/// `cargo test` neither runs it nor counts it as passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "the child process of acknowledged_enqueues_survive_kill_9, not a test"]
async fn kill9_child_helper() {
    let path = std::env::var_os(KILL9_DB_ENV).unwrap_or_else(|| {
        panic!("kill9_child_helper is run by acknowledged_enqueues_survive_kill_9 (it needs {KILL9_DB_ENV})")
    });
    let store = Arc::new(EmbeddedStore::open(std::path::Path::new(&path)).expect("open"));
    let workers: Vec<_> = (0..16u64)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..KILL9_CHILD_MAX / 16 {
                    let key = format!("dedupe:kill9:{w}:{i}");
                    let group = format!("call-{}", i % 8);
                    let id = accepted(
                        store
                            .enqueue(&key, LONG, &group, key.as_bytes())
                            .await
                            .expect("enqueue"),
                    );
                    println!("ACK {id}");
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
}

/// Runs the ignored test `name` of this binary as a child process with `env` = `path`, its
/// standard output piped to the caller.
fn spawn_child_helper(
    name: &str,
    env: &str,
    path: &std::path::Path,
) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(env, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    (child, stdout)
}

#[test]
fn acknowledged_enqueues_survive_kill_9() {
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().join(DB_FILE);
    let (mut child, mut stdout) = spawn_child_helper("kill9_child_helper", KILL9_DB_ENV, &path);
    let mut acked = BTreeSet::new();
    let mut killed = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = stdout.read_until(b'\n', &mut line).expect("read child");
        if n == 0 {
            break;
        }
        // A line cut by the kill has no newline: it was never fully acknowledged to us.
        if let Some(id) = line
            .strip_suffix(b"\n")
            .and_then(|l| std::str::from_utf8(l).ok())
            .and_then(|l| l.strip_prefix("ACK "))
        {
            acked.insert(id.parse::<u64>().expect("task id"));
        }
        if !killed && acked.len() >= KILL9_AFTER_ACKS {
            child.kill().expect("SIGKILL the child");
            killed = true;
        }
    }
    let status = child.wait().expect("wait child");
    assert!(
        killed,
        "the child ended by itself ({status}) before {KILL9_AFTER_ACKS} acks"
    );
    assert!(!status.success(), "the child was killed, not finished");

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let store = EmbeddedStore::open(&path).expect("reopen after kill -9");
        let stored: BTreeSet<u64> = store
            .list_queue(usize::MAX)
            .await
            .expect("list")
            .into_iter()
            .map(|t| t.id)
            .collect();
        println!(
            "kill -9: {} acknowledged, {} found after reopen",
            acked.len(),
            stored.len()
        );
        let lost: Vec<&u64> = acked.difference(&stored).collect();
        assert!(
            lost.is_empty(),
            "{} of {} acknowledged tasks lost: {lost:?}",
            lost.len(),
            acked.len()
        );
        assert_eq!(
            store.queue_depth().await.expect("depth"),
            stored.len() as u64,
            "the queue index matches the file"
        );
        // Every task is claimable after the crash (leases do not survive); one per group at
        // a time, so complete nothing and count the heads: 8 groups.
        let mut claimed = 0;
        while store.claim_next(LONG).await.expect("claim").is_some() {
            claimed += 1;
        }
        assert_eq!(claimed, stored.len().min(8));
    });
}

/// Where [`volatile_writes_child_helper`] keeps its store.
const VOLATILE_DB_ENV: &str = "CALLGATE_VOLATILE_TEST_DB";
/// How long the child writes before it is killed, ms of its own clock.
const VOLATILE_RUN_MS: u64 = 4_000;
/// What a kill -9 may lose: volatile writes of the last `VOLATILE_FLUSH` (1 s), plus the
/// flush's own fsync, which a busy CI disk may take a while over; anything older than this
/// before the last write read must survive.
const VOLATILE_LOSS_BOUND_MS: u64 = 2_500;

/// Not a test: the child process of [`volatile_writes_are_durable_within_a_second_of_a_kill_9`].
/// It sets `v:<i>` with volatile writes only, one every 20 ms, printing `SET <i> <ms since its
/// start>` after each is answered, until killed.
#[tokio::test]
#[ignore = "the child process of volatile_writes_are_durable_within_a_second_of_a_kill_9, not a test"]
async fn volatile_writes_child_helper() {
    let path = std::env::var_os(VOLATILE_DB_ENV).unwrap_or_else(|| {
        panic!("volatile_writes_child_helper is run by volatile_writes_are_durable_within_a_second_of_a_kill_9 (it needs {VOLATILE_DB_ENV})")
    });
    let store = EmbeddedStore::open(std::path::Path::new(&path)).expect("open");
    let started = std::time::Instant::now();
    for i in 0_u64.. {
        store
            .set_raw_volatile(&format!("v:{i}"), b"decision", Some(LONG))
            .await
            .expect("set volatile");
        println!("SET {i} {}", started.elapsed().as_millis());
        // Pacing of the workload, not synchronisation: the parent reads the lines.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// After a kill -9, every volatile write answered more than [`VOLATILE_LOSS_BOUND_MS`] before
/// the last one the child reported is in the file: the writer flushes them within a second
/// (plus the fsync) even when no durable write comes.
#[test]
fn volatile_writes_are_durable_within_a_second_of_a_kill_9() {
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().join(DB_FILE);
    let (mut child, mut stdout) =
        spawn_child_helper("volatile_writes_child_helper", VOLATILE_DB_ENV, &path);
    // (write, ms of the child's clock when it was answered)
    let mut answered: Vec<(u64, u64)> = Vec::new();
    let mut killed = false;
    let mut line = String::new();
    loop {
        line.clear();
        if stdout.read_line(&mut line).expect("read child") == 0 {
            break;
        }
        let mut fields = line
            .trim_end()
            .strip_prefix("SET ")
            .unwrap_or("")
            .split(' ');
        if let (Some(Ok(i)), Some(Ok(ms))) = (
            fields.next().map(str::parse::<u64>),
            fields.next().map(str::parse::<u64>),
        ) && line.ends_with('\n')
        {
            answered.push((i, ms));
            if !killed && ms >= VOLATILE_RUN_MS {
                child.kill().expect("SIGKILL the child");
                killed = true;
            }
        }
    }
    let status = child.wait().expect("wait child");
    assert!(killed, "the child ended by itself ({status})");
    let last_ms = answered.last().map_or(0, |&(_, ms)| ms);
    let must_survive: Vec<u64> = answered
        .iter()
        .filter(|&&(_, ms)| ms + VOLATILE_LOSS_BOUND_MS < last_ms)
        .map(|&(i, _)| i)
        .collect();
    assert!(
        must_survive.len() > 10,
        "the child wrote too little before the kill: {answered:?}"
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let store = EmbeddedStore::open(&path).expect("reopen after kill -9");
        let mut lost = Vec::new();
        for i in &must_survive {
            if store.get_raw(&format!("v:{i}")).await.expect("get").is_none() {
                lost.push(*i);
            }
        }
        println!(
            "kill -9 with volatile writes only: {} answered, {} older than {VOLATILE_LOSS_BOUND_MS} ms, {} of them lost",
            answered.len(),
            must_survive.len(),
            lost.len()
        );
        assert!(
            lost.is_empty(),
            "volatile writes older than {VOLATILE_LOSS_BOUND_MS} ms lost by a kill -9: {lost:?}"
        );
    });
}
