//! The storage port: owner index, manager states, call log, idempotency keys, the durable
//! event queue with its dead letters and quarantine, and plain key/value records (sandbox
//! CRM, action dedupe keys).
//!
//! Backends: [`embedded::EmbeddedStore`] (one redb file, fsync'd group commits, durable across
//! `kill -9`) and, for several instances, [`redis::RedisStore`] (Redis Streams with a consumer
//! group for the queue). Every backend passes the contract suite in `store::contract` (the
//! `testing` feature; run from `tests/`).
//!
//! Keys of the raw key/value space are namespaced by [`keys`]; backends add the configured
//! `store.key_prefix` where the medium is shared.

#[cfg(any(test, feature = "testing"))]
pub mod contract;
pub mod embedded;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{
    crm::CustomerId,
    domain::{
        call_log::{CallLogEntry, CallLogFilter, CallLogPosition, LoggedCall},
        manager::{ManagerId, ManagerState},
        phone_number::PhoneNumber,
    },
};

/// Namespaces of the raw key/value space. One place, so two features never collide.
pub mod keys {
    /// `dedupe:<source>:<event key>`: an accepted webhook delivery.
    pub const EVENT_DEDUPE: &str = "dedupe:";
    /// `action:<event key>:<action key>`: an executed CRM action and its result.
    pub const ACTION: &str = "action:";
    /// `lock:<name>`: a short-lived mutual exclusion (per-number customer creation).
    pub const LOCK: &str = "lock:";
    /// `callback:<e164>`: the open call-back task of a caller within its window (S14).
    pub const CALLBACK: &str = "callback:";
    /// `legs:<call id>`: what the legs of one call did so far (answered, who talked).
    pub const CALL_LEGS: &str = "legs:";
    /// `tracking-check:<e164>`: the event whose S8 task asked to check this unknown tracking
    /// number (one reminder per number per day, however many calls it gets).
    pub const TRACKING_CHECK: &str = "tracking-check:";
    /// `trail:<call id length>:<call id>:<seq>`: one step of a call's decision trail.
    pub const CALL_TRAIL: &str = "trail:";
    /// `admin-session:<id>`: a signed-in operator's session of the web page (its CSRF token).
    pub const ADMIN_SESSION: &str = "admin-session:";
    /// `sandbox:…`: records of the sandbox CRM.
    pub const SANDBOX: &str = "sandbox:";
}

/// Who owns a number, as far as callgate knows. `customer_id: None` is a negative entry:
/// "the CRM had no customer for this number" (kept with a shorter TTL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerEntry {
    pub customer_id: Option<CustomerId>,
    pub manager_id: Option<ManagerId>,
}

impl OwnerEntry {
    pub const NEGATIVE: OwnerEntry = OwnerEntry {
        customer_id: None,
        manager_id: None,
    };

    pub fn is_negative(&self) -> bool {
        self.customer_id.is_none()
    }
}

/// A task taken from the queue. It stays leased to the taker until completed, rescheduled or
/// dead-lettered; a lease that expires (crashed worker) makes the task available again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedTask {
    pub id: u64,
    /// Tasks of one group (one call) are handed out one at a time, in id order.
    pub group: String,
    pub payload: Vec<u8>,
    /// Failed attempts so far.
    pub attempt: u32,
    pub enqueued_at_ms: u64,
    pub last_error: Option<String>,
}

/// Result of [`Store::enqueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// Durably stored under this id.
    Accepted { id: u64 },
    /// The dedupe key was seen before: nothing stored.
    Duplicate,
}

/// A task that will not be retried, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub task: QueuedTask,
    pub reason: String,
    pub failed_at_ms: u64,
}

/// A webhook payload that could not be read, kept as received for an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineEntry {
    pub id: u64,
    pub received_at_ms: u64,
    pub reason: String,
    pub content_type: Option<String>,
    pub raw: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store backend failed: {0}")]
    Backend(String),
    #[error("stored record {key} is corrupt: {detail}")]
    Corrupt { key: String, detail: String },
    #[error("no queued task {0}")]
    NoSuchTask(u64),
}

/// The storage port. Object-safe, used as `Arc<dyn Store>`.
#[async_trait]
pub trait Store: Send + Sync {
    /// Cheap reachability check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;

    // --- raw key/value with optional TTL -------------------------------------------------
    async fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    async fn set_raw(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError>;
    /// Sets only when absent (or expired); `true` when this call set it.
    async fn set_raw_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError>;
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Live entries whose key starts with `prefix`, in key order, at most `limit`.
    async fn scan_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Next value of a named counter, starting at 1.
    async fn next_id(&self, sequence: &str) -> Result<u64, StoreError>;

    // --- owner index (hot path) ----------------------------------------------------------
    async fn get_owner(&self, phone: &PhoneNumber) -> Result<Option<OwnerEntry>, StoreError>;
    async fn put_owner(
        &self,
        phone: &PhoneNumber,
        entry: OwnerEntry,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    // --- manager states (hot path) -------------------------------------------------------
    async fn get_manager_state(&self, id: ManagerId) -> Result<Option<ManagerState>, StoreError>;
    async fn set_manager_state(&self, id: ManagerId, state: ManagerState)
    -> Result<(), StoreError>;

    // --- call log ------------------------------------------------------------------------
    /// Appends a finished call; also remembers who last talked to the caller.
    async fn append_call_log(&self, entry: &CallLogEntry) -> Result<(), StoreError>;
    /// The manager who last talked to this number (for `last_talked`).
    async fn last_talked(&self, phone: &PhoneNumber) -> Result<Option<ManagerId>, StoreError>;
    /// Entries matching `filter`, newest first (descending position), starting strictly
    /// before `before` when it is set; at most `limit`.
    async fn query_call_log(
        &self,
        filter: &CallLogFilter,
        before: Option<CallLogPosition>,
        limit: usize,
    ) -> Result<Vec<LoggedCall>, StoreError>;

    // --- durable queue -------------------------------------------------------------------
    /// Stores a task durably (fsync'd / acknowledged by Redis) unless `dedupe_key` was seen
    /// within `dedupe_ttl`. Only after `Accepted` may a webhook be answered 200.
    async fn enqueue(
        &self,
        dedupe_key: &str,
        dedupe_ttl: Duration,
        group: &str,
        payload: &[u8],
    ) -> Result<EnqueueOutcome, StoreError>;
    /// Leases the oldest due task whose group has no earlier unfinished task.
    async fn claim_next(&self, lease: Duration) -> Result<Option<QueuedTask>, StoreError>;
    /// Done: removes the task.
    async fn complete(&self, id: u64) -> Result<(), StoreError>;
    /// Failed, retry later: the task becomes due again after `delay`, attempt + 1.
    async fn reschedule(&self, id: u64, delay: Duration, error: &str) -> Result<(), StoreError>;
    /// Not a failure (the task had to wait for something, e.g. its number's lock): the task
    /// becomes due again after `delay`; its attempt count and last error stay as they were.
    async fn postpone(&self, id: u64, delay: Duration) -> Result<(), StoreError>;
    /// Failed for good: moves the task to the dead letters.
    async fn dead_letter(&self, id: u64, reason: &str) -> Result<(), StoreError>;
    /// Makes every waiting task due now (operator's "retry now").
    async fn retry_all_now(&self) -> Result<u64, StoreError>;
    /// Tasks waiting or leased.
    async fn queue_depth(&self) -> Result<u64, StoreError>;
    async fn list_queue(&self, limit: usize) -> Result<Vec<QueuedTask>, StoreError>;
    async fn list_dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError>;
    async fn dead_letter_count(&self) -> Result<u64, StoreError>;
    /// Moves a dead letter back to the queue (attempt reset); `false` if there is none.
    async fn replay_dead_letter(&self, id: u64) -> Result<bool, StoreError>;
    /// Deletes a dead letter for good (an operator decided it must not be applied); `false`
    /// if there is none.
    async fn discard_dead_letter(&self, id: u64) -> Result<bool, StoreError>;

    // --- quarantine ----------------------------------------------------------------------
    async fn quarantine(
        &self,
        reason: &str,
        content_type: Option<&str>,
        raw: &str,
    ) -> Result<u64, StoreError>;
    async fn list_quarantine(&self, limit: usize) -> Result<Vec<QuarantineEntry>, StoreError>;
}

/// Milliseconds since the Unix epoch, the store's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
