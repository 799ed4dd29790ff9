//! The embedded store: one redb file, durable across `kill -9`, no server.
//!
//! # Design
//!
//! **Group commit.** Every durable write goes through one dedicated writer thread (a std
//! thread, never a tokio worker, because `commit` blocks on `fsync`). Callers send a
//! `Request` over a channel and await a oneshot. The writer takes the first request, drains
//! every other pending one (up to [`MAX_BATCH`]), applies them all in ONE redb write
//! transaction, commits it with [`Durability::Immediate`] (fsync), and only then answers each
//! caller. One fsync is thus shared by everything that arrived while the previous one ran, which
//! is how thousands of durable enqueues per second fit on one disk. Within a batch, requests
//! are applied in arrival order and see each other's writes (the transaction reads its own
//! writes), so `set_raw_if_absent` and enqueue dedupe stay exact. A logical failure of one
//! request (say `reschedule` of an unknown task) answers that request only; a storage failure
//! aborts the transaction and fails the whole batch, nothing of it committed. A batch made
//! only of volatile writes ([`KeyValue::set_raw_volatile`]: the call trail's lookup
//! decisions, best effort by design) commits with `Durability::None`, no fsync; the writer
//! makes it durable within `VOLATILE_FLUSH` (1 s) with an empty durable commit, unless a
//! durable batch came first (which persists everything before it). A kill -9 may thus lose
//! the last second of volatile writes, never a durable one.
//!
//! **Mirrors.** The owner index read (`get_owner`) never touches redb: the owner index is
//! mirrored in memory, loaded at open and updated by the writer right after each commit, before the callers are answered (so a caller reads its
//! own write). The owner mirror is compact: the E.164 digits packed into a `u64`
//! ([`crate::domain::mirror::PhoneKey`]: length in the top byte, injective) map to a 20-byte value (customer, interned
//! manager, expiry in ms), 28 bytes per entry with no padding, hashed by a seeded
//! multiply-fold hasher. TTLs are honoured on read (an expired entry reads as absent) and
//! expired rows are purged every [`PURGE_INTERVAL`] in a transaction of their own.
//!
//! **Queue.** Tasks are durable rows; leases are not. An in-memory `QueueIndex`, rebuilt
//! at open from the task table, orders the waiting tasks by id, keeps one head per group
//! (events of one call are handed out one at a time, in id order) and splits those heads into
//! due, delayed (`not_before` in the future) and leased. `claim_next` is thus `O(log n)` in
//! memory plus one point read for the payload, also with 10,000 queued tasks. A lease that
//! expires makes its task claimable again (the worker crashed or hung). Each claim gets a
//! new lease token; `renew_lease` (the worker's heartbeat), `complete`, `reschedule`,
//! `postpone` and `dead_letter` check it (in the writer, pinning the lease while the batch
//! commits) and answer `LeaseLost`, changing nothing, once the lease is no longer held.
//!
//! **Reads.** Point reads (`get_raw`, `last_talked`, the payload of a claim) open a redb read
//! transaction on the calling task: microseconds, no fsync, never blocked by the writer.
//! Scans (`scan_prefix`, `query_call_log`, the lists) run on `spawn_blocking`.
//!
//! **What survives a crash.** Everything acknowledged: KV records (with their expiry), counters,
//! owners, manager states, call log and last talked, queued tasks (with attempt, delay, last
//! error), dead letters, quarantine. Leases do not, nor do the key/value space's locks
//! (`lock:…`, [`keys::PROCESS_LOCKS`]): after a restart every unfinished task is
//! claimable again, so a task may be delivered twice (at-least-once; CRM actions carry dedupe
//! keys, SPEC §6). A request whose caller was not yet answered may or may not have committed.
//!
//! **No key prefix.** `store.key_prefix` namespaces keys on a *shared* medium (one Redis for
//! several deployments). The embedded file is private to one callgate, so the prefix would only
//! cost bytes on every key; it is ignored here.

mod owners;
mod queue_index;
mod writer;

use std::{
    path::Path,
    sync::{
        Arc, Mutex, RwLock,
        mpsc::{self, Sender},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use redb::{
    ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use tokio::sync::oneshot;

use self::{
    owners::{OwnerMirror, phone_key},
    queue_index::QueueIndex,
    writer::{Op, Reply, Request, Shared, Tables, TaskRecord, dead_letter_from_row, writer_loop},
};
use super::{
    CallLog, DeadLetter, EnqueueOutcome, KeyValue, Lease, ManagerStates, OwnerEntry, OwnerIndex,
    QuarantineEntry, Queue, QueuedTask, StoreError, keys, now_ms,
};
use crate::domain::{
    call_log::{CallLogEntry, CallLogFilter, CallLogPosition, LoggedCall},
    manager::{ManagerId, ManagerState},
    phone_number::PhoneNumber,
};

// --- tables ------------------------------------------------------------------------------

/// Raw key/value records: key → (value, expiry in ms since the epoch, `0` = never).
/// Also holds the queue's dedupe keys (value: the task id, big endian).
const KV: TableDefinition<&str, (&[u8], u64)> = TableDefinition::new("kv");
/// Expiry index of [`KV`]: (expiry ms, key) → (). Lets the purge find expired keys without a
/// full scan. May hold stale entries (key overwritten or deleted); the purge checks.
const KV_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("kv_expiry");
/// Ordered lists ([`KeyValue::append_list`]): (list key, append sequence) → (value, expiry
/// ms). A list is the key range `(key, 0)..=(key, u64::MAX)`, read without touching others.
const LISTS: TableDefinition<(&str, u64), (&[u8], u64)> = TableDefinition::new("lists");
/// Expiry index of [`LISTS`]: (expiry ms, list key, sequence) → (), for the purge.
const LIST_EXPIRY: TableDefinition<(u64, &str, u64), ()> = TableDefinition::new("list_expiry");
/// Named counters of [`Store::next_id`]: name → last value handed out.
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// The store's own sequences (task, quarantine and call log ids), kept apart from
/// [`COUNTERS`] so no user sequence name can collide with them.
const SEQUENCES: TableDefinition<&str, u64> = TableDefinition::new("sequences");
/// Owner index: packed E.164 (see [`phone_key`]) → (customer id, manager id, expiry ms).
const OWNERS: TableDefinition<u64, (Option<u64>, Option<u64>, u64)> =
    TableDefinition::new("owners");
/// Manager states: manager id → `ManagerState` as JSON.
const MANAGER_STATES: TableDefinition<u64, &[u8]> = TableDefinition::new("manager_states");
/// Call log: (call date in ms, append sequence) → `CallLogEntry` as JSON. Newest last.
const CALL_LOG: TableDefinition<(i64, u64), &[u8]> = TableDefinition::new("call_log");
/// Who last talked to a number: packed E.164 → (call date ms, manager id).
const LAST_TALKED: TableDefinition<u64, (i64, u64)> = TableDefinition::new("last_talked");
/// Queued tasks: id → (group, payload, attempt, enqueued at ms, not before ms, last error).
const TASKS: TableDefinition<u64, TaskRow> = TableDefinition::new("queue_tasks");
/// Dead letters: id → (group, payload, attempt, enqueued at ms, last error, reason,
/// failed at ms).
const DEAD_LETTERS: TableDefinition<u64, DeadRow> = TableDefinition::new("queue_dead_letters");
/// Quarantined payloads: id → `QuarantineEntry` as JSON.
const QUARANTINE: TableDefinition<u64, &[u8]> = TableDefinition::new("quarantine");

type TaskRow = (
    &'static str,
    &'static [u8],
    u32,
    u64,
    u64,
    Option<&'static str>,
);
type DeadRow = (
    &'static str,
    &'static [u8],
    u32,
    u64,
    Option<&'static str>,
    &'static str,
    u64,
);

/// [`SEQUENCES`] entry for task ids.
const SEQ_TASK: &str = "task";
/// [`SEQUENCES`] entry for quarantine ids.
const SEQ_QUARANTINE: &str = "quarantine";
/// [`SEQUENCES`] entry for the call log's append order.
const SEQ_CALL_LOG: &str = "call_log";
/// [`SEQUENCES`] entry for the lists' append order (one sequence for every list).
const SEQ_LIST: &str = "list";

// --- limits ------------------------------------------------------------------------------

/// Most requests applied in one write transaction. Bounds the latency a huge burst adds to
/// the first caller of the batch; at ~1 ms per fsync this is far above what arrives meanwhile.
pub const MAX_BATCH: usize = 4096;
/// How often the writer deletes expired KV records and owner entries.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(30);
/// Most expired rows deleted per purge transaction (the rest waits for the next purge).
pub const PURGE_LIMIT: usize = 20_000;
/// redb's page cache. redb defaults to 1 GiB; the hot data lives in our own mirrors, so a
/// small cache keeps RSS predictable (SPEC §10: 1,000,000 owners ≤ 150 MB).
pub const CACHE_SIZE_BYTES: usize = 16 * 1024 * 1024;
/// "No expiry" in the expiry columns.
const NEVER: u64 = 0;

// --- errors ------------------------------------------------------------------------------

/// Every redb error becomes [`StoreError::Redb`] with the redb error as its cause.
macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Redb(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        StoreError::Redb(e)
    }
}

impl Op {
    /// `key` = `value` from now, for `ttl` (or for good).
    fn set(key: &str, value: &[u8], ttl: Option<Duration>, only_if_absent: bool) -> Op {
        Op::SetRaw {
            key: key.to_owned(),
            value: value.to_vec(),
            expires_ms: expiry_ms(now_ms(), ttl),
            only_if_absent,
        }
    }

    /// `value` appended to the list `key`, kept `ttl` from now.
    fn append(key: &str, value: &[u8], ttl: Duration) -> Op {
        Op::AppendList {
            key: key.to_owned(),
            value: value.to_vec(),
            expires_ms: expiry_ms(now_ms(), Some(ttl)),
        }
    }
}

fn expiry_ms(now: u64, ttl: Option<Duration>) -> u64 {
    match ttl {
        None => NEVER,
        // At least 1 ms, so a zero TTL is "already expired", never "forever".
        Some(ttl) => now
            .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
            .max(1),
    }
}

fn is_live(expires_ms: u64, now: u64) -> bool {
    expires_ms == NEVER || expires_ms > now
}

// --- the store ---------------------------------------------------------------------------

/// The embedded, single-file store. See the module docs.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    tx: Option<Sender<Request>>,
    writer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

impl Drop for EmbeddedStore {
    /// Stops the writer (it finishes what it was sent) and waits for it, so the file is
    /// closed and can be reopened as soon as the store is dropped.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store file, loads the mirrors and the queue index, and starts
    /// the writer thread.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = redb::Builder::new()
            .set_cache_size(CACHE_SIZE_BYTES)
            .create(path)?;
        // Create every table, so read transactions never meet a missing one. Locks and leases
        // of the key/value space found at open belong to a dead process (only one process
        // opens the file): dropped, like the queue's leases, so a restart after a kill -9 does
        // not wait for them to expire (SPEC §10 "Recovery").
        let txn = db.begin_write()?;
        {
            let mut tables = Tables::open(&txn)?;
            let mut stale = Vec::new();
            for row in tables.kv.range::<&str>(keys::PROCESS_LOCKS..)? {
                let (k, _) = row?;
                let key = k.value();
                if !key.starts_with(keys::PROCESS_LOCKS) {
                    break;
                }
                stale.push(key.to_owned());
            }
            for key in &stale {
                tables.kv.remove(key.as_str())?;
            }
        }
        txn.commit()?;

        let now = now_ms();
        let mut owners = OwnerMirror::new();
        let mut queue = QueueIndex::default();
        {
            let txn = db.begin_read()?;
            let table = txn.open_table(OWNERS)?;
            owners
                .map
                .reserve(usize::try_from(table.len()?).unwrap_or(0));
            for row in table.iter()? {
                let (k, v) = row?;
                let (customer, manager, expires_ms) = v.value();
                if is_live(expires_ms, now) {
                    owners.put(k.value(), customer, manager, expires_ms);
                }
            }
            for row in txn.open_table(TASKS)?.iter()? {
                let (k, v) = row?;
                let (group, _, _, _, not_before_ms, _) = v.value();
                queue.insert(k.value(), group, not_before_ms, now);
            }
        }

        let shared = Arc::new(Shared {
            db,
            owners: RwLock::new(owners),
            queue: Mutex::new(queue),
        });
        let (tx, rx) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("callgate-store-writer".to_owned())
            .spawn({
                let shared = shared.clone();
                move || writer_loop(shared, rx)
            })
            .map_err(StoreError::WriterThread)?;
        Ok(EmbeddedStore {
            shared,
            tx: Some(tx),
            writer: Some(writer),
        })
    }

    async fn write(&self, op: Op) -> Result<Reply, StoreError> {
        self.send(op, true).await
    }

    /// A write the caller can afford to lose in a crash ([`KeyValue::set_raw_volatile`]).
    async fn write_volatile(&self, op: Op) -> Result<Reply, StoreError> {
        self.send(op, false).await
    }

    async fn send(&self, op: Op, durable: bool) -> Result<Reply, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .as_ref()
            .ok_or(StoreError::WriterGone)?
            .send(Request { op, reply, durable })
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// A short read on the calling thread (point lookups: microseconds).
    fn read<T>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let txn = self.shared.db.begin_read()?;
        f(&txn)
    }

    /// A read that may scan, off the async workers.
    async fn read_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let txn = shared.db.begin_read()?;
            f(&txn)
        })
        .await
        .map_err(StoreError::ReadTask)?
    }

    /// Stores many owner entries in one durable transaction (index sync, bulk warm-up).
    pub async fn put_owners(
        &self,
        entries: impl IntoIterator<Item = (PhoneNumber, OwnerEntry, Duration)>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let entries = entries
            .into_iter()
            .map(|(phone, entry, ttl)| (phone_key(&phone), entry, expiry_ms(now, Some(ttl))))
            .collect();
        self.write(Op::PutOwners(entries)).await.map(|_| ())
    }

    /// Live entries in the owner mirror (expired ones not yet purged are counted).
    pub fn owner_mirror_len(&self) -> usize {
        self.shared
            .owners
            .read()
            .expect("owner mirror poisoned")
            .map
            .len()
    }
}

fn expect_bool(r: Reply) -> Result<bool, StoreError> {
    match r {
        Reply::Bool(b) => Ok(b),
        _ => Err(StoreError::UnexpectedReply),
    }
}

fn expect_u64(r: Reply) -> Result<u64, StoreError> {
    match r {
        Reply::U64(n) => Ok(n),
        _ => Err(StoreError::UnexpectedReply),
    }
}

#[async_trait]
impl KeyValue for EmbeddedStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|_| Ok(()))
    }

    async fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let now = now_ms();
        self.read(|txn| {
            let table = txn.open_table(KV)?;
            Ok(table.get(key)?.and_then(|v| {
                let (value, expires_ms) = v.value();
                is_live(expires_ms, now).then(|| value.to_vec())
            }))
        })
    }

    async fn set_raw(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        self.write(Op::set(key, value, ttl, false))
            .await
            .map(|_| ())
    }

    async fn set_raw_volatile(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        self.write_volatile(Op::set(key, value, ttl, false))
            .await
            .map(|_| ())
    }

    async fn set_raw_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        expect_bool(self.write(Op::set(key, value, ttl, true)).await?)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.write(Op::Delete {
            key: key.to_owned(),
        })
        .await
        .map(|_| ())
    }

    async fn scan_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let prefix = prefix.to_owned();
        let now = now_ms();
        self.read_blocking(move |txn| {
            let table = txn.open_table(KV)?;
            let mut out = Vec::new();
            for row in table.range::<&str>(prefix.as_str()..)? {
                if out.len() >= limit {
                    break;
                }
                let (k, v) = row?;
                let key = k.value();
                if !key.starts_with(prefix.as_str()) {
                    break;
                }
                let (value, expires_ms) = v.value();
                if is_live(expires_ms, now) {
                    out.push((key.to_owned(), value.to_vec()));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn append_list(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.write(Op::append(key, value, ttl)).await.map(|_| ())
    }

    async fn append_list_volatile(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.write_volatile(Op::append(key, value, ttl))
            .await
            .map(|_| ())
    }

    async fn read_list(&self, key: &str, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        let key = key.to_owned();
        let now = now_ms();
        self.read_blocking(move |txn| {
            let table = txn.open_table(LISTS)?;
            let mut out = Vec::new();
            for row in table.range((key.as_str(), 0)..=(key.as_str(), u64::MAX))? {
                if out.len() >= limit {
                    break;
                }
                let (_, v) = row?;
                let (value, expires_ms) = v.value();
                if is_live(expires_ms, now) {
                    out.push(value.to_vec());
                }
            }
            Ok(out)
        })
        .await
    }

    async fn delete_if_equals(&self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        expect_bool(
            self.write(Op::DeleteIfEquals {
                key: key.to_owned(),
                value: value.to_vec(),
            })
            .await?,
        )
    }

    async fn expire_if_equals(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        expect_bool(
            self.write(Op::ExpireIfEquals {
                key: key.to_owned(),
                value: value.to_vec(),
                expires_ms: expiry_ms(now_ms(), Some(ttl)),
            })
            .await?,
        )
    }

    async fn next_id(&self, sequence: &str) -> Result<u64, StoreError> {
        expect_u64(
            self.write(Op::NextId {
                sequence: sequence.to_owned(),
            })
            .await?,
        )
    }
}

#[async_trait]
impl OwnerIndex for EmbeddedStore {
    async fn get_owner(&self, phone: &PhoneNumber) -> Result<Option<OwnerEntry>, StoreError> {
        let key = phone_key(phone);
        Ok(self
            .shared
            .owners
            .read()
            .expect("owner mirror poisoned")
            .get(key, now_ms()))
    }

    async fn put_owner(
        &self,
        phone: &PhoneNumber,
        entry: OwnerEntry,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = phone_key(phone);
        self.write(Op::PutOwners(vec![(
            key,
            entry,
            expiry_ms(now_ms(), Some(ttl)),
        )]))
        .await
        .map(|_| ())
    }
}

#[async_trait]
impl ManagerStates for EmbeddedStore {
    async fn get_manager_state(&self, id: ManagerId) -> Result<Option<ManagerState>, StoreError> {
        // Read at start only (the lookup reads `sync::managers::ManagerBoard`, in memory).
        self.read(|txn| {
            txn.open_table(MANAGER_STATES)?
                .get(id.0)?
                .map(|v| {
                    serde_json::from_slice(v.value())
                        .map_err(|e| StoreError::corrupt(format!("manager_states/{}", id.0), e))
                })
                .transpose()
        })
    }

    async fn set_manager_state(
        &self,
        id: ManagerId,
        state: ManagerState,
    ) -> Result<(), StoreError> {
        let json =
            serde_json::to_vec(&state).map_err(|e| StoreError::encode("manager state", e))?;
        self.write(Op::SetManagerState { id, json })
            .await
            .map(|_| ())
    }
}

#[async_trait]
impl CallLog for EmbeddedStore {
    async fn append_call_log(&self, entry: &CallLogEntry) -> Result<(), StoreError> {
        let json =
            serde_json::to_vec(entry).map_err(|e| StoreError::encode("call log entry", e))?;
        let phone = entry.client_phone.as_ref().map(phone_key);
        self.write(Op::AppendCallLog {
            date_ms: entry.date.and_utc().timestamp_millis(),
            phone,
            manager: entry.manager_id,
            json,
        })
        .await
        .map(|_| ())
    }

    async fn last_talked(&self, phone: &PhoneNumber) -> Result<Option<ManagerId>, StoreError> {
        let key = phone_key(phone);
        self.read(|txn| {
            let table = txn.open_table(LAST_TALKED)?;
            Ok(table.get(key)?.map(|v| ManagerId(v.value().1)))
        })
    }

    async fn query_call_log(
        &self,
        filter: &CallLogFilter,
        before: Option<CallLogPosition>,
        limit: usize,
    ) -> Result<Vec<LoggedCall>, StoreError> {
        let filter = filter.clone();
        self.read_blocking(move |txn| {
            let table = txn.open_table(CALL_LOG)?;
            let rows = match before {
                Some(p) => table.range(..(p.date_ms, p.seq))?,
                None => table.range::<(i64, u64)>(..)?,
            };
            let mut out = Vec::new();
            for row in rows.rev() {
                if out.len() >= limit {
                    break;
                }
                let (k, v) = row?;
                let (date_ms, seq) = k.value();
                let entry: CallLogEntry = serde_json::from_slice(v.value())
                    .map_err(|e| StoreError::corrupt(format!("call_log/{date_ms}/{seq}"), e))?;
                if filter.matches(&entry) {
                    out.push(LoggedCall {
                        position: CallLogPosition { date_ms, seq },
                        entry,
                    });
                }
            }
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl Queue for EmbeddedStore {
    async fn enqueue(
        &self,
        dedupe_key: &str,
        dedupe_ttl: Duration,
        group: &str,
        payload: &[u8],
    ) -> Result<EnqueueOutcome, StoreError> {
        match self
            .write(Op::Enqueue {
                dedupe_key: dedupe_key.to_owned(),
                dedupe_expires_ms: expiry_ms(now_ms(), Some(dedupe_ttl)),
                group: group.to_owned(),
                payload: payload.to_vec(),
            })
            .await?
        {
            Reply::Enqueued(outcome) => Ok(outcome),
            _ => Err(StoreError::UnexpectedReply),
        }
    }

    async fn claim_next(&self, lease: Duration) -> Result<Option<QueuedTask>, StoreError> {
        loop {
            let claimed = self
                .shared
                .queue
                .lock()
                .expect("queue index poisoned")
                .claim(now_ms(), Instant::now(), lease);
            let Some((id, token)) = claimed else {
                return Ok(None);
            };
            let task = self.read(|txn| {
                let table = txn.open_table(TASKS)?;
                Ok(table.get(id)?.map(|v| TaskRecord::from_row(v.value())))
            })?;
            match task {
                Some(task) => {
                    let mut task = task.into_task(id);
                    task.lease_token = token;
                    return Ok(Some(task));
                }
                // Completed or dead-lettered between the claim and the read: drop it from
                // the index (its removal effect may still be on its way) and claim again.
                None => self
                    .shared
                    .queue
                    .lock()
                    .expect("queue index poisoned")
                    .remove(id, now_ms()),
            }
        }
    }

    async fn renew_lease(&self, lease: Lease, duration: Duration) -> Result<(), StoreError> {
        let renewed = self
            .shared
            .queue
            .lock()
            .expect("queue index poisoned")
            .renew(lease.id, lease.token, Instant::now(), duration);
        if renewed {
            Ok(())
        } else {
            Err(StoreError::LeaseLost(lease.id))
        }
    }

    async fn complete(&self, lease: Lease) -> Result<(), StoreError> {
        self.write(Op::Complete {
            id: lease.id,
            token: lease.token,
        })
        .await
        .map(|_| ())
    }

    async fn reschedule(
        &self,
        lease: Lease,
        delay: Duration,
        error: &str,
    ) -> Result<(), StoreError> {
        self.write(Op::Reschedule {
            id: lease.id,
            token: lease.token,
            delay,
            error: Some(error.to_owned()),
        })
        .await
        .map(|_| ())
    }

    async fn postpone(&self, lease: Lease, delay: Duration) -> Result<(), StoreError> {
        self.write(Op::Reschedule {
            id: lease.id,
            token: lease.token,
            delay,
            error: None,
        })
        .await
        .map(|_| ())
    }

    async fn dead_letter(&self, lease: Lease, reason: &str) -> Result<(), StoreError> {
        self.write(Op::DeadLetter {
            id: lease.id,
            token: lease.token,
            reason: reason.to_owned(),
        })
        .await
        .map(|_| ())
    }

    async fn retry_all_now(&self) -> Result<u64, StoreError> {
        expect_u64(self.write(Op::RetryAllNow).await?)
    }

    async fn queue_depth(&self) -> Result<u64, StoreError> {
        Ok(self
            .shared
            .queue
            .lock()
            .expect("queue index poisoned")
            .tasks
            .len() as u64)
    }

    async fn list_queue(&self, limit: usize) -> Result<Vec<QueuedTask>, StoreError> {
        self.read_blocking(move |txn| {
            let table = txn.open_table(TASKS)?;
            let mut out = Vec::new();
            for row in table.iter()?.take(limit) {
                let (k, v) = row?;
                out.push(TaskRecord::from_row(v.value()).into_task(k.value()));
            }
            Ok(out)
        })
        .await
    }

    async fn list_dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.read_blocking(move |txn| {
            let table = txn.open_table(DEAD_LETTERS)?;
            let mut out = Vec::new();
            for row in table.iter()?.rev().take(limit) {
                let (k, v) = row?;
                out.push(dead_letter_from_row(k.value(), v.value()));
            }
            Ok(out)
        })
        .await
    }

    async fn dead_letter_count(&self) -> Result<u64, StoreError> {
        self.read(|txn| Ok(txn.open_table(DEAD_LETTERS)?.len()?))
    }

    async fn replay_dead_letter(&self, id: u64) -> Result<bool, StoreError> {
        expect_bool(self.write(Op::ReplayDeadLetter { id }).await?)
    }

    async fn discard_dead_letter(&self, id: u64) -> Result<bool, StoreError> {
        expect_bool(self.write(Op::DiscardDeadLetter { id }).await?)
    }

    async fn quarantine(
        &self,
        reason: &str,
        content_type: Option<&str>,
        raw: &str,
    ) -> Result<u64, StoreError> {
        expect_u64(
            self.write(Op::Quarantine {
                reason: reason.to_owned(),
                content_type: content_type.map(str::to_owned),
                raw: raw.to_owned(),
            })
            .await?,
        )
    }

    async fn list_quarantine(&self, limit: usize) -> Result<Vec<QuarantineEntry>, StoreError> {
        self.read_blocking(move |txn| {
            let table = txn.open_table(QUARANTINE)?;
            let mut out = Vec::new();
            for row in table.iter()?.rev().take(limit) {
                let (k, v) = row?;
                let entry: QuarantineEntry = serde_json::from_slice(v.value())
                    .map_err(|e| StoreError::corrupt(format!("quarantine/{}", k.value()), e))?;
                out.push(entry);
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn purge_deletes_expired_rows_only() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let store = EmbeddedStore::open(&dir.path().join("s.redb")).expect("open");
        let short = Duration::from_millis(1);
        let long = Duration::from_secs(3600);
        let gone = PhoneNumber::from_e164("+380981234567").expect("valid");
        let kept = PhoneNumber::from_e164("+380501112233").expect("valid");
        store
            .set_raw("k:gone", b"1", Some(short))
            .await
            .expect("set");
        store
            .set_raw("k:kept", b"2", Some(long))
            .await
            .expect("set");
        // Overwritten with a longer TTL: its stale expiry-index entry must not delete it.
        store
            .set_raw("k:renewed", b"3", Some(short))
            .await
            .expect("set");
        store.set_raw("k:renewed", b"4", None).await.expect("set");
        store
            .append_list("l:1", b"gone", short)
            .await
            .expect("append");
        store
            .append_list("l:1", b"kept", long)
            .await
            .expect("append");
        store
            .put_owner(&gone, OwnerEntry::NEGATIVE, short)
            .await
            .expect("put");
        store
            .put_owner(&kept, OwnerEntry::NEGATIVE, long)
            .await
            .expect("put");
        let deadline = now_ms() + 2;
        while now_ms() <= deadline {
            tokio::task::yield_now().await;
        }

        writer::run_purge(&store.shared).expect("purge");

        let txn = store.shared.db.begin_read().expect("read");
        let kv = txn.open_table(KV).expect("kv");
        assert!(kv.get("k:gone").expect("get").is_none());
        assert!(kv.get("k:kept").expect("get").is_some());
        assert!(kv.get("k:renewed").expect("get").is_some());
        let owners = txn.open_table(OWNERS).expect("owners");
        assert!(owners.get(phone_key(&gone)).expect("get").is_none());
        assert!(owners.get(phone_key(&kept)).expect("get").is_some());
        assert_eq!(store.owner_mirror_len(), 1);
        let expiry = txn.open_table(KV_EXPIRY).expect("expiry");
        assert_eq!(expiry.len().expect("len"), 1, "only k:kept's entry is left");
        let lists = txn.open_table(LISTS).expect("lists");
        let values: Vec<Vec<u8>> = lists
            .iter()
            .expect("iter")
            .map(|row| row.expect("row").1.value().0.to_vec())
            .collect();
        assert_eq!(values, [b"kept".to_vec()], "the expired value is deleted");
        let list_expiry = txn.open_table(LIST_EXPIRY).expect("list expiry");
        assert_eq!(list_expiry.len().expect("len"), 1, "and its expiry entry");
    }
}
