//! The Redis store: the shared store contract, plus what only a shared medium can show — two
//! `RedisStore`s on one Redis standing in for two callgate instances behind a load balancer.
//!
//! Redis comes from `TEST_REDIS_URL` or is started by this binary (see `support/redis.rs`);
//! every test works under its own random key prefix, deleted when the test ends.

#[path = "support/redis.rs"]
mod redis_support;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use callgate::store::{
    EnqueueOutcome, Queue, Store, StoreError,
    contract::{LONG, SHORT, eventually},
    redis::RedisStore,
};
use redis_support::RedisKeys;

async fn connect(keys: &RedisKeys) -> RedisStore {
    RedisStore::connect(&keys.url, &keys.prefix)
        .await
        .expect("connect to the test Redis")
}

async fn fresh() -> (RedisKeys, Arc<dyn Store>) {
    let keys = RedisKeys::new();
    let store = connect(&keys).await;
    (keys, Arc::new(store))
}

callgate::store_contract_tests!(fresh);

/// Two instances of callgate sharing one Redis (same prefix).
async fn two_instances() -> (RedisKeys, Arc<dyn Store>, Arc<dyn Store>) {
    let keys = RedisKeys::new();
    let a = connect(&keys).await;
    let b = connect(&keys).await;
    (keys, Arc::new(a), Arc::new(b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn set_if_absent_from_two_instances_has_exactly_one_winner() {
    let (_keys, a, b) = two_instances().await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                store
                    .set_raw_if_absent(
                        "lock:number:+380931112233",
                        format!("{i}").as_bytes(),
                        Some(LONG),
                    )
                    .await
                    .expect("set_if_absent")
            })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        if t.await.expect("task") {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
    let seen_by_a = a.get_raw("lock:number:+380931112233").await.expect("get");
    let seen_by_b = b.get_raw("lock:number:+380931112233").await.expect("get");
    assert!(seen_by_a.is_some());
    assert_eq!(seen_by_a, seen_by_b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enqueue_dedupes_across_instances() {
    let (_keys, a, b) = two_instances().await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                store
                    .enqueue("dedupe:ringostat:call-1:end", LONG, "call-1", b"p")
                    .await
                    .expect("enqueue")
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        if let EnqueueOutcome::Accepted { id } = t.await.expect("task") {
            ids.push(id);
        }
    }
    assert_eq!(ids.len(), 1, "exactly one instance stores the event");
    assert_eq!(a.queue_depth().await.expect("depth"), 1);
    assert_eq!(b.queue_depth().await.expect("depth"), 1);
    // The dedupe key is a KV record holding the task id, as in the embedded store.
    assert_eq!(
        b.get_raw("dedupe:ringostat:call-1:end")
            .await
            .expect("get")
            .as_deref(),
        Some(&ids[0].to_be_bytes()[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_claims_from_two_instances_never_share_a_task_or_a_group() {
    const GROUPS: usize = 8;
    const PER_GROUP: usize = 6;
    const WORKERS_PER_INSTANCE: usize = 4;
    let (_keys, a, b) = two_instances().await;
    let mut expected: HashMap<String, Vec<u64>> = HashMap::new();
    for i in 0..PER_GROUP {
        for g in 0..GROUPS {
            let store = if (i + g) % 2 == 0 { &a } else { &b };
            let group = format!("call-{g}");
            let id = match store
                .enqueue(&format!("d:{g}:{i}"), LONG, &group, b"p")
                .await
                .expect("enqueue")
            {
                EnqueueOutcome::Accepted { id } => id,
                EnqueueOutcome::Duplicate => panic!("distinct keys"),
            };
            expected.entry(group).or_default().push(id);
        }
    }

    /// What the workers saw: groups being worked on, every id handed out, per-group order.
    #[derive(Default)]
    struct Seen {
        busy_groups: HashSet<String>,
        handed_out: HashSet<u64>,
        order: HashMap<String, Vec<u64>>,
        violations: Vec<String>,
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let done = Arc::new(AtomicUsize::new(0));
    let total = GROUPS * PER_GROUP;
    let workers: Vec<_> = (0..2 * WORKERS_PER_INSTANCE)
        .map(|w| {
            let store = if w % 2 == 0 { a.clone() } else { b.clone() };
            let seen = seen.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                while done.load(Ordering::SeqCst) < total {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "workers did not finish"
                    );
                    let Some(task) = store.claim_next(LONG).await.expect("claim") else {
                        tokio::task::yield_now().await;
                        continue;
                    };
                    {
                        let mut s = seen.lock().expect("seen");
                        if !s.busy_groups.insert(task.group.clone()) {
                            s.violations
                                .push(format!("two tasks of {} out at once", task.group));
                        }
                        if !s.handed_out.insert(task.id) {
                            s.violations
                                .push(format!("task {} handed out twice", task.id));
                        }
                        s.order.entry(task.group.clone()).or_default().push(task.id);
                    }
                    // Let other workers try to claim while this task is out.
                    tokio::task::yield_now().await;
                    seen.lock().expect("seen").busy_groups.remove(&task.group);
                    store.complete(task.lease()).await.expect("complete");
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    {
        let seen = seen.lock().expect("seen");
        assert!(seen.violations.is_empty(), "{:#?}", seen.violations);
        assert_eq!(seen.handed_out.len(), total);
        assert_eq!(seen.order, expected, "each group in id order");
    }
    assert_eq!(a.queue_depth().await.expect("depth"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_whose_lease_runs_out_on_one_instance_is_claimed_by_the_other() {
    let (_keys, a, b) = two_instances().await;
    let id = match a
        .enqueue("d:lease", LONG, "call-1", b"payload")
        .await
        .expect("enqueue")
    {
        EnqueueOutcome::Accepted { id } => id,
        EnqueueOutcome::Duplicate => panic!("fresh key"),
    };
    let first = a.claim_next(SHORT).await.expect("claim").expect("a task");
    assert_eq!(first.id, id);
    // Instance A "crashes" holding it; B gets it once the lease runs out.
    let again = eventually("B claims the task after A's lease ran out", || async {
        b.claim_next(LONG).await.expect("claim")
    })
    .await;
    assert_eq!((again.id, again.payload.as_slice()), (id, &b"payload"[..]));
    assert!(
        a.claim_next(LONG).await.expect("claim").is_none(),
        "B holds it now"
    );
    // A wakes up late: its lease is gone, so it can change nothing.
    assert!(matches!(
        a.complete(first.lease()).await,
        Err(StoreError::LeaseLost(_))
    ));
    assert_eq!(a.queue_depth().await.expect("depth"), 1);
    b.complete(again.lease()).await.expect("complete");
    assert_eq!(a.queue_depth().await.expect("depth"), 0);
}

#[tokio::test]
async fn key_prefixes_keep_deployments_apart() {
    let (_k1, one) = fresh().await;
    let (_k2, two) = fresh().await;
    one.set_raw("k", b"1", None).await.expect("set");
    one.enqueue("d:1", LONG, "g", b"p").await.expect("enqueue");
    assert_eq!(two.get_raw("k").await.expect("get"), None);
    assert_eq!(two.queue_depth().await.expect("depth"), 0);
    assert!(two.claim_next(LONG).await.expect("claim").is_none());
    assert!(one.claim_next(LONG).await.expect("claim").is_some());
}

#[tokio::test]
async fn a_restarted_instance_finds_the_queue_and_its_leases_in_redis() {
    let keys = RedisKeys::new();
    let (first, second);
    {
        let before = connect(&keys).await;
        first = match before.enqueue("d:1", LONG, "call-1", b"start").await {
            Ok(EnqueueOutcome::Accepted { id }) => id,
            other => panic!("expected Accepted, got {other:?}"),
        };
        second = match before.enqueue("d:2", LONG, "call-1", b"end").await {
            Ok(EnqueueOutcome::Accepted { id }) => id,
            other => panic!("expected Accepted, got {other:?}"),
        };
        let claimed = before
            .claim_next(Duration::from_secs(2))
            .await
            .expect("claim")
            .expect("task");
        assert_eq!(claimed.id, first);
        // The instance goes away holding the lease.
    }
    let after = connect(&keys).await;
    assert_eq!(after.queue_depth().await.expect("depth"), 2);
    assert_eq!(
        after
            .enqueue("d:1", LONG, "call-1", b"start")
            .await
            .expect("enqueue"),
        EnqueueOutcome::Duplicate,
        "dedupe keys are shared state"
    );
    // Unlike the embedded store, the lease is data in Redis: it does not vanish with the
    // instance (2 s is far longer than reconnecting), it runs out.
    assert!(after.claim_next(LONG).await.expect("claim").is_none());
    let again = eventually("the dead instance's lease runs out", || async {
        after.claim_next(LONG).await.expect("claim")
    })
    .await;
    assert_eq!(again.id, first);
    after.complete(again.lease()).await.expect("complete");
    let next = after.claim_next(LONG).await.expect("claim").expect("task");
    assert_eq!((next.id, next.payload.as_slice()), (second, &b"end"[..]));
}
