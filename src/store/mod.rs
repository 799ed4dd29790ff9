//! The storage port, split by concern (svix style): [`Queue`] (the durable event queue with
//! its dead letters and the quarantine), [`OwnerIndex`], [`CallLog`], [`ManagerStates`] and
//! [`KeyValue`] (raw records with TTLs: idempotency keys, locks, the sandbox CRM, and ordered
//! lists read by key alone: a call's decision trail). [`Store`]
//! is every part at once and is implemented for anything implementing them all, so the app
//! holds one `Arc<dyn Store>`; a caller holding a concrete backend imports the part traits
//! it calls.
//!
//! Keys of the raw key/value space are built by the functions of [`keys`], never by hand;
//! typed JSON records go through [`KeyValueExt`] (`get_json`, `set_json`,
//! `set_json_if_absent`, `scan_json`, `append_list_json`, `read_list_json`), written once for
//! every backend. Errors keep their cause
//! ([`StoreError`]'s backend variants carry the redb, Redis, serde or I/O error as `source`).
//!
//! Backends: [`embedded::EmbeddedStore`] (one redb file, fsync'd group commits, durable across
//! `kill -9`) and, for several instances, [`redis::RedisStore`] (Redis Streams with a consumer
//! group for the queue). Every backend passes the contract suite in `store::contract` (the
//! `testing` feature; run from `tests/`); backends add the configured `store.key_prefix`
//! where the medium is shared.

#[cfg(any(test, feature = "testing"))]
pub mod contract;
pub mod embedded;
pub mod keys;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{
    crm::CustomerId,
    domain::{
        call_log::{CallLogEntry, CallLogFilter, CallLogPosition, LoggedCall},
        manager::{ManagerId, ManagerState},
        phone_number::PhoneNumber,
    },
};

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
    /// The token of the claim that handed this task out (0 in listings): proves the lease.
    #[serde(default)]
    pub lease_token: u64,
}

impl QueuedTask {
    /// The lease this claim holds, for [`Queue::complete`] and friends.
    pub fn lease(&self) -> Lease {
        Lease {
            id: self.id,
            token: self.lease_token,
        }
    }
}

/// A claim's hold on a task: its id and the token that claim received. Every later claim of
/// the task (after this lease ran out) gets a new token, so a worker that lost its lease
/// cannot complete, reschedule, postpone or dead-letter the task any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: u64,
    pub token: u64,
}

/// Result of [`Queue::enqueue`].
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

/// Why a store operation failed. Backend errors keep their cause ([`std::error::Error::source`]).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The embedded store's database failed.
    #[error("redb: {0}")]
    Redb(#[source] redb::Error),
    /// The Redis server failed or could not be reached.
    #[error("redis: {0}")]
    Redis(#[source] ::redis::RedisError),
    /// A value could not be encoded for storage.
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// A stored record cannot be read back.
    #[error("stored record {key} is corrupt: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The embedded store's writer thread could not start.
    #[error("cannot start the store's writer thread: {0}")]
    WriterThread(#[source] std::io::Error),
    /// The embedded store's writer thread has stopped (the store is shutting down or broken).
    #[error("the store's writer thread has stopped")]
    WriterGone,
    /// A blocking read could not run to its end.
    #[error("store read task failed: {0}")]
    ReadTask(#[source] tokio::task::JoinError),
    /// The write transaction this request was part of failed as a whole.
    #[error("the store's commit failed: {0}")]
    Commit(#[source] std::sync::Arc<StoreError>),
    /// The embedded store's writer answered a request with a reply of another kind (a bug).
    #[error("the store's writer gave an unexpected reply")]
    UnexpectedReply,
    /// The lease of this operation is no longer held (it ran out, another claim took the
    /// task over, or the task is gone): nothing was changed.
    #[error("the lease on task {0} is no longer held")]
    LeaseLost(u64),
}

impl StoreError {
    /// A record that cannot be decoded, with the decoder's error as its cause.
    pub fn corrupt(
        key: impl Into<String>,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StoreError::Corrupt {
            key: key.into(),
            source: cause.into(),
        }
    }

    /// A value that cannot be encoded.
    pub fn encode(what: impl Into<String>, source: serde_json::Error) -> Self {
        StoreError::Encode {
            what: what.into(),
            source,
        }
    }
}

/// Raw key/value records with optional TTLs (idempotency keys, locks, the sandbox CRM), and
/// the store's reachability check.
#[async_trait]
pub trait KeyValue: Send + Sync {
    /// Cheap reachability check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
    async fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    async fn set_raw(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError>;
    /// [`KeyValue::set_raw`] of a record the caller can afford to lose in a crash (the call
    /// trail's lookup decisions): the store may make it durable a moment later, together
    /// with other writes, instead of at once (the embedded store: within a second, without
    /// an fsync of its own). Readable at once like any write.
    async fn set_raw_volatile(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        self.set_raw(key, value, ttl).await
    }
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
    /// Appends `value` to the ordered list `key` (made by the first append). Each value is
    /// kept at least `ttl` after it was appended. Lists are their own space: `get_raw` and
    /// `scan_prefix` never see them. Reading one list never scans other keys.
    async fn append_list(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError>;
    /// [`KeyValue::append_list`] of a value the caller can afford to lose in a crash, as
    /// [`KeyValue::set_raw_volatile`].
    async fn append_list_volatile(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.append_list(key, value, ttl).await
    }
    /// The first `limit` live values of the list `key`, in append order (empty when there is
    /// no such list).
    async fn read_list(&self, key: &str, limit: usize) -> Result<Vec<Vec<u8>>, StoreError>;
    /// Deletes `key` only while it holds `value` (an owner token); `true` when deleted.
    async fn delete_if_equals(&self, key: &str, value: &[u8]) -> Result<bool, StoreError>;
    /// Gives `key` a new TTL only while it holds `value` (renews an owned lock); `true` when
    /// renewed, `false` when the key is gone or held by someone else.
    async fn expire_if_equals(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError>;
}

/// Typed JSON records on top of [`KeyValue`], written once for every backend and caller.
/// A record that does not decode is [`StoreError::Corrupt`] naming its key.
#[async_trait]
pub trait KeyValueExt: KeyValue {
    async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        match self.get_raw(key).await? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::corrupt(key, e)),
            None => Ok(None),
        }
    }

    async fn set_json<T: Serialize + Sync>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::encode(key, e))?;
        self.set_raw(key, &bytes, ttl).await
    }

    /// [`KeyValue::set_raw_if_absent`] of a JSON value.
    async fn set_json_if_absent<T: Serialize + Sync>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::encode(key, e))?;
        self.set_raw_if_absent(key, &bytes, ttl).await
    }

    /// [`KeyValue::append_list`] of a JSON value.
    async fn append_list_json<T: Serialize + Sync>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::encode(key, e))?;
        self.append_list(key, &bytes, ttl).await
    }

    /// [`KeyValue::read_list`], each value decoded.
    async fn read_list_json<T: DeserializeOwned + Send>(
        &self,
        key: &str,
        limit: usize,
    ) -> Result<Vec<T>, StoreError> {
        self.read_list(key, limit)
            .await?
            .into_iter()
            .map(|v| serde_json::from_slice(&v).map_err(|e| StoreError::corrupt(key, e)))
            .collect()
    }

    /// [`KeyValue::scan_prefix`], each value decoded.
    async fn scan_json<T: DeserializeOwned + Send>(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, T)>, StoreError> {
        self.scan_prefix(prefix, limit)
            .await?
            .into_iter()
            .map(|(k, v)| match serde_json::from_slice(&v) {
                Ok(value) => Ok((k, value)),
                Err(e) => Err(StoreError::corrupt(k, e)),
            })
            .collect()
    }
}

impl<S: KeyValue + ?Sized> KeyValueExt for S {}

/// Who owns a number (the lookup's hot path).
#[async_trait]
pub trait OwnerIndex: Send + Sync {
    async fn get_owner(&self, phone: &PhoneNumber) -> Result<Option<OwnerEntry>, StoreError>;
    async fn put_owner(
        &self,
        phone: &PhoneNumber,
        entry: OwnerEntry,
        ttl: Duration,
    ) -> Result<(), StoreError>;
}

/// Managers' statuses as retailCRM last reported them: the durable copy, read at start into
/// [`crate::sync::managers::ManagerBoard`] (what the lookup reads, in memory).
#[async_trait]
pub trait ManagerStates: Send + Sync {
    async fn get_manager_state(&self, id: ManagerId) -> Result<Option<ManagerState>, StoreError>;
    async fn set_manager_state(&self, id: ManagerId, state: ManagerState)
    -> Result<(), StoreError>;
}

/// Finished calls, and who last talked to each number.
#[async_trait]
pub trait CallLog: Send + Sync {
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
}

/// The durable event queue with its dead letters, and the quarantine of unreadable payloads.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Stores a task durably (fsync'd / acknowledged by Redis) unless `dedupe_key` was seen
    /// within `dedupe_ttl`. Only after `Accepted` may a webhook be answered 200.
    async fn enqueue(
        &self,
        dedupe_key: &str,
        dedupe_ttl: Duration,
        group: &str,
        payload: &[u8],
    ) -> Result<EnqueueOutcome, StoreError>;
    /// Leases the oldest due task whose group has no earlier unfinished task, for `lease`;
    /// the task carries the lease's token ([`QueuedTask::lease`]).
    async fn claim_next(&self, lease: Duration) -> Result<Option<QueuedTask>, StoreError>;
    /// Extends a held lease to `duration` from now (the worker's heartbeat);
    /// [`StoreError::LeaseLost`] if it is no longer held.
    async fn renew_lease(&self, lease: Lease, duration: Duration) -> Result<(), StoreError>;
    /// Done: removes the task. [`StoreError::LeaseLost`] (nothing changed) unless `lease` is
    /// still held; so are the three below.
    async fn complete(&self, lease: Lease) -> Result<(), StoreError>;
    /// Failed, retry later: the task becomes due again after `delay`, attempt + 1.
    async fn reschedule(
        &self,
        lease: Lease,
        delay: Duration,
        error: &str,
    ) -> Result<(), StoreError>;
    /// Not a failure (the task had to wait for something, e.g. its number's lock): the task
    /// becomes due again after `delay`; its attempt count and last error stay as they were.
    async fn postpone(&self, lease: Lease, delay: Duration) -> Result<(), StoreError>;
    /// Failed for good: moves the task to the dead letters.
    async fn dead_letter(&self, lease: Lease, reason: &str) -> Result<(), StoreError>;
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

/// The whole storage port: every part above. Object-safe, used as `Arc<dyn Store>`;
/// implemented for anything that implements all the parts, so a backend implements the
/// parts and a caller imports the part traits whose methods it calls.
pub trait Store: KeyValue + OwnerIndex + ManagerStates + CallLog + Queue {}

impl<S: KeyValue + OwnerIndex + ManagerStates + CallLog + Queue + ?Sized> Store for S {}

/// Milliseconds since the Unix epoch, the store's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
