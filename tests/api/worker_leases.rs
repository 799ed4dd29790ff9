//! Work ownership inside the worker (SPEC §6, issue 14 item 6; `Worker::try_execute_task`):
//! the heartbeat that renews a running task's lease, the task deadline, and a task whose
//! lease was taken over (`ExecutionOutcome::TaskAbandoned`).
//!
//! The CRM is the fake retailCRM with a [`Fault::Hang`] on the customer search, the first
//! CRM request of every task: a task runs exactly as long as the test wants. The store is
//! the app's embedded store behind [`Flaky`], which can answer a claim late and fail lease
//! renewals. Leases count from the claim *in the store*, the task deadline from the moment
//! the worker has the task: a claim answered late ([`SLOW_CLAIM`], [`LATE_CLAIM`]) gives a
//! lease that, not renewed, runs out while the task is still within its deadline — the case the heartbeat is
//! for (without the delay a task is stopped at 4/5 of its lease before the lease can run
//! out, see `Worker::task_deadline`). Leases are real time (the store's clock is
//! `std::time::Instant`), [`LEASE`] = 3 s (the configured minimum); every wait is bounded
//! polling (`eventually`).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use callgate::{
    domain::{
        call_log::{CallLogEntry, CallLogFilter, CallLogPosition, LoggedCall},
        manager::{ManagerId, ManagerState},
        phone_number::PhoneNumber,
    },
    store::{
        CallLog, DeadLetter, EnqueueOutcome, KeyValue, Lease, ManagerStates, OwnerEntry,
        OwnerIndex, QuarantineEntry, Queue, QueuedTask, Store, StoreError,
    },
    testing::fake_retailcrm::{Fault, FaultRule},
    worker::{ExecutionOutcome, Worker, WorkerConfig, WorkerDeps},
};

use crate::{
    calls::{after_call, tracking},
    helpers::{TestApp, eventually, manual_worker, spawn_app_with_crm, start_fake_crm},
};

/// The lease of the workers under test (heartbeat every 1 s, deadline 2.4 s).
const LEASE: Duration = Duration::from_secs(3);
/// How late [`Flaky`] answers a claim in the heartbeat test: the first beat (1 s after the
/// worker has the task) comes before the lease the store granted runs out (0.5 s later),
/// which is before the task's deadline (0.9 s later again).
const SLOW_CLAIM: Duration = Duration::from_millis(1500);
/// How late [`Flaky`] answers a claim in the take-over tests: the lease runs out 0.5 s after
/// the worker has the task, before its first heartbeat and long before its deadline.
const LATE_CLAIM: Duration = Duration::from_millis(2500);
/// `crm.timeout_ms` of the test apps (the default): a hung request ends there at the latest.
const CRM_TIMEOUT: Duration = Duration::from_secs(5);
/// The customer search every task of a caller starts with.
const SEARCH: &str = "/api/v5/customers";

/// The app's store, with a claim that can be answered late and renewals that can fail as if
/// the store could not be reached.
struct Flaky {
    inner: Arc<dyn Store>,
    claim_delay: Duration,
    fail_renewals: AtomicBool,
    renewed: AtomicUsize,
    /// The lease handed out by the last claim, and when the store granted it.
    claimed: Mutex<Option<(Lease, Instant)>>,
}

impl Flaky {
    fn new(inner: Arc<dyn Store>, claim_delay: Duration, fail_renewals: bool) -> Arc<Self> {
        Arc::new(Flaky {
            inner,
            claim_delay,
            fail_renewals: AtomicBool::new(fail_renewals),
            renewed: AtomicUsize::new(0),
            claimed: Mutex::new(None),
        })
    }

    fn claimed(&self) -> Option<(Lease, Instant)> {
        *self.claimed.lock().unwrap()
    }
}

#[async_trait]
impl KeyValue for Flaky {
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_raw(key).await
    }
    async fn set_raw(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        self.inner.set_raw(key, value, ttl).await
    }
    async fn set_raw_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        self.inner.set_raw_if_absent(key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
    async fn scan_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.scan_prefix(prefix, limit).await
    }
    async fn next_id(&self, sequence: &str) -> Result<u64, StoreError> {
        self.inner.next_id(sequence).await
    }
    async fn append_list(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.inner.append_list(key, value, ttl).await
    }
    async fn read_list(&self, key: &str, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        self.inner.read_list(key, limit).await
    }
    async fn delete_if_equals(&self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        self.inner.delete_if_equals(key, value).await
    }
    async fn expire_if_equals(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.inner.expire_if_equals(key, value, ttl).await
    }
}

#[async_trait]
impl OwnerIndex for Flaky {
    async fn get_owner(&self, phone: &PhoneNumber) -> Result<Option<OwnerEntry>, StoreError> {
        self.inner.get_owner(phone).await
    }
    async fn put_owner(
        &self,
        phone: &PhoneNumber,
        entry: OwnerEntry,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.inner.put_owner(phone, entry, ttl).await
    }
}

#[async_trait]
impl ManagerStates for Flaky {
    async fn get_manager_state(&self, id: ManagerId) -> Result<Option<ManagerState>, StoreError> {
        self.inner.get_manager_state(id).await
    }
    async fn set_manager_state(
        &self,
        id: ManagerId,
        state: ManagerState,
    ) -> Result<(), StoreError> {
        self.inner.set_manager_state(id, state).await
    }
}

#[async_trait]
impl CallLog for Flaky {
    async fn append_call_log(&self, entry: &CallLogEntry) -> Result<(), StoreError> {
        self.inner.append_call_log(entry).await
    }
    async fn last_talked(&self, phone: &PhoneNumber) -> Result<Option<ManagerId>, StoreError> {
        self.inner.last_talked(phone).await
    }
    async fn query_call_log(
        &self,
        filter: &CallLogFilter,
        before: Option<CallLogPosition>,
        limit: usize,
    ) -> Result<Vec<LoggedCall>, StoreError> {
        self.inner.query_call_log(filter, before, limit).await
    }
}

#[async_trait]
impl Queue for Flaky {
    async fn enqueue(
        &self,
        dedupe_key: &str,
        dedupe_ttl: Duration,
        group: &str,
        payload: &[u8],
    ) -> Result<EnqueueOutcome, StoreError> {
        self.inner
            .enqueue(dedupe_key, dedupe_ttl, group, payload)
            .await
    }
    /// Claims at once, answers [`Flaky::claim_delay`] later.
    async fn claim_next(&self, lease: Duration) -> Result<Option<QueuedTask>, StoreError> {
        let task = self.inner.claim_next(lease).await?;
        if let Some(t) = &task {
            *self.claimed.lock().unwrap() = Some((t.lease(), Instant::now()));
            let answered_at = tokio::time::Instant::now() + self.claim_delay;
            // A late answer, not synchronization: the lease runs meanwhile.
            tokio::time::sleep_until(answered_at).await;
        }
        Ok(task)
    }
    async fn renew_lease(&self, lease: Lease, duration: Duration) -> Result<(), StoreError> {
        if self.fail_renewals.load(Ordering::SeqCst) {
            return Err(StoreError::WriterGone);
        }
        self.inner.renew_lease(lease, duration).await?;
        self.renewed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn complete(&self, lease: Lease) -> Result<(), StoreError> {
        self.inner.complete(lease).await
    }
    async fn reschedule(
        &self,
        lease: Lease,
        delay: Duration,
        error: &str,
    ) -> Result<(), StoreError> {
        self.inner.reschedule(lease, delay, error).await
    }
    async fn postpone(&self, lease: Lease, delay: Duration) -> Result<(), StoreError> {
        self.inner.postpone(lease, delay).await
    }
    async fn dead_letter(&self, lease: Lease, reason: &str) -> Result<(), StoreError> {
        self.inner.dead_letter(lease, reason).await
    }
    async fn retry_all_now(&self) -> Result<u64, StoreError> {
        self.inner.retry_all_now().await
    }
    async fn queue_depth(&self) -> Result<u64, StoreError> {
        self.inner.queue_depth().await
    }
    async fn list_queue(&self, limit: usize) -> Result<Vec<QueuedTask>, StoreError> {
        self.inner.list_queue(limit).await
    }
    async fn list_dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.inner.list_dead_letters(limit).await
    }
    async fn dead_letter_count(&self) -> Result<u64, StoreError> {
        self.inner.dead_letter_count().await
    }
    async fn replay_dead_letter(&self, id: u64) -> Result<bool, StoreError> {
        self.inner.replay_dead_letter(id).await
    }
    async fn discard_dead_letter(&self, id: u64) -> Result<bool, StoreError> {
        self.inner.discard_dead_letter(id).await
    }
    async fn quarantine(
        &self,
        reason: &str,
        content_type: Option<&str>,
        raw: &str,
    ) -> Result<u64, StoreError> {
        self.inner.quarantine(reason, content_type, raw).await
    }
    async fn list_quarantine(&self, limit: usize) -> Result<Vec<QuarantineEntry>, StoreError> {
        self.inner.list_quarantine(limit).await
    }
}

/// A worker like the app's, on `store`, with a [`LEASE`]-long lease.
fn worker_on(app: &TestApp, store: Arc<dyn Store>) -> Arc<Worker> {
    let w = &app.worker;
    Arc::new(Worker::new(
        WorkerDeps {
            store,
            crm: w.crm.clone(),
            directory: w.directory.clone(),
            metrics: w.metrics.clone(),
            wakeup: w.wakeup.clone(),
            rules: w.rules.clone(),
            sync: None,
        },
        WorkerConfig {
            normalizer: w.normalizer.clone(),
            aliases: w.aliases.clone(),
            planner: w.planner.clone(),
            closed_status_groups: w.closed_status_groups.clone(),
            schedule: w.schedule,
            lease: LEASE,
            owner_ttl: w.owner_ttl,
            calls_upload_batch: 1,
            calls_upload_flush: Duration::from_millis(1),
            mirror_max_lag: Duration::ZERO,
        },
    ))
}

/// An app with one queued missed call whose customer search hangs.
async fn app_with_a_hanging_task() -> TestApp {
    let crm = start_fake_crm().await;
    let app = spawn_app_with_crm(&crm, |s| {
        manual_worker(s);
        tracking(s);
    })
    .await;
    let r = app
        .post_webhook(&after_call("lease-1", "0671234567", "NO ANSWER", -1))
        .await;
    assert_eq!(r.status(), 200);
    crm.add_fault_rule(FaultRule::new(Fault::Hang).on_path(SEARCH));
    app
}

/// Requests of `path` the fake has answered or holds.
fn searches(app: &TestApp) -> usize {
    app.fake()
        .requests()
        .iter()
        .filter(|r| r.path == SEARCH)
        .count()
}

/// Starts a worker on `store` taking the app's task, and waits until the task hangs in its
/// customer search.
async fn run_until_it_hangs(
    app: &TestApp,
    store: Arc<Flaky>,
) -> tokio::task::JoinHandle<ExecutionOutcome> {
    let worker = worker_on(app, store);
    let running =
        tokio::spawn(async move { worker.try_execute_task().await.expect("store reachable") });
    eventually(
        Duration::from_secs(10),
        "the task's search is in flight",
        || std::future::ready((searches(app) == 1).then_some(())),
    )
    .await;
    running
}

#[tokio::test]
async fn the_heartbeat_keeps_a_running_task_leased_past_its_first_lease() {
    let app = app_with_a_hanging_task().await;
    let store = Flaky::new(app.state.store.clone(), SLOW_CLAIM, false);
    // The task runs (its customer search hangs) past the end of the lease the store granted.
    let running = run_until_it_hangs(&app, store.clone()).await;
    let (_, granted_at) = store.claimed().expect("claimed");
    eventually(
        Duration::from_secs(10),
        "the lease first granted has run out and the heartbeat renewed it",
        || {
            std::future::ready(
                (granted_at.elapsed() > LEASE && store.renewed.load(Ordering::SeqCst) >= 1)
                    .then_some(()),
            )
        },
    )
    .await;
    assert!(!running.is_finished(), "the task is still running");

    // Another worker cannot take it.
    let rival = app.state.store.claim_next(LEASE).await.expect("claim");
    assert_eq!(rival, None, "a renewed lease is not handed out again");

    app.fake().clear_faults();
    let outcome = running.await.expect("the task ends");
    assert_eq!(outcome, ExecutionOutcome::TaskCompleted);
    assert_eq!(app.fake().tasks().len(), 1, "the call-back task, once");
    // Its call record, a task of its own, follows.
    app.drain_queue(Duration::from_secs(10)).await;
    assert_eq!(app.fake().calls().len(), 1);
}

#[tokio::test]
async fn a_task_over_its_deadline_is_stopped_and_rescheduled_not_lost() {
    let app = app_with_a_hanging_task().await;
    let worker = worker_on(&app, app.state.store.clone());

    let started = Instant::now();
    let outcome = worker.try_execute_task().await.expect("store reachable");
    let took = started.elapsed();
    assert_eq!(outcome, ExecutionOutcome::TaskRetried);
    assert!(
        took >= worker.task_deadline() && took < CRM_TIMEOUT,
        "stopped at its deadline ({:?}), not at the CRM's timeout: took {took:?}",
        worker.task_deadline()
    );
    let queued = app.state.store.list_queue(10).await.unwrap();
    assert_eq!(queued.len(), 1, "still queued: {queued:?}");
    assert_eq!(queued[0].attempt, 1);
    assert!(
        queued[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("deadline")),
        "{queued:?}"
    );
    assert!(app.fake().tasks().is_empty(), "nothing applied yet");

    // Once the CRM answers, the rescheduled task goes through.
    app.fake().clear_faults();
    let store = app.state.store.clone();
    eventually(Duration::from_secs(10), "the task is applied", || {
        let (worker, store) = (worker.clone(), store.clone());
        async move {
            worker.run_until_idle().await.expect("store reachable");
            (store.queue_depth().await.unwrap() == 0).then_some(())
        }
    })
    .await;
    assert_eq!(app.fake().tasks().len(), 1, "the call-back task, once");
}

/// Waits until the lease the store granted to `store`'s claim ran out unrenewed and claims
/// the task from the store directly, as another worker would: the very task `store` handed
/// out, under a new lease.
async fn take_over(app: &TestApp, store: &Flaky) -> QueuedTask {
    let inner = app.state.store.clone();
    let task = eventually(
        Duration::from_secs(10),
        "another worker takes the task over",
        || {
            let inner = inner.clone();
            async move { inner.claim_next(LEASE).await.expect("claim") }
        },
    )
    .await;
    let (first, _) = store.claimed().expect("claimed");
    assert_eq!(task.id, first.id, "the same task");
    assert_ne!(task.lease(), first, "under a new lease");
    task
}

#[tokio::test]
async fn a_task_whose_lease_was_taken_over_is_abandoned_at_the_next_heartbeat() {
    let app = app_with_a_hanging_task().await;
    let store = Flaky::new(app.state.store.clone(), LATE_CLAIM, true);
    let running = run_until_it_hangs(&app, store.clone()).await;
    let rival = take_over(&app, &store).await;

    // The store is reachable again: the next renewal learns the lease is gone.
    store.fail_renewals.store(false, Ordering::SeqCst);
    let outcome = running.await.expect("the task ends");
    assert_eq!(outcome, ExecutionOutcome::TaskAbandoned);
    assert!(
        app.fake().tasks().is_empty(),
        "the abandoned run applied nothing"
    );

    // The stale lease can settle nothing; the new holder's can.
    let (stale, _) = store.claimed().expect("claimed");
    let inner = &app.state.store;
    assert!(matches!(
        inner.complete(stale).await,
        Err(StoreError::LeaseLost(_))
    ));
    assert!(matches!(
        inner.reschedule(stale, Duration::ZERO, "stale").await,
        Err(StoreError::LeaseLost(_))
    ));
    inner
        .complete(rival.lease())
        .await
        .expect("the new holder completes it");
    assert_eq!(inner.queue_depth().await.unwrap(), 0);
}

#[tokio::test]
async fn a_task_that_ends_after_its_lease_was_taken_over_stores_no_outcome() {
    let app = app_with_a_hanging_task().await;
    // The store stays unreachable for renewals: the heartbeat cannot tell the lease is lost.
    let store = Flaky::new(app.state.store.clone(), LATE_CLAIM, true);
    let running = run_until_it_hangs(&app, store.clone()).await;
    let rival = take_over(&app, &store).await;

    // The search answers, the task's next CRM write fails retryably: its reschedule is
    // refused as stale and the task stays with its new holder, attempt unchanged.
    app.fake().set_fault(Fault::Status500);
    let outcome = running.await.expect("the task ends");
    assert_eq!(outcome, ExecutionOutcome::TaskAbandoned);
    assert!(app.fake().tasks().is_empty());
    let inner = &app.state.store;
    let queued = inner.list_queue(10).await.unwrap();
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].attempt, 0, "the stale run rescheduled nothing");
    inner
        .complete(rival.lease())
        .await
        .expect("the new holder completes it");
}
