//! The worker (SPEC §4, §6): takes stored call events ([`task::StoredWebhook`]) from the
//! queue, gathers CRM facts, asks the pure pipeline ([`decide`]: site, routing rule, plan)
//! what to do, and executes the plan against the CRM idempotently. The call log entry is
//! stored as planned.
//!
//! Guarantees and how they are kept:
//! - **Nothing lost**: a task leaves the queue only when its plan is fully applied
//!   (`complete`) or parked with the CRM's reason (`dead_letter`). A running task's short
//!   lease (`worker.lease_secs`) is renewed by a heartbeat every third of it; a crashed
//!   worker's lease runs out and the task runs again; a task running longer than 4/5 of the
//!   lease is abandoned and rescheduled; a worker whose lease was lost stores nothing.
//! - **Nothing doubled**: every executed action is recorded under
//!   `action:<event>:<action key>` with its result; a re-run skips recorded actions and reuses
//!   their ids. A crash between a CRM write and its record is covered by `externalId`s
//!   (customers, orders, uploaded calls): an action marked started is first looked up by its
//!   `externalId`. Tasks have no `externalId` in retailCRM, so a crash in that exact window can
//!   repeat one task — the only remaining gap.
//! - **One customer per number**: events of one client number are processed under a
//!   per-number lock (owner token, renewed by the heartbeat, compare-and-delete), facts included, so two simultaneous calls from a new number make one
//!   customer and the second call sees it (and its open order).
//! - **In order**: the queue hands out one task per call at a time, in arrival order. A
//!   call's record is queued as a task of its own group ([`call_batch`]), so a leg's record
//!   waiting for its batch never holds up the next leg of the call.
//! - **Retries**: retryable CRM errors (network, timeouts, 5xx, 503/429, 403) are retried with
//!   capped exponential backoff and jitter; bad content (validation) is dead-lettered at once.

pub mod call_batch;
pub mod retry;
pub mod task;

use std::{collections::HashSet, sync::Arc, time::Duration};

use chrono::{Local, NaiveDateTime};
use serde::{Deserialize, Serialize};
use tokio::{sync::Notify, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    call_trail,
    crm::{
        Crm, CrmError, CustomerId, NewTask, OrderId, StatusGroups, TaskId, TaskMark, TaskUpdate,
    },
    domain::{
        call::{CallEvent, FieldAliases, PayloadError},
        call_log::TrailKind,
        manager::{ManagerDirectory, ManagerId},
        mirror::{MirrorChange, MirrorCustomer, PhoneKey},
        orders_mirror::{MirrorOrder, OrderChange},
        phone_number::{PhoneNormalizer, PhoneNumber},
        plan::{
            Action, CrmFacts, CustomerFacts, OpenCallback, OrderFacts, OtherLegs, PlannerConfig,
            Resolved, TaskPurpose, UnresolvedRef, decide, resolve_parties,
        },
    },
    metrics::Metrics,
    rules::RuleBook,
    store::{KeyValueExt, OwnerEntry, QueuedTask, Store, StoreError, keys},
    sync::{Syncer, mirror::SharedMirror},
};
use call_batch::{CallBatcher, Settled};
use retry::RetrySchedule;
use task::{StoredCallRecord, StoredTask, StoredWebhook};

/// How long executed-action records and call-leg records are kept.
pub const ACTION_TTL: Duration = Duration::from_secs(14 * 24 * 3600);
/// At most one S8 "check this number" task per unknown tracking number this often.
pub const TRACKING_CHECK_EVERY: Duration = Duration::from_secs(24 * 3600);
/// How long a worker waits for a number's lock before putting the task back.
pub const NUMBER_LOCK_WAIT: Duration = Duration::from_secs(10);
/// How long the order status reference is cached.
pub const STATUS_CACHE_TTL: Duration = Duration::from_secs(600);
/// At most this many customers with one number are examined (most recent first).
pub const MAX_CUSTOMERS_PER_NUMBER: usize = 3;
/// An idle worker re-checks the queue at least this often (delayed retries become due).
pub const IDLE_POLL: Duration = Duration::from_millis(500);

/// What one call of [`Worker::try_execute_task`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionOutcome {
    /// A task's plan was applied and the task removed.
    TaskCompleted,
    /// A task failed retryably and was put back with a delay.
    TaskRetried,
    /// A task failed for good and was parked with the reason.
    TaskDeadLettered,
    /// No task was due.
    EmptyQueue,
    /// The task's lease was lost while it ran (it ran out, another worker took the task):
    /// nothing of its outcome was stored; its new holder runs it.
    TaskAbandoned,
    /// A call record's task went to the batcher, still leased: it completes once its batch
    /// is uploaded ([`call_batch`]).
    RecordHeld,
}

/// Why processing one task stopped.
#[derive(Debug, thiserror::Error)]
enum ProcessError {
    #[error(transparent)]
    Crm(#[from] CrmError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the stored event cannot be decoded: {0}")]
    Undecodable(#[source] serde_json::Error),
    #[error("the stored event cannot be read: {0}")]
    Unreadable(#[source] PayloadError),
    #[error(transparent)]
    Plan(#[from] UnresolvedRef),
    #[error("another worker holds the lock of this number")]
    Busy,
}

/// A number lock this worker holds: its key and the owner token stored in it.
#[derive(Debug, Clone)]
struct NumberLock {
    key: String,
    token: String,
}

/// Result of an executed action, recorded under its dedupe key.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
struct ActionRecord {
    /// `false` while the CRM call is in flight ("started").
    done: bool,
    customer: Option<CustomerId>,
    order: Option<OrderId>,
    task: Option<TaskId>,
}

/// The call-back task of one caller, `callback:<e164>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CallbackRecord {
    task_id: TaskId,
    count: u32,
    last_missed_at: NaiveDateTime,
    last_call_id: String,
}

/// What other legs of a call did, `legs:<call id>`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LegsRecord {
    answered: bool,
    talkers: Vec<ManagerId>,
}

/// The worker's collaborators (shared with the HTTP side). Built once in `startup`.
pub struct WorkerDeps {
    pub store: Arc<dyn Store>,
    pub crm: Arc<dyn Crm>,
    pub directory: Arc<ManagerDirectory>,
    pub metrics: Arc<Metrics>,
    /// Notified when an event is queued.
    pub wakeup: Arc<Notify>,
    /// Routing rules; the first match gives the planner its [`RuleActions`].
    pub rules: Arc<RuleBook>,
    /// The owner and orders mirrors (`[sync]` on): the facts come from them; the customers
    /// and orders the worker creates go into them at once (stored and shared with the other
    /// instances: [`Syncer::own_writes`]), the CRM's history repeats them later.
    /// CRM's history brings them to every other instance within a poll.
    pub sync: Option<Arc<Syncer>>,
}

/// The worker's configuration, from the validated [`crate::config::Config`].
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub normalizer: PhoneNormalizer,
    /// Webhook field names.
    pub aliases: Arc<FieldAliases>,
    pub planner: PlannerConfig,
    /// Status groups whose orders are closed.
    pub closed_status_groups: HashSet<String>,
    pub schedule: RetrySchedule,
    /// How long a claimed task stays invisible to other workers.
    pub lease: Duration,
    /// TTL of the owner index entries the worker refreshes.
    pub owner_ttl: Duration,
    /// Most calls per `telephony/calls/upload` (`crm.calls_upload_batch`).
    pub calls_upload_batch: usize,
    /// A batch of call records is sent at the latest this long after its first call.
    pub calls_upload_flush: Duration,
    /// The facts come from the mirrors only while their history was read to its end within
    /// this long ([`SharedMirror::facts_fresh`]); otherwise the CRM is asked.
    pub mirror_max_lag: Duration,
}

/// Everything the worker needs. Built once in `startup`.
pub struct Worker {
    pub store: Arc<dyn Store>,
    pub crm: Arc<dyn Crm>,
    pub directory: Arc<ManagerDirectory>,
    pub normalizer: PhoneNormalizer,
    pub aliases: Arc<FieldAliases>,
    pub planner: PlannerConfig,
    pub closed_status_groups: HashSet<String>,
    pub schedule: RetrySchedule,
    pub lease: Duration,
    pub owner_ttl: Duration,
    pub metrics: Arc<Metrics>,
    pub wakeup: Arc<Notify>,
    /// Routing rules; the first match gives the planner its actions ([`decide`]).
    pub rules: Arc<RuleBook>,
    sync: Option<Arc<Syncer>>,
    mirror_max_lag: Duration,
    statuses: tokio::sync::Mutex<Option<(tokio::time::Instant, StatusGroups)>>,
    /// Call records on their way to `telephony/calls/upload`, in batches.
    calls: CallBatcher,
}

/// A settle whose lease ran out is not a failure: the task's new holder runs it again.
fn lease_lost_is_abandoned(
    outcome: Result<ExecutionOutcome, StoreError>,
) -> Result<ExecutionOutcome, StoreError> {
    match outcome {
        Err(StoreError::LeaseLost(id)) => {
            tracing::warn!(
                task = id,
                "Task's lease ran out before its outcome was stored; its new holder runs it again."
            );
            Ok(ExecutionOutcome::TaskAbandoned)
        }
        other => other,
    }
}

fn local_now() -> NaiveDateTime {
    Local::now().naive_local()
}

impl Worker {
    pub fn new(deps: WorkerDeps, config: WorkerConfig) -> Self {
        let WorkerDeps {
            store,
            crm,
            directory,
            metrics,
            wakeup,
            rules,
            sync,
        } = deps;
        let WorkerConfig {
            normalizer,
            aliases,
            planner,
            closed_status_groups,
            schedule,
            lease,
            owner_ttl,
            calls_upload_batch,
            calls_upload_flush,
            mirror_max_lag,
        } = config;
        let calls = CallBatcher::new(
            crm.clone(),
            store.clone(),
            calls_upload_batch,
            calls_upload_flush,
            lease,
        );
        Worker {
            store,
            crm,
            directory,
            normalizer,
            aliases,
            planner,
            closed_status_groups,
            schedule,
            lease,
            owner_ttl,
            metrics,
            wakeup,
            rules,
            sync,
            mirror_max_lag,
            statuses: tokio::sync::Mutex::new(None),
            calls,
        }
    }

    /// Runs `concurrency` loops and the call batcher until `token` is cancelled; a task in
    /// progress finishes, then the records the batcher holds are uploaded (leases protect
    /// them if the process is killed instead).
    pub async fn run_until_stopped(self: Arc<Self>, concurrency: usize, token: CancellationToken) {
        let mut loops = JoinSet::new();
        for _ in 0..concurrency {
            let worker = Arc::clone(&self);
            let token = token.clone();
            loops.spawn(async move { worker.run_loop(token).await });
        }
        let stop_batcher = CancellationToken::new();
        let batcher = tokio::spawn({
            let worker = Arc::clone(&self);
            let stop = stop_batcher.clone();
            async move { worker.run_batcher(stop).await }
        });
        while loops.join_next().await.is_some() {}
        stop_batcher.cancel();
        if let Err(e) = batcher.await {
            tracing::error!(error = %e, "The call batcher failed.");
        }
    }

    /// Uploads the batches of call records as they fall due, until `stop`; then what it
    /// still holds.
    async fn run_batcher(&self, stop: CancellationToken) {
        self.calls.run_started();
        loop {
            let batch = tokio::select! {
                () = stop.cancelled() => break,
                batch = self.calls.next_batch() => batch,
            };
            self.upload_batch(batch).await;
        }
        self.upload_batch(self.calls.take_all()).await;
    }

    /// Uploads held call records and settles their tasks.
    async fn upload_batch(&self, batch: Vec<call_batch::Held>) -> Vec<ExecutionOutcome> {
        let mut outcomes = Vec::new();
        if batch.is_empty() {
            return outcomes;
        }
        for Settled {
            task,
            call_id,
            result,
        } in self.calls.send(batch).await
        {
            let outcome = self
                .settle(&task, &call_id, result.map_err(ProcessError::Crm))
                .await;
            match lease_lost_is_abandoned(outcome) {
                Ok(o) => outcomes.push(o),
                Err(e) => {
                    tracing::error!(task = task.id, error = %e, "Settling a call record's task failed; it runs again when its lease runs out.");
                }
            }
        }
        outcomes
    }

    async fn run_loop(&self, token: CancellationToken) {
        while !token.is_cancelled() {
            match self.try_execute_task().await {
                Ok(ExecutionOutcome::EmptyQueue) => {
                    tokio::select! {
                        () = token.cancelled() => break,
                        () = self.wakeup.notified() => {},
                        () = tokio::time::sleep(IDLE_POLL) => {},
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "Queue access failed; retrying shortly.");
                    tokio::select! {
                        () = token.cancelled() => break,
                        () = tokio::time::sleep(IDLE_POLL) => {},
                    }
                }
            }
        }
    }

    /// How often a running task's lease (and its number lock) is renewed: a third of the
    /// lease, so two renewals may fail before it runs out.
    pub fn heartbeat(&self) -> Duration {
        self.lease / 3
    }

    /// How long one task may run: below the lease (four fifths of it), so a task whose
    /// heartbeat cannot reach the store stops before another worker may take it over.
    pub fn task_deadline(&self) -> Duration {
        self.lease * 4 / 5
    }

    /// Takes one due task and applies it (tests call this directly). While it runs, a
    /// heartbeat renews its lease and its number lock; a task that loses its lease is
    /// abandoned (another worker has it), one that exceeds [`Worker::task_deadline`] is
    /// abandoned and rescheduled.
    pub async fn try_execute_task(&self) -> Result<ExecutionOutcome, StoreError> {
        let Some(task) = self.store.claim_next(self.lease).await? else {
            return Ok(ExecutionOutcome::EmptyQueue);
        };
        let webhook = match task::decode(&task.payload) {
            Ok(StoredTask::CallRecord(record)) => {
                self.calls.hold(task, *record).await;
                return Ok(ExecutionOutcome::RecordHeld);
            }
            Ok(StoredTask::Webhook(webhook)) => webhook,
            Err(e) => {
                let outcome = self
                    .settle(&task, &task.group, Err(ProcessError::Undecodable(e)))
                    .await;
                return lease_lost_is_abandoned(outcome);
            }
        };
        let lease = task.lease();
        let lock: std::sync::Mutex<Option<NumberLock>> = std::sync::Mutex::new(None);
        let run = tokio::time::timeout(self.task_deadline(), self.process(&webhook, &lock));
        let result = tokio::select! {
            r = run => r,
            lost = self.heartbeat_until_lost(lease, &lock) => {
                tracing::warn!(task = task.id, error = %lost, "Task's lease was lost; abandoned to its new holder.");
                self.release(&lock).await;
                return Ok(ExecutionOutcome::TaskAbandoned);
            }
        };
        self.release(&lock).await;
        let outcome = match result {
            Ok(result) => self.settle(&task, &task.group, result).await,
            Err(_elapsed) => {
                let delay = self.schedule.delay(task.attempt, None);
                let reason = format!(
                    "the task ran longer than its {:?} deadline",
                    self.task_deadline()
                );
                tracing::warn!(task = task.id, delay = ?delay, "Task exceeded its deadline; abandoned and rescheduled.");
                self.trail_retry(&task, &task.group, reason.clone(), delay)
                    .await;
                self.store
                    .reschedule(lease, delay, &reason)
                    .await
                    .map(|()| ExecutionOutcome::TaskRetried)
            }
        };
        lease_lost_is_abandoned(outcome)
    }

    /// Renews the lease and the number lock every [`Worker::heartbeat`]; returns only when
    /// the lease is lost. A store error is retried on the next beat.
    async fn heartbeat_until_lost(
        &self,
        lease: crate::store::Lease,
        lock: &std::sync::Mutex<Option<NumberLock>>,
    ) -> StoreError {
        loop {
            tokio::time::sleep(self.heartbeat()).await;
            match self.store.renew_lease(lease, self.lease).await {
                Err(e @ StoreError::LeaseLost(_)) => return e,
                Err(e) => tracing::warn!(error = %e, "Renewing a task's lease failed; retrying."),
                Ok(()) => {}
            }
            let held = lock.lock().expect("lock slot poisoned").clone();
            if let Some(l) = held
                && let Err(e) = self
                    .store
                    .expire_if_equals(&l.key, l.token.as_bytes(), self.lease)
                    .await
            {
                tracing::warn!(error = %e, "Renewing a number lock failed; retrying.");
            }
        }
    }

    /// Releases the number lock, if this task took one, only while it is still ours.
    async fn release(&self, lock: &std::sync::Mutex<Option<NumberLock>>) {
        let held = lock.lock().expect("lock slot poisoned").take();
        if let Some(l) = held
            && let Err(e) = self
                .store
                .delete_if_equals(&l.key, l.token.as_bytes())
                .await
        {
            tracing::warn!(error = %e, "Releasing a number lock failed; it expires by itself.");
        }
    }

    /// Stores the outcome of a task that ran to its end; `call_id` names the call's trail.
    async fn settle(
        &self,
        task: &QueuedTask,
        call_id: &str,
        result: Result<(), ProcessError>,
    ) -> Result<ExecutionOutcome, StoreError> {
        let lease = task.lease();
        let outcome = match result {
            Ok(()) => {
                self.store.complete(lease).await?;
                ExecutionOutcome::TaskCompleted
            }
            Err(ProcessError::Crm(e)) if e.is_retryable() => {
                let retry_after = match &e {
                    CrmError::RateLimited { retry_after } => *retry_after,
                    _ => None,
                };
                let delay = self.schedule.delay(task.attempt, retry_after);
                tracing::warn!(task = task.id, attempt = task.attempt + 1, delay = ?delay, error = %e, "CRM work failed; will retry.");
                self.trail_retry(task, call_id, e.reason(), delay).await;
                self.store.reschedule(lease, delay, &e.reason()).await?;
                ExecutionOutcome::TaskRetried
            }
            Err(ProcessError::Crm(e)) => {
                tracing::error!(task = task.id, error = %e, "The CRM refused the call's data; parked as a dead letter.");
                self.store.dead_letter(lease, &e.reason()).await?;
                self.trail_dead_letter(call_id, e.reason()).await;
                ExecutionOutcome::TaskDeadLettered
            }
            Err(ProcessError::Busy) => {
                // Not a failure of the task: another event of the same number is in progress.
                self.store
                    .postpone(lease, Duration::from_millis(200))
                    .await?;
                ExecutionOutcome::TaskRetried
            }
            Err(ProcessError::Store(e)) => {
                let delay = self.schedule.delay(task.attempt, None);
                tracing::warn!(task = task.id, error = %e, "Store failed during CRM work; will retry.");
                self.store.reschedule(lease, delay, &e.to_string()).await?;
                ExecutionOutcome::TaskRetried
            }
            Err(
                e @ (ProcessError::Undecodable(_)
                | ProcessError::Unreadable(_)
                | ProcessError::Plan(_)),
            ) => {
                tracing::error!(task = task.id, error = %e, "Task cannot be processed; parked as a dead letter.");
                self.store.dead_letter(lease, &e.to_string()).await?;
                self.trail_dead_letter(call_id, e.to_string()).await;
                ExecutionOutcome::TaskDeadLettered
            }
        };
        Ok(outcome)
    }

    /// Records a retry in its call's trail, before the reschedule (so the retry delay starts
    /// after the trail write).
    async fn trail_retry(&self, task: &QueuedTask, call_id: &str, error: String, delay: Duration) {
        let step = TrailKind::Retry {
            attempt: task.attempt + 1,
            error,
            delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        };
        call_trail::record(&*self.store, call_id, step).await;
    }

    /// Records a dead letter in its call's trail.
    async fn trail_dead_letter(&self, call_id: &str, reason: String) {
        call_trail::record(&*self.store, call_id, TrailKind::DeadLetter { reason }).await;
    }

    /// Runs tasks until none is due, uploading the call records held whenever the queue is
    /// empty, without waiting for their window (tests; `retry-now`).
    pub async fn run_until_idle(&self) -> Result<Vec<ExecutionOutcome>, StoreError> {
        let mut outcomes = Vec::new();
        loop {
            match self.try_execute_task().await? {
                ExecutionOutcome::EmptyQueue if self.calls.held() == 0 => return Ok(outcomes),
                ExecutionOutcome::EmptyQueue => {
                    outcomes.extend(self.upload_batch(self.calls.take_all()).await);
                }
                o => outcomes.push(o),
            }
        }
    }

    fn parse(&self, stored: &StoredWebhook) -> Result<CallEvent, ProcessError> {
        let normalize = |raw: &str| self.normalizer.parse(raw).map(|p| p.number);
        CallEvent::parse(
            &stored.fields,
            &self.aliases,
            stored.event.as_deref(),
            &normalize,
        )
        .map_err(ProcessError::Unreadable)
    }

    async fn process(
        &self,
        webhook: &StoredWebhook,
        lock: &std::sync::Mutex<Option<NumberLock>>,
    ) -> Result<(), ProcessError> {
        let event = self.parse(webhook)?;
        if let Ok(phone) = &event.client {
            let taken = self.lock_number(phone).await?;
            *lock.lock().expect("lock slot poisoned") = Some(taken);
        }
        self.process_locked(&event).await
    }

    /// Takes `lock:number:<e164>` with a fresh owner token, waiting up to
    /// [`NUMBER_LOCK_WAIT`] (at most half the task's deadline). The lock lives one lease and is renewed by the task's heartbeat.
    async fn lock_number(&self, phone: &PhoneNumber) -> Result<NumberLock, ProcessError> {
        let key = keys::number_lock(phone);
        let token = format!("{:016x}", rand::random::<u64>());
        // Within half the task's deadline, so waiting for a number is never taken for a task
        // over its deadline (it is postponed, not counted as a failed attempt).
        let deadline = tokio::time::Instant::now() + NUMBER_LOCK_WAIT.min(self.task_deadline() / 2);
        loop {
            if self
                .store
                .set_raw_if_absent(&key, token.as_bytes(), Some(self.lease))
                .await?
            {
                return Ok(NumberLock { key, token });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ProcessError::Busy);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn process_locked(&self, event: &CallEvent) -> Result<(), ProcessError> {
        let facts = self.gather_facts(event).await?;
        let rules = self.rules.current();
        let decision = decide(event, &facts, &self.planner, &rules, chrono::Utc::now());
        if let Some(rule) = decision.matched_rule {
            tracing::debug!(call_id = %event.call_id, rule = %rule.name, "Routing rule matched.");
        }
        // The lookup that routed this call, when its request named no call id.
        if event.is_incoming()
            && let Ok(caller) = &event.client
        {
            call_trail::join_caller_lookup(&*self.store, &event.call_id, caller).await;
        }
        call_trail::record(
            &*self.store,
            &event.call_id,
            TrailKind::Plan {
                event: event.moment.as_str().to_owned(),
                scenarios: decision
                    .plan
                    .scenarios
                    .iter()
                    .map(|s| format!("{s:?}"))
                    .collect(),
                actions: decision.plan.keys(),
                rule: decision
                    .matched_rule
                    .map(|r| format!("{} ({}:{})", r.name, r.file, r.line)),
            },
        )
        .await;
        let plan = decision.plan;
        let event_key = event.dedupe_key();
        let mut resolved = Resolved::default();
        for action in &plan.actions {
            self.execute(event, &event_key, &plan.site, action, &mut resolved)
                .await?;
        }
        if let Some(entry) = &plan.log {
            let key = keys::action_log(&event_key);
            if self.store.get_raw(&key).await?.is_none() {
                self.store.append_call_log(entry).await?;
                self.store.set_raw(&key, b"1", Some(ACTION_TTL)).await?;
            }
        }
        if event.moment.is_finished()
            && event.outcome() == crate::domain::call::CallOutcome::Answered
        {
            let key = keys::call_legs(&event.call_id);
            let mut legs: LegsRecord = self.store.get_json(&key).await?.unwrap_or_default();
            legs.answered = true;
            if let Some(m) = facts.answered_by
                && !legs.talkers.contains(&m)
            {
                legs.talkers.push(m);
            }
            self.store.set_json(&key, &legs, Some(ACTION_TTL)).await?;
        }
        Ok(())
    }

    async fn status_groups(&self) -> Result<StatusGroups, CrmError> {
        let mut cache = self.statuses.lock().await;
        if let Some((at, groups)) = cache.as_ref()
            && at.elapsed() < STATUS_CACHE_TTL
        {
            return Ok(groups.clone());
        }
        let groups = self.crm.status_groups().await?;
        *cache = Some((tokio::time::Instant::now(), groups.clone()));
        Ok(groups)
    }

    async fn gather_facts(&self, event: &CallEvent) -> Result<CrmFacts, ProcessError> {
        let mut facts = CrmFacts::new_number(local_now());
        let parties = resolve_parties(event, &self.directory);
        facts.answered_by = parties.answered_by;
        facts.answered_by_name = parties.answered_by.map(|id| self.manager_name(id));
        facts.client_is_manager = parties.client_is_manager;
        let legs: LegsRecord = self
            .store
            .get_json(&keys::call_legs(&event.call_id))
            .await?
            .unwrap_or_default();
        facts.other_legs = OtherLegs {
            answered: legs.answered,
            talkers: legs
                .talkers
                .into_iter()
                .filter(|m| Some(*m) != parties.answered_by)
                .collect(),
        };
        let Ok(phone) = &event.client else {
            return Ok(facts);
        };
        if parties.client_is_manager || self.planner.own_numbers.contains(phone) {
            return Ok(facts);
        }
        if let Some(cb) = self
            .store
            .get_json::<CallbackRecord>(&keys::callback(phone))
            .await?
        {
            facts.open_callback = Some(OpenCallback {
                task_id: cb.task_id,
                count: cb.count,
                last_missed_at: cb.last_missed_at,
                last_call_id: cb.last_call_id,
            });
        }
        facts.customers = match self
            .sync
            .as_ref()
            .map(|s| s.mirror())
            .filter(|m| m.facts_fresh(self.mirror_max_lag))
        {
            Some(mirror) => self.customer_facts_from_mirror(mirror, phone).await?,
            None => self.customer_facts_from_crm(phone).await?,
        };
        Ok(facts)
    }

    /// Whether an order in `status` is open by these groups (an unknown status counts as
    /// open: the CRM accepted it, and a call about it should not make a second order).
    fn is_open(&self, groups: &StatusGroups, status: &str) -> bool {
        groups
            .get(status)
            .is_none_or(|g| !self.closed_status_groups.contains(g))
    }

    /// The caller's customers and their open orders from the owner and orders mirrors: no
    /// CRM request but the cached status groups.
    async fn customer_facts_from_mirror(
        &self,
        mirror: &SharedMirror,
        phone: &PhoneNumber,
    ) -> Result<Vec<CustomerFacts>, ProcessError> {
        let mut customers = mirror.customers_of(phone);
        if customers.is_empty() {
            return Ok(Vec::new());
        }
        customers.sort_by_key(|c| std::cmp::Reverse((c.last_activity, c.id)));
        let groups = self.status_groups().await?;
        let at = |secs: i64| {
            (secs != 0)
                .then(|| chrono::DateTime::from_timestamp(secs, 0).map(|d| d.naive_utc()))
                .flatten()
        };
        Ok(customers
            .into_iter()
            .take(MAX_CUSTOMERS_PER_NUMBER)
            .map(|c| {
                let orders: Vec<OrderFacts> = mirror
                    .orders_of(c.id)
                    .into_iter()
                    .map(|o| OrderFacts {
                        id: o.id,
                        open: self.is_open(&groups, &o.status),
                        manager_id: o.manager,
                        created_at: at(o.created_at),
                    })
                    .collect();
                let last_order = orders.iter().filter_map(|o| o.created_at).max();
                // The mirror keeps the customer's last activity (created or changed in the
                // CRM), not its creation date: the planner ranks by activity first, so the
                // creation date is not needed.
                CustomerFacts {
                    id: c.id,
                    manager_id: c.manager,
                    created_at: None,
                    last_active_at: at(c.last_activity).max(last_order),
                    orders,
                }
            })
            .collect())
    }

    /// The caller's customers and their orders asked of the CRM: a phone search and one
    /// order list per customer.
    async fn customer_facts_from_crm(
        &self,
        phone: &PhoneNumber,
    ) -> Result<Vec<CustomerFacts>, ProcessError> {
        let customers = self.crm.find_customers_by_phone(phone).await?;
        if customers.is_empty() {
            return Ok(Vec::new());
        }
        let groups = self.status_groups().await?;
        let mut facts = Vec::new();
        for c in customers.into_iter().take(MAX_CUSTOMERS_PER_NUMBER) {
            let orders = self.crm.customer_orders(c.id).await?;
            let parse_date = |s: &Option<String>| {
                s.as_deref()
                    .and_then(|d| NaiveDateTime::parse_from_str(d, "%Y-%m-%d %H:%M:%S").ok())
            };
            let orders: Vec<OrderFacts> = orders
                .into_iter()
                .map(|o| OrderFacts {
                    id: o.id,
                    open: self.is_open(&groups, &o.status),
                    manager_id: o.manager_id,
                    created_at: parse_date(&o.created_at),
                })
                .collect();
            let last_order = orders.iter().filter_map(|o| o.created_at).max();
            facts.push(CustomerFacts {
                id: c.id,
                manager_id: c.manager_id,
                created_at: parse_date(&c.created_at),
                last_active_at: last_order.max(parse_date(&c.created_at)),
                orders,
            });
        }
        Ok(facts)
    }

    /// Hands the call's record to the batcher durably: a queued task of its own, which
    /// completes once the record is uploaded ([`call_batch`]); queued once per event.
    async fn queue_call_record(
        &self,
        event: &CallEvent,
        event_key: &str,
        call: &crate::crm::CallRecord,
    ) -> Result<(), StoreError> {
        let stored = StoredCallRecord {
            alt_external_id: format!(
                "{}:{}",
                call.external_id,
                event.leg().unwrap_or_else(|| "answered".to_owned())
            ),
            call_id: event.call_id.clone(),
            call_record: call.clone(),
        };
        let payload =
            serde_json::to_vec(&stored).map_err(|e| StoreError::encode("a call record", e))?;
        let (dedupe, group) = task::call_record_keys(event_key);
        self.store
            .enqueue(&dedupe, task::DEDUPE_TTL, &group, &payload)
            .await?;
        self.wakeup.notify_one();
        Ok(())
    }

    fn manager_name(&self, id: ManagerId) -> String {
        self.directory
            .get(id)
            .and_then(|m| m.sip.first().cloned().or_else(|| m.code.clone()))
            .unwrap_or_else(|| format!("manager {id}"))
    }

    /// Whether this event makes the S8 task of its tracking number: the first event to ask
    /// within [`TRACKING_CHECK_EVERY`] does (and keeps the claim when it is re-run after a
    /// crash); calls after it to the same number do not repeat the task.
    async fn claim_tracking_check(
        &self,
        event: &CallEvent,
        event_key: &str,
    ) -> Result<bool, StoreError> {
        let Some(tracking) = &event.tracking_number else {
            return Ok(true);
        };
        let key = keys::tracking_check(tracking);
        if self
            .store
            .set_raw_if_absent(&key, event_key.as_bytes(), Some(TRACKING_CHECK_EVERY))
            .await?
        {
            return Ok(true);
        }
        Ok(self.store.get_raw(&key).await?.as_deref() == Some(event_key.as_bytes()))
    }

    /// `tasks/create`, unless `resumed` (this action's outcome is unknown: a crash or a lost
    /// answer after it started) and the performer already has the task carrying `mark`.
    async fn create_task_once(
        &self,
        site: &str,
        new: &NewTask,
        mark: &TaskMark,
        resumed: bool,
    ) -> Result<TaskId, ProcessError> {
        if resumed && let Some(id) = self.crm.task_by_mark(new.performer_id, mark).await? {
            tracing::info!(
                task = id.0,
                "The task of an interrupted create exists; not again."
            );
            return Ok(id);
        }
        Ok(self.crm.create_task(Some(site), new).await?)
    }

    async fn execute(
        &self,
        event: &CallEvent,
        event_key: &str,
        site: &str,
        action: &Action,
        resolved: &mut Resolved,
    ) -> Result<(), ProcessError> {
        let key = keys::action(event_key, &action.key());
        let previous: Option<ActionRecord> = self.store.get_json(&key).await?;
        if let Some(record) = previous.filter(|r| r.done) {
            resolved.customer = record.customer.or(resolved.customer);
            resolved.order = record.order.or(resolved.order);
            return Ok(());
        }
        let resumed = previous.is_some();
        let mark = TaskMark::new(event_key, &action.key());
        let started = ActionRecord::default();
        self.store
            .set_json(&key, &started, Some(ACTION_TTL))
            .await?;
        let mut record = ActionRecord {
            done: true,
            ..ActionRecord::default()
        };
        match action {
            Action::EnsureCustomer(new) => {
                // The facts were gathered under this number's lock, so "no customer" still
                // holds; only a create that crashed before its record needs a look by our
                // externalId first.
                let existing = if resumed {
                    self.crm
                        .customer_by_external_id(&new.external_id, site)
                        .await?
                        .map(|c| (c.id, c.manager_id))
                } else {
                    None
                };
                let (id, manager) = match existing {
                    Some(found) => found,
                    None => match self.crm.create_customer(site, new).await {
                        Ok(id) => (id, new.manager_id),
                        Err(refused @ CrmError::Rejected { .. }) => self
                            .crm
                            .customer_by_external_id(&new.external_id, site)
                            .await?
                            .map(|c| (c.id, c.manager_id))
                            .ok_or(refused)?,
                        Err(e) => return Err(e.into()),
                    },
                };
                if let Some(sync) = &self.sync {
                    sync.own_writes(
                        vec![MirrorChange::Upsert(MirrorCustomer {
                            id,
                            manager,
                            phones: new.phones.iter().map(PhoneKey::of).collect(),
                            last_activity: local_now().and_utc().timestamp(),
                        })],
                        Vec::new(),
                    )
                    .await;
                }
                for p in &new.phones {
                    let entry = OwnerEntry {
                        customer_id: Some(id),
                        manager_id: manager,
                    };
                    if let Err(e) = self.store.put_owner(p, entry, self.owner_ttl).await {
                        tracing::warn!(error = %e, "Owner index update failed.");
                    }
                }
                resolved.customer = Some(id);
                record.customer = Some(id);
            }
            Action::CreateOrder(draft) => {
                let new = draft.resolve(resolved)?;
                let existing = if resumed {
                    self.crm
                        .order_by_external_id(&new.external_id, site)
                        .await?
                        .map(|o| o.id)
                } else {
                    None
                };
                let id = match existing {
                    Some(id) => id,
                    None => match self.crm.create_order(site, &new).await {
                        Ok(id) => id,
                        Err(refused @ CrmError::Rejected { .. }) => self
                            .crm
                            .order_by_external_id(&new.external_id, site)
                            .await?
                            .map(|o| o.id)
                            .ok_or(refused)?,
                        Err(e) => return Err(e.into()),
                    },
                };
                // The next event of this call sees the order at once; the CRM's history
                // repeats it later (applying it again is harmless).
                if let Some(sync) = &self.sync {
                    sync.own_writes(
                        Vec::new(),
                        vec![OrderChange::Upsert(MirrorOrder {
                            id,
                            customer: new.customer_id,
                            status: new.status.clone().unwrap_or_default(),
                            manager: new.manager_id,
                            created_at: local_now().and_utc().timestamp(),
                        })],
                    )
                    .await;
                }
                resolved.order = Some(id);
                record.order = Some(id);
            }
            Action::CreateTask {
                purpose: TaskPurpose::CheckTracking,
                task,
            } if !self.claim_tracking_check(event, event_key).await? => {
                tracing::debug!(
                    performer = task.performer_id.0,
                    "This tracking number's check task was made within a day; not again."
                );
            }
            Action::CreateTask { task, .. } => {
                let new = task.resolve(resolved, &mark)?;
                record.task = Some(self.create_task_once(site, &new, &mark, resumed).await?);
            }
            Action::UpsertCallbackTask {
                existing,
                count,
                task,
            } => {
                let id = match existing {
                    Some(id) => {
                        self.crm.edit_task(*id, &task.update()).await?;
                        *id
                    }
                    None => {
                        let new = task.resolve(resolved, &mark)?;
                        self.create_task_once(site, &new, &mark, resumed).await?
                    }
                };
                if let Ok(phone) = &event.client {
                    let cb = CallbackRecord {
                        task_id: id,
                        count: *count,
                        last_missed_at: event.date.map(|d| d.local).unwrap_or_else(local_now),
                        last_call_id: event.call_id.clone(),
                    };
                    let window =
                        Duration::from_secs(u64::from(self.planner.callback_window_min) * 60);
                    self.store
                        .set_json(&keys::callback(phone), &cb, Some(window))
                        .await?;
                }
                record.task = Some(id);
            }
            Action::CompleteCallbackTask {
                task_id,
                commentary,
            } => {
                let update = TaskUpdate {
                    text: None,
                    commentary: Some(commentary.clone()),
                    complete: Some(true),
                };
                self.crm.edit_task(*task_id, &update).await?;
                if let Ok(phone) = &event.client {
                    self.store.delete(&keys::callback(phone)).await?;
                }
                record.task = Some(*task_id);
            }
            Action::PopUp(notice) => self.crm.call_event(notice).await?,
            Action::UploadCall(call) => self.queue_call_record(event, event_key, call).await?,
        }
        self.store.set_json(&key, &record, Some(ACTION_TTL)).await?;
        call_trail::record(
            &*self.store,
            &event.call_id,
            TrailKind::Action {
                action: action.key(),
                customer_id: record.customer.map(|c| c.0),
                order_id: record.order.map(|o| o.0),
                task_id: record.task.map(|t| t.0),
            },
        )
        .await;
        Ok(())
    }
}
