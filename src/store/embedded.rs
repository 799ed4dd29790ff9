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
//! aborts the transaction and fails the whole batch, nothing of it committed.
//!
//! **Mirrors.** The hot-path reads (`get_owner`, `get_manager_state`) never touch redb: the
//! owner index and the manager states are mirrored in memory, loaded at open and updated by
//! the writer right after each commit, before the callers are answered (so a caller reads its
//! own write). The owner mirror is compact: the E.164 digits packed into a `u64` (length in
//! the top byte, so the packing is injective) map to a 20-byte value (customer, interned
//! manager, expiry in ms), 28 bytes per entry with no padding, hashed by a seeded
//! multiply-fold hasher. TTLs are honoured on read (an expired entry reads as absent) and
//! expired rows are purged every [`PURGE_INTERVAL`] in a transaction of their own.
//!
//! **Queue.** Tasks are durable rows; leases are not. An in-memory `QueueIndex`, rebuilt
//! at open from the task table, orders the waiting tasks by id, keeps one head per group
//! (events of one call are handed out one at a time, in id order) and splits those heads into
//! due, delayed (`not_before` in the future) and leased. `claim_next` is thus `O(log n)` in
//! memory plus one point read for the payload, also with 10,000 queued tasks. A lease that
//! expires makes its task claimable again (the worker crashed or hung). `complete` is
//! idempotent; `complete`/`reschedule`/`dead_letter` carry no lease token, so a worker whose
//! lease ran out still acts on the task (callers must pick leases longer than a task's worst
//! run, as svix warns about its pending timeout).
//!
//! **Reads.** Point reads (`get_raw`, `last_talked`, the payload of a claim) open a redb read
//! transaction on the calling task: microseconds, no fsync, never blocked by the writer.
//! Scans (`scan_prefix`, `query_call_log`, the lists) run on `spawn_blocking`.
//!
//! **What survives a crash.** Everything acknowledged: KV records (with their expiry), counters,
//! owners, manager states, call log and last talked, queued tasks (with attempt, delay, last
//! error), dead letters, quarantine. Leases do not: after a restart every unfinished task is
//! claimable again, so a task may be delivered twice (at-least-once; CRM actions carry dedupe
//! keys, SPEC §6). A request whose caller was not yet answered may or may not have committed.
//!
//! **No key prefix.** `store.key_prefix` namespaces keys on a *shared* medium (one Redis for
//! several deployments). The embedded file is private to one callgate, so the prefix would only
//! cost bytes on every key; it is ignored here.

use std::{
    collections::{BTreeSet, HashMap},
    hash::{BuildHasher, Hash, Hasher},
    path::Path,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, Sender},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    Table, TableDefinition, WriteTransaction,
};
use tokio::sync::oneshot;

use super::{
    DeadLetter, EnqueueOutcome, OwnerEntry, QuarantineEntry, QueuedTask, Store, StoreError, now_ms,
};
use crate::{
    crm::CustomerId,
    domain::{
        call_log::{CallLogEntry, CallLogFilter, CallLogPosition, LoggedCall},
        manager::{ManagerId, ManagerState},
        phone_number::PhoneNumber,
    },
};

// --- tables ------------------------------------------------------------------------------

/// Raw key/value records: key → (value, expiry in ms since the epoch, `0` = never).
/// Also holds the queue's dedupe keys (value: the task id, big endian).
const KV: TableDefinition<&str, (&[u8], u64)> = TableDefinition::new("kv");
/// Expiry index of [`KV`]: (expiry ms, key) → (). Lets the purge find expired keys without a
/// full scan. May hold stale entries (key overwritten or deleted); the purge checks.
const KV_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("kv_expiry");
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

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Backend(format!("redb: {e}"))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

fn writer_gone() -> StoreError {
    StoreError::Backend("the store's writer thread has stopped".to_owned())
}

fn corrupt(key: impl Into<String>, detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        key: key.into(),
        detail: detail.to_string(),
    }
}

// --- phone keys and the owner mirror -----------------------------------------------------

/// Packs an E.164 number into a `u64`: digit count in the top byte, the digits' value below
/// (≤ 15 digits < 2^50). Injective, also for leading zeros.
pub fn phone_key(phone: &PhoneNumber) -> Result<u64, StoreError> {
    let e164 = phone.e164();
    let digits = e164
        .strip_prefix('+')
        .filter(|d| (1..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| corrupt("phone", "not an E.164 number"))?;
    let value = digits
        .bytes()
        .fold(0u64, |acc, b| acc * 10 + u64::from(b - b'0'));
    Ok(((digits.len() as u64) << 56) | value)
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

/// A `u64` split into two `u32`s, so mirror entries align to 4 bytes and carry no padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct U64Halves([u32; 2]);

impl U64Halves {
    fn new(v: u64) -> Self {
        U64Halves([(v >> 32) as u32, v as u32])
    }
    fn get(self) -> u64 {
        (u64::from(self.0[0]) << 32) | u64::from(self.0[1])
    }
}

impl Hash for U64Halves {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.get());
    }
}

/// One owner entry in memory: 20 bytes.
#[derive(Debug, Clone, Copy)]
struct PackedOwner {
    /// `u64::MAX` = none (negative entry).
    customer: U64Halves,
    expires_ms: U64Halves,
    /// Index into [`OwnerMirror::managers`]; `u32::MAX` = none.
    manager: u32,
}

const NO_CUSTOMER: u64 = u64::MAX;
const NO_MANAGER: u32 = u32::MAX;

/// Seeded multiply-fold hasher for `u64` keys (phone numbers, chosen by callers, so the seed
/// is random per process to keep collisions unpredictable).
#[derive(Debug, Clone)]
struct SeededU64Hash {
    seed: u64,
}

struct SeededU64Hasher {
    state: u64,
}

/// An odd constant with well-mixed bits (from the golden ratio).
const HASH_MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

fn folded_multiply(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

impl BuildHasher for SeededU64Hash {
    type Hasher = SeededU64Hasher;
    fn build_hasher(&self) -> SeededU64Hasher {
        SeededU64Hasher { state: self.seed }
    }
}

impl Hasher for SeededU64Hasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(buf));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.state = folded_multiply(self.state ^ n, HASH_MULTIPLIER);
    }
    fn finish(&self) -> u64 {
        self.state
    }
}

/// The in-memory owner index.
struct OwnerMirror {
    map: HashMap<U64Halves, PackedOwner, SeededU64Hash>,
    /// Interned manager ids: few managers, many numbers.
    managers: Vec<ManagerId>,
    manager_index: HashMap<ManagerId, u32>,
    /// No entry expires before this (ms; `u64::MAX`: none expires): until then the purge
    /// skips the scan of the whole map. Updated by puts (under the write lock) and by the
    /// purge's scan (under the read lock, hence atomic).
    earliest_expiry: AtomicU64,
}

impl OwnerMirror {
    fn new() -> Self {
        OwnerMirror {
            map: HashMap::with_hasher(SeededU64Hash {
                seed: rand::random(),
            }),
            managers: Vec::new(),
            manager_index: HashMap::new(),
            earliest_expiry: AtomicU64::new(u64::MAX),
        }
    }

    fn get(&self, key: u64, now: u64) -> Option<OwnerEntry> {
        let packed = self.map.get(&U64Halves::new(key))?;
        if !is_live(packed.expires_ms.get(), now) {
            return None;
        }
        let customer = packed.customer.get();
        Some(OwnerEntry {
            customer_id: (customer != NO_CUSTOMER).then_some(CustomerId(customer)),
            manager_id: self.managers.get(packed.manager as usize).copied(),
        })
    }

    fn put(&mut self, key: u64, customer: Option<u64>, manager: Option<u64>, expires_ms: u64) {
        let manager = match manager {
            None => NO_MANAGER,
            Some(m) => {
                let m = ManagerId(m);
                match self.manager_index.get(&m) {
                    Some(&i) => i,
                    None => {
                        // Fewer than 2^32 - 1 distinct managers, or the mirror would not fit
                        // in memory anyway; saturate rather than wrap.
                        let i = u32::try_from(self.managers.len())
                            .unwrap_or(NO_MANAGER - 1)
                            .min(NO_MANAGER - 1);
                        self.managers.push(m);
                        self.manager_index.insert(m, i);
                        i
                    }
                }
            }
        };
        if expires_ms != NEVER {
            self.earliest_expiry
                .fetch_min(expires_ms, Ordering::Relaxed);
        }
        self.map.insert(
            U64Halves::new(key),
            PackedOwner {
                customer: U64Halves::new(customer.unwrap_or(NO_CUSTOMER)),
                expires_ms: U64Halves::new(expires_ms),
                manager,
            },
        );
    }

    /// Keys of expired entries, at most `limit`. Scans the map only when some entry may have
    /// expired, and learns from the scan when the next one will.
    fn expired(&self, now: u64, limit: usize) -> Vec<u64> {
        if self.earliest_expiry.load(Ordering::Relaxed) > now {
            return Vec::new();
        }
        let mut expired = Vec::new();
        let mut earliest_live = u64::MAX;
        for (k, v) in &self.map {
            let expires = v.expires_ms.get();
            if is_live(expires, now) {
                if expires != NEVER {
                    earliest_live = earliest_live.min(expires);
                }
            } else if expired.len() < limit {
                expired.push(k.get());
            } else {
                // More than one purge's worth: the next purge scans again.
                earliest_live = now;
                break;
            }
        }
        // The caller holds the read lock, so no put runs meanwhile. The expired entries are
        // about to be deleted; if that fails, the purge calls `rescan`.
        self.earliest_expiry.store(earliest_live, Ordering::Relaxed);
        expired
    }

    /// Makes the next purge scan the whole map.
    fn rescan(&self) {
        self.earliest_expiry.store(0, Ordering::Relaxed);
    }
}

// --- queue index -------------------------------------------------------------------------

struct TaskMeta {
    group: Arc<str>,
    not_before_ms: u64,
}

#[derive(Default)]
struct GroupState {
    /// Unfinished tasks of the group; the first is its head, the only claimable one.
    ids: BTreeSet<u64>,
    /// The task of this group currently leased, if any (at most one).
    leased: Option<u64>,
}

/// In-memory scheduling state of the durable queue. Invariant: the head of every group
/// without a lease is in exactly one of `ready` (due) and `delayed`; every lease is in
/// `leases`; no other task is in any of them.
#[derive(Default)]
struct QueueIndex {
    tasks: HashMap<u64, TaskMeta>,
    groups: HashMap<Arc<str>, GroupState>,
    ready: BTreeSet<u64>,
    delayed: BTreeSet<(u64, u64)>,
    leases: BTreeSet<(Instant, u64)>,
    lease_of: HashMap<u64, Instant>,
}

impl QueueIndex {
    fn head(&self, group: &str) -> Option<u64> {
        let g = self.groups.get(group)?;
        if g.leased.is_some() {
            return None;
        }
        g.ids.first().copied()
    }

    fn unschedule(&mut self, group: &str) {
        if let Some(head) = self.head(group) {
            self.ready.remove(&head);
            if let Some(meta) = self.tasks.get(&head) {
                self.delayed.remove(&(meta.not_before_ms, head));
            }
        }
    }

    fn schedule(&mut self, group: &str, now: u64) {
        if let Some(head) = self.head(group)
            && let Some(meta) = self.tasks.get(&head)
        {
            if meta.not_before_ms <= now {
                self.ready.insert(head);
            } else {
                self.delayed.insert((meta.not_before_ms, head));
            }
        }
    }

    fn insert(&mut self, id: u64, group: &str, not_before_ms: u64, now: u64) {
        let group: Arc<str> = match self.groups.get_key_value(group) {
            Some((k, _)) => k.clone(),
            None => Arc::from(group),
        };
        self.unschedule(&group);
        self.tasks.insert(
            id,
            TaskMeta {
                group: group.clone(),
                not_before_ms,
            },
        );
        self.groups.entry(group.clone()).or_default().ids.insert(id);
        self.schedule(&group, now);
    }

    fn release_lease(&mut self, id: u64, group: &str) {
        if let Some(at) = self.lease_of.remove(&id) {
            self.leases.remove(&(at, id));
        }
        if let Some(g) = self.groups.get_mut(group)
            && g.leased == Some(id)
        {
            g.leased = None;
        }
    }

    fn remove(&mut self, id: u64, now: u64) {
        let Some(group) = self.tasks.get(&id).map(|m| m.group.clone()) else {
            return;
        };
        self.unschedule(&group);
        self.release_lease(id, &group);
        self.tasks.remove(&id);
        let empty = match self.groups.get_mut(&group) {
            Some(g) => {
                g.ids.remove(&id);
                g.ids.is_empty()
            }
            None => false,
        };
        if empty {
            self.groups.remove(&group);
        } else {
            self.schedule(&group, now);
        }
    }

    fn set_not_before(&mut self, id: u64, not_before_ms: u64, now: u64) {
        let Some(group) = self.tasks.get(&id).map(|m| m.group.clone()) else {
            return;
        };
        self.unschedule(&group);
        self.release_lease(id, &group);
        if let Some(meta) = self.tasks.get_mut(&id) {
            meta.not_before_ms = not_before_ms;
        }
        self.schedule(&group, now);
    }

    /// Leases the oldest due head, after promoting due delays and expiring old leases.
    fn claim(&mut self, now_ms: u64, now: Instant, lease: Duration) -> Option<u64> {
        while let Some(&(nb, id)) = self.delayed.first() {
            if nb > now_ms {
                break;
            }
            self.delayed.remove(&(nb, id));
            self.ready.insert(id);
        }
        while let Some(&(at, id)) = self.leases.first() {
            if at > now {
                break;
            }
            if let Some(group) = self.tasks.get(&id).map(|m| m.group.clone()) {
                self.release_lease(id, &group);
                self.schedule(&group, now_ms);
            } else {
                self.leases.remove(&(at, id));
                self.lease_of.remove(&id);
            }
        }
        let id = self.ready.pop_first()?;
        let group = self.tasks.get(&id)?.group.clone();
        let until = now + lease;
        if let Some(g) = self.groups.get_mut(&group) {
            g.leased = Some(id);
        }
        self.leases.insert((until, id));
        self.lease_of.insert(id, until);
        Some(id)
    }
}

// --- the writer --------------------------------------------------------------------------

/// A durable write, applied by the writer thread.
enum Op {
    SetRaw {
        key: String,
        value: Vec<u8>,
        expires_ms: u64,
        only_if_absent: bool,
    },
    Delete {
        key: String,
    },
    NextId {
        sequence: String,
    },
    PutOwners(Vec<(u64, OwnerEntry, u64)>),
    SetManagerState {
        id: ManagerId,
        state: ManagerState,
        json: Vec<u8>,
    },
    AppendCallLog {
        date_ms: i64,
        phone: Option<u64>,
        manager: Option<ManagerId>,
        json: Vec<u8>,
    },
    Enqueue {
        dedupe_key: String,
        dedupe_expires_ms: u64,
        group: String,
        payload: Vec<u8>,
    },
    Complete {
        id: u64,
    },
    /// With an error: a failed attempt (counted); without: postponed.
    Reschedule {
        id: u64,
        delay: Duration,
        error: Option<String>,
    },
    DeadLetter {
        id: u64,
        reason: String,
    },
    ReplayDeadLetter {
        id: u64,
    },
    DiscardDeadLetter {
        id: u64,
    },
    RetryAllNow,
    Quarantine {
        reason: String,
        content_type: Option<String>,
        raw: String,
    },
}

enum Reply {
    Unit,
    Bool(bool),
    U64(u64),
    Enqueued(EnqueueOutcome),
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<Reply, StoreError>>,
}

/// Changes to the in-memory state, applied only after the commit that made them durable.
enum Effect {
    Owner {
        key: u64,
        entry: OwnerEntry,
        expires_ms: u64,
    },
    OwnersPurged(Vec<u64>),
    Manager(ManagerId, ManagerState),
    TaskInserted {
        id: u64,
        group: String,
        not_before_ms: u64,
    },
    TaskRemoved(u64),
    TaskDelayed {
        id: u64,
        not_before_ms: u64,
    },
}

/// State shared by the store handle and the writer thread.
struct Shared {
    db: Database,
    owners: RwLock<OwnerMirror>,
    managers: RwLock<HashMap<ManagerId, ManagerState>>,
    queue: Mutex<QueueIndex>,
}

impl Shared {
    fn apply_effects(&self, effects: Vec<Effect>) {
        let now = now_ms();
        for effect in effects {
            match effect {
                Effect::Owner {
                    key,
                    entry,
                    expires_ms,
                } => self.owners.write().expect("owner mirror poisoned").put(
                    key,
                    entry.customer_id.map(|c| c.0),
                    entry.manager_id.map(|m| m.0),
                    expires_ms,
                ),
                Effect::OwnersPurged(keys) => {
                    let mut owners = self.owners.write().expect("owner mirror poisoned");
                    for key in keys {
                        let k = U64Halves::new(key);
                        // Re-check: a put may have renewed it since the purge looked.
                        if owners
                            .map
                            .get(&k)
                            .is_some_and(|v| !is_live(v.expires_ms.get(), now))
                        {
                            owners.map.remove(&k);
                        }
                    }
                }
                Effect::Manager(id, state) => {
                    self.managers
                        .write()
                        .expect("manager mirror poisoned")
                        .insert(id, state);
                }
                Effect::TaskInserted {
                    id,
                    group,
                    not_before_ms,
                } => self.queue.lock().expect("queue index poisoned").insert(
                    id,
                    &group,
                    not_before_ms,
                    now,
                ),
                Effect::TaskRemoved(id) => {
                    self.queue
                        .lock()
                        .expect("queue index poisoned")
                        .remove(id, now);
                }
                Effect::TaskDelayed { id, not_before_ms } => self
                    .queue
                    .lock()
                    .expect("queue index poisoned")
                    .set_not_before(id, not_before_ms, now),
            }
        }
    }
}

/// The tables a write transaction touches, opened once per batch.
struct Tables<'txn> {
    kv: Table<'txn, &'static str, (&'static [u8], u64)>,
    kv_expiry: Table<'txn, (u64, &'static str), ()>,
    counters: Table<'txn, &'static str, u64>,
    sequences: Table<'txn, &'static str, u64>,
    owners: Table<'txn, u64, (Option<u64>, Option<u64>, u64)>,
    manager_states: Table<'txn, u64, &'static [u8]>,
    call_log: Table<'txn, (i64, u64), &'static [u8]>,
    last_talked: Table<'txn, u64, (i64, u64)>,
    tasks: Table<'txn, u64, TaskRow>,
    dead_letters: Table<'txn, u64, DeadRow>,
    quarantine: Table<'txn, u64, &'static [u8]>,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Tables {
            kv: txn.open_table(KV)?,
            kv_expiry: txn.open_table(KV_EXPIRY)?,
            counters: txn.open_table(COUNTERS)?,
            sequences: txn.open_table(SEQUENCES)?,
            owners: txn.open_table(OWNERS)?,
            manager_states: txn.open_table(MANAGER_STATES)?,
            call_log: txn.open_table(CALL_LOG)?,
            last_talked: txn.open_table(LAST_TALKED)?,
            tasks: txn.open_table(TASKS)?,
            dead_letters: txn.open_table(DEAD_LETTERS)?,
            quarantine: txn.open_table(QUARANTINE)?,
        })
    }

    fn next_sequence(&mut self, name: &str) -> Result<u64, StoreError> {
        let next = self.sequences.get(name)?.map_or(0, |v| v.value()) + 1;
        self.sequences.insert(name, next)?;
        Ok(next)
    }

    fn kv_live(&self, key: &str, now: u64) -> Result<bool, StoreError> {
        Ok(self.kv.get(key)?.is_some_and(|v| is_live(v.value().1, now)))
    }

    fn kv_set(&mut self, key: &str, value: &[u8], expires_ms: u64) -> Result<(), StoreError> {
        self.kv.insert(key, (value, expires_ms))?;
        if expires_ms != NEVER {
            self.kv_expiry.insert((expires_ms, key), ())?;
        }
        Ok(())
    }

    fn task(&self, id: u64) -> Result<Option<TaskRecord>, StoreError> {
        Ok(self.tasks.get(id)?.map(|v| TaskRecord::from_row(v.value())))
    }

    fn put_task(&mut self, id: u64, t: &TaskRecord) -> Result<(), StoreError> {
        self.tasks.insert(
            id,
            (
                t.group.as_str(),
                t.payload.as_slice(),
                t.attempt,
                t.enqueued_at_ms,
                t.not_before_ms,
                t.last_error.as_deref(),
            ),
        )?;
        Ok(())
    }

    /// Applies one request. The outer error aborts the batch (storage failure); the inner
    /// one answers this request only, and is returned before anything was written.
    fn apply(
        &mut self,
        op: Op,
        now: u64,
        effects: &mut Vec<Effect>,
    ) -> Result<Result<Reply, StoreError>, StoreError> {
        let reply = match op {
            Op::SetRaw {
                key,
                value,
                expires_ms,
                only_if_absent,
            } => {
                if only_if_absent && self.kv_live(&key, now)? {
                    Reply::Bool(false)
                } else {
                    self.kv_set(&key, &value, expires_ms)?;
                    Reply::Bool(true)
                }
            }
            Op::Delete { key } => {
                self.kv.remove(key.as_str())?;
                Reply::Unit
            }
            Op::NextId { sequence } => {
                let next = self
                    .counters
                    .get(sequence.as_str())?
                    .map_or(0, |v| v.value())
                    + 1;
                self.counters.insert(sequence.as_str(), next)?;
                Reply::U64(next)
            }
            Op::PutOwners(entries) => {
                for (key, entry, expires_ms) in entries {
                    self.owners.insert(
                        key,
                        (
                            entry.customer_id.map(|c| c.0),
                            entry.manager_id.map(|m| m.0),
                            expires_ms,
                        ),
                    )?;
                    effects.push(Effect::Owner {
                        key,
                        entry,
                        expires_ms,
                    });
                }
                Reply::Unit
            }
            Op::SetManagerState { id, state, json } => {
                self.manager_states.insert(id.0, json.as_slice())?;
                effects.push(Effect::Manager(id, state));
                Reply::Unit
            }
            Op::AppendCallLog {
                date_ms,
                phone,
                manager,
                json,
            } => {
                let seq = self.next_sequence(SEQ_CALL_LOG)?;
                self.call_log.insert((date_ms, seq), json.as_slice())?;
                if let (Some(phone), Some(manager)) = (phone, manager) {
                    let newer = self
                        .last_talked
                        .get(phone)?
                        .is_none_or(|v| v.value().0 <= date_ms);
                    if newer {
                        self.last_talked.insert(phone, (date_ms, manager.0))?;
                    }
                }
                Reply::Unit
            }
            Op::Enqueue {
                dedupe_key,
                dedupe_expires_ms,
                group,
                payload,
            } => {
                if self.kv_live(&dedupe_key, now)? {
                    Reply::Enqueued(EnqueueOutcome::Duplicate)
                } else {
                    let id = self.next_sequence(SEQ_TASK)?;
                    self.kv_set(&dedupe_key, &id.to_be_bytes(), dedupe_expires_ms)?;
                    let task = TaskRecord {
                        group,
                        payload,
                        attempt: 0,
                        enqueued_at_ms: now,
                        not_before_ms: now,
                        last_error: None,
                    };
                    self.put_task(id, &task)?;
                    effects.push(Effect::TaskInserted {
                        id,
                        group: task.group,
                        not_before_ms: now,
                    });
                    Reply::Enqueued(EnqueueOutcome::Accepted { id })
                }
            }
            Op::Complete { id } => {
                // Idempotent: a task completed twice (lease expired, delivered again) is fine.
                self.tasks.remove(id)?;
                effects.push(Effect::TaskRemoved(id));
                Reply::Unit
            }
            Op::Reschedule { id, delay, error } => {
                let Some(mut task) = self.task(id)? else {
                    return Ok(Err(StoreError::NoSuchTask(id)));
                };
                // No error: postponed, not failed.
                if let Some(error) = error {
                    task.attempt = task.attempt.saturating_add(1);
                    task.last_error = Some(error);
                }
                task.not_before_ms =
                    now.saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
                self.put_task(id, &task)?;
                effects.push(Effect::TaskDelayed {
                    id,
                    not_before_ms: task.not_before_ms,
                });
                Reply::Unit
            }
            Op::DeadLetter { id, reason } => {
                let Some(task) = self.task(id)? else {
                    return Ok(Err(StoreError::NoSuchTask(id)));
                };
                self.tasks.remove(id)?;
                self.dead_letters.insert(
                    id,
                    (
                        task.group.as_str(),
                        task.payload.as_slice(),
                        task.attempt,
                        task.enqueued_at_ms,
                        task.last_error.as_deref(),
                        reason.as_str(),
                        now,
                    ),
                )?;
                effects.push(Effect::TaskRemoved(id));
                Reply::Unit
            }
            Op::ReplayDeadLetter { id } => {
                let dead = self
                    .dead_letters
                    .remove(id)?
                    .map(|v| dead_letter_from_row(id, v.value()));
                match dead {
                    None => Reply::Bool(false),
                    Some(dead) => {
                        let task = TaskRecord {
                            group: dead.task.group,
                            payload: dead.task.payload,
                            attempt: 0,
                            enqueued_at_ms: dead.task.enqueued_at_ms,
                            not_before_ms: now,
                            last_error: dead.task.last_error,
                        };
                        self.put_task(id, &task)?;
                        effects.push(Effect::TaskInserted {
                            id,
                            group: task.group,
                            not_before_ms: now,
                        });
                        Reply::Bool(true)
                    }
                }
            }
            Op::DiscardDeadLetter { id } => Reply::Bool(self.dead_letters.remove(id)?.is_some()),
            Op::RetryAllNow => {
                let mut delayed = Vec::new();
                for row in self.tasks.iter()? {
                    let (id, v) = row?;
                    if v.value().4 > now {
                        delayed.push(id.value());
                    }
                }
                for &id in &delayed {
                    if let Some(mut task) = self.task(id)? {
                        task.not_before_ms = now;
                        self.put_task(id, &task)?;
                        effects.push(Effect::TaskDelayed {
                            id,
                            not_before_ms: now,
                        });
                    }
                }
                Reply::U64(delayed.len() as u64)
            }
            Op::Quarantine {
                reason,
                content_type,
                raw,
            } => {
                let id = self.next_sequence(SEQ_QUARANTINE)?;
                let entry = QuarantineEntry {
                    id,
                    received_at_ms: now,
                    reason,
                    content_type,
                    raw,
                };
                let json = serde_json::to_vec(&entry)
                    .map_err(|e| StoreError::Backend(format!("quarantine entry: {e}")))?;
                self.quarantine.insert(id, json.as_slice())?;
                Reply::U64(id)
            }
        };
        Ok(Ok(reply))
    }
}

/// A queued task as stored, owned.
struct TaskRecord {
    group: String,
    payload: Vec<u8>,
    attempt: u32,
    enqueued_at_ms: u64,
    not_before_ms: u64,
    last_error: Option<String>,
}

impl TaskRecord {
    fn from_row(
        (group, payload, attempt, enqueued_at_ms, not_before_ms, last_error): (
            &str,
            &[u8],
            u32,
            u64,
            u64,
            Option<&str>,
        ),
    ) -> Self {
        TaskRecord {
            group: group.to_owned(),
            payload: payload.to_vec(),
            attempt,
            enqueued_at_ms,
            not_before_ms,
            last_error: last_error.map(str::to_owned),
        }
    }

    fn into_task(self, id: u64) -> QueuedTask {
        QueuedTask {
            id,
            group: self.group,
            payload: self.payload,
            attempt: self.attempt,
            enqueued_at_ms: self.enqueued_at_ms,
            last_error: self.last_error,
        }
    }
}

fn dead_letter_from_row(
    id: u64,
    (group, payload, attempt, enqueued_at_ms, last_error, reason, failed_at_ms): (
        &str,
        &[u8],
        u32,
        u64,
        Option<&str>,
        &str,
        u64,
    ),
) -> DeadLetter {
    DeadLetter {
        task: QueuedTask {
            id,
            group: group.to_owned(),
            payload: payload.to_vec(),
            attempt,
            enqueued_at_ms,
            last_error: last_error.map(str::to_owned),
        },
        reason: reason.to_owned(),
        failed_at_ms,
    }
}

fn writer_loop(shared: Arc<Shared>, rx: Receiver<Request>) {
    let mut next_purge = Instant::now() + PURGE_INTERVAL;
    loop {
        let wait = next_purge.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(first) => {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
                run_batch(&shared, batch);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if Instant::now() >= next_purge {
            if let Err(e) = run_purge(&shared) {
                tracing::warn!(error = %e, "Embedded store purge failed; will retry.");
            }
            next_purge = Instant::now() + PURGE_INTERVAL;
        }
    }
}

fn run_batch(shared: &Shared, batch: Vec<Request>) {
    let now = now_ms();
    let mut replies = Vec::with_capacity(batch.len());
    let mut effects = Vec::new();
    let mut ops = Vec::with_capacity(batch.len());
    for req in batch {
        ops.push(req.op);
        replies.push(req.reply);
    }
    let outcome = (|| -> Result<Vec<Result<Reply, StoreError>>, StoreError> {
        let mut txn = shared.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let mut results = Vec::with_capacity(ops.len());
        {
            let mut tables = Tables::open(&txn)?;
            for op in ops {
                results.push(tables.apply(op, now, &mut effects)?);
            }
        }
        txn.commit()?;
        Ok(results)
    })();
    match outcome {
        Ok(results) => {
            shared.apply_effects(effects);
            for (reply, result) in replies.into_iter().zip(results) {
                // The caller may have gone (cancelled future); the write stands.
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, requests = replies.len(), "Embedded store commit failed.");
            let msg = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(StoreError::Backend(msg.clone())));
            }
        }
    }
}

/// Deletes expired KV records and owner entries, in a transaction of its own so the owner
/// mirror it consults is current (every earlier batch's effects are applied).
fn run_purge(shared: &Shared) -> Result<(), StoreError> {
    let now = now_ms();
    let expired_owners = shared
        .owners
        .read()
        .expect("owner mirror poisoned")
        .expired(now, PURGE_LIMIT);
    let result = purge_rows(shared, now, &expired_owners);
    match result {
        Ok(()) => shared.apply_effects(vec![Effect::OwnersPurged(expired_owners)]),
        Err(_) => shared
            .owners
            .read()
            .expect("owner mirror poisoned")
            .rescan(),
    }
    result
}

/// Deletes due KV rows and `expired_owners` in one durable transaction; writes nothing (no
/// fsync) when there is nothing to delete, the common case.
fn purge_rows(shared: &Shared, now: u64, expired_owners: &[u64]) -> Result<(), StoreError> {
    let mut due = Vec::new();
    {
        let txn = shared.db.begin_read()?;
        let kv_expiry = txn.open_table(KV_EXPIRY)?;
        for row in kv_expiry.range::<(u64, &str)>(..(now + 1, ""))? {
            let (k, _) = row?;
            let (at, key) = k.value();
            due.push((at, key.to_owned()));
            if due.len() >= PURGE_LIMIT {
                break;
            }
        }
    }
    if due.is_empty() && expired_owners.is_empty() {
        return Ok(());
    }
    let mut txn = shared.db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    {
        let mut kv = txn.open_table(KV)?;
        let mut kv_expiry = txn.open_table(KV_EXPIRY)?;
        for (at, key) in &due {
            kv_expiry.remove((*at, key.as_str()))?;
            // A stale expiry entry (the key was set again with another expiry): it stays.
            let current = kv.get(key.as_str())?.map(|v| v.value().1);
            if current == Some(*at) {
                kv.remove(key.as_str())?;
            }
        }
        let mut owners = txn.open_table(OWNERS)?;
        for &key in expired_owners {
            owners.remove(key)?;
        }
    }
    txn.commit()?;
    Ok(())
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
        // Create every table, so read transactions never meet a missing one.
        let txn = db.begin_write()?;
        Tables::open(&txn)?;
        txn.commit()?;

        let now = now_ms();
        let mut owners = OwnerMirror::new();
        let mut managers = HashMap::new();
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
            for row in txn.open_table(MANAGER_STATES)?.iter()? {
                let (k, v) = row?;
                let state: ManagerState = serde_json::from_slice(v.value())
                    .map_err(|e| corrupt(format!("manager_states/{}", k.value()), e))?;
                managers.insert(ManagerId(k.value()), state);
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
            managers: RwLock::new(managers),
            queue: Mutex::new(queue),
        });
        let (tx, rx) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("callgate-store-writer".to_owned())
            .spawn({
                let shared = shared.clone();
                move || writer_loop(shared, rx)
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the writer thread: {e}")))?;
        Ok(EmbeddedStore {
            shared,
            tx: Some(tx),
            writer: Some(writer),
        })
    }

    async fn write(&self, op: Op) -> Result<Reply, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .as_ref()
            .ok_or_else(writer_gone)?
            .send(Request { op, reply })
            .map_err(|_| writer_gone())?;
        rx.await.map_err(|_| writer_gone())?
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
        .map_err(|e| StoreError::Backend(format!("store read task failed: {e}")))?
    }

    /// Stores many owner entries in one durable transaction (index sync, bulk warm-up).
    pub async fn put_owners(
        &self,
        entries: impl IntoIterator<Item = (PhoneNumber, OwnerEntry, Duration)>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let entries = entries
            .into_iter()
            .map(|(phone, entry, ttl)| Ok((phone_key(&phone)?, entry, expiry_ms(now, Some(ttl)))))
            .collect::<Result<Vec<_>, StoreError>>()?;
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
        _ => Err(StoreError::Backend("unexpected writer reply".to_owned())),
    }
}

fn expect_u64(r: Reply) -> Result<u64, StoreError> {
    match r {
        Reply::U64(n) => Ok(n),
        _ => Err(StoreError::Backend("unexpected writer reply".to_owned())),
    }
}

#[async_trait]
impl Store for EmbeddedStore {
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
        self.write(Op::SetRaw {
            key: key.to_owned(),
            value: value.to_vec(),
            expires_ms: expiry_ms(now_ms(), ttl),
            only_if_absent: false,
        })
        .await
        .map(|_| ())
    }

    async fn set_raw_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        expect_bool(
            self.write(Op::SetRaw {
                key: key.to_owned(),
                value: value.to_vec(),
                expires_ms: expiry_ms(now_ms(), ttl),
                only_if_absent: true,
            })
            .await?,
        )
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

    async fn next_id(&self, sequence: &str) -> Result<u64, StoreError> {
        expect_u64(
            self.write(Op::NextId {
                sequence: sequence.to_owned(),
            })
            .await?,
        )
    }

    async fn get_owner(&self, phone: &PhoneNumber) -> Result<Option<OwnerEntry>, StoreError> {
        let key = phone_key(phone)?;
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
        let key = phone_key(phone)?;
        self.write(Op::PutOwners(vec![(
            key,
            entry,
            expiry_ms(now_ms(), Some(ttl)),
        )]))
        .await
        .map(|_| ())
    }

    async fn get_manager_state(&self, id: ManagerId) -> Result<Option<ManagerState>, StoreError> {
        Ok(self
            .shared
            .managers
            .read()
            .expect("manager mirror poisoned")
            .get(&id)
            .copied())
    }

    async fn set_manager_state(
        &self,
        id: ManagerId,
        state: ManagerState,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_vec(&state)
            .map_err(|e| StoreError::Backend(format!("manager state: {e}")))?;
        self.write(Op::SetManagerState { id, state, json })
            .await
            .map(|_| ())
    }

    async fn append_call_log(&self, entry: &CallLogEntry) -> Result<(), StoreError> {
        let json = serde_json::to_vec(entry)
            .map_err(|e| StoreError::Backend(format!("call log entry: {e}")))?;
        let phone = entry.client_phone.as_ref().map(phone_key).transpose()?;
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
        let key = phone_key(phone)?;
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
                    .map_err(|e| corrupt(format!("call_log/{date_ms}/{seq}"), e))?;
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
            _ => Err(StoreError::Backend("unexpected writer reply".to_owned())),
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
            let Some(id) = claimed else {
                return Ok(None);
            };
            let task = self.read(|txn| {
                let table = txn.open_table(TASKS)?;
                Ok(table.get(id)?.map(|v| TaskRecord::from_row(v.value())))
            })?;
            match task {
                Some(task) => return Ok(Some(task.into_task(id))),
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

    async fn complete(&self, id: u64) -> Result<(), StoreError> {
        self.write(Op::Complete { id }).await.map(|_| ())
    }

    async fn reschedule(&self, id: u64, delay: Duration, error: &str) -> Result<(), StoreError> {
        self.write(Op::Reschedule {
            id,
            delay,
            error: Some(error.to_owned()),
        })
        .await
        .map(|_| ())
    }

    async fn postpone(&self, id: u64, delay: Duration) -> Result<(), StoreError> {
        self.write(Op::Reschedule {
            id,
            delay,
            error: None,
        })
        .await
        .map(|_| ())
    }

    async fn dead_letter(&self, id: u64, reason: &str) -> Result<(), StoreError> {
        self.write(Op::DeadLetter {
            id,
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
                    .map_err(|e| corrupt(format!("quarantine/{}", k.value()), e))?;
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

    #[test]
    fn phone_keys_are_injective_for_leading_zeros_and_lengths() {
        let a = phone_key(&PhoneNumber::from_e164("+380981234567").expect("valid")).expect("key");
        // E.164 has no leading zero, so `+0…` never reaches the store; different lengths with
        // the same digits must still not collide.
        assert!(PhoneNumber::from_e164("+0380981234567").is_err());
        let b = phone_key(&PhoneNumber::from_e164("+38098123456").expect("valid")).expect("key");
        let c =
            phone_key(&PhoneNumber::from_e164("+999999999999999").expect("valid")).expect("key");
        assert_ne!(a, b);
        assert_eq!(c & ((1 << 56) - 1), 999_999_999_999_999);
    }

    #[test]
    fn owner_mirror_entries_are_compact() {
        assert_eq!(std::mem::size_of::<(U64Halves, PackedOwner)>(), 28);
    }

    #[test]
    fn the_owner_mirror_scans_for_expired_entries_only_when_one_can_have_expired() {
        let mut mirror = OwnerMirror::new();
        mirror.put(1, None, None, 1_000);
        mirror.put(2, None, None, NEVER);
        mirror.put(3, None, None, 5_000);
        assert!(mirror.expired(999, 10).is_empty());
        assert_eq!(mirror.expired(1_000, 10), vec![1]);
        // The scan learnt that nothing else expires before 5000. While entry 1 is still in
        // the map (the purge deletes it after this), an earlier time finds nothing to scan.
        assert!(mirror.expired(4_999, 10).is_empty());
        // A put lowers the bound at once.
        mirror.put(4, None, None, 2_000);
        let mut found = mirror.expired(4_999, 10);
        found.sort_unstable();
        assert_eq!(found, vec![1, 4]);
        // A failed purge asks for a rescan: the expired entries are found again.
        mirror.rescan();
        assert_eq!(mirror.expired(4_999, 10).len(), 2);
        // More expired entries than one purge takes: the next purge scans again.
        assert_eq!(mirror.expired(6_000, 1).len(), 1);
        assert_eq!(mirror.expired(6_000, 10).len(), 3);
    }

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

        run_purge(&store.shared).expect("purge");

        let txn = store.shared.db.begin_read().expect("read");
        let kv = txn.open_table(KV).expect("kv");
        assert!(kv.get("k:gone").expect("get").is_none());
        assert!(kv.get("k:kept").expect("get").is_some());
        assert!(kv.get("k:renewed").expect("get").is_some());
        let owners = txn.open_table(OWNERS).expect("owners");
        assert!(
            owners
                .get(phone_key(&gone).expect("key"))
                .expect("get")
                .is_none()
        );
        assert!(
            owners
                .get(phone_key(&kept).expect("key"))
                .expect("get")
                .is_some()
        );
        assert_eq!(store.owner_mirror_len(), 1);
        let expiry = txn.open_table(KV_EXPIRY).expect("expiry");
        assert_eq!(expiry.len().expect("len"), 1, "only k:kept's entry is left");
    }

    #[test]
    fn queue_index_hands_out_one_task_per_group_in_order() {
        let mut q = QueueIndex::default();
        let t = Instant::now();
        q.insert(1, "a", 0, 10);
        q.insert(2, "a", 0, 10);
        q.insert(3, "b", 0, 10);
        let lease = Duration::from_secs(30);
        assert_eq!(q.claim(10, t, lease), Some(1));
        assert_eq!(q.claim(10, t, lease), Some(3));
        assert_eq!(q.claim(10, t, lease), None);
        q.remove(1, 10);
        assert_eq!(q.claim(10, t, lease), Some(2));
        // Lease expiry re-delivers.
        assert_eq!(q.claim(10, t + lease, lease), Some(2));
    }
}
