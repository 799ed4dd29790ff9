//! The embedded store's writer: one thread applies every durable write, many requests per
//! fsync'd redb transaction (group commit), then updates the in-memory mirrors; it also
//! purges expired rows.

use std::{
    sync::{
        Arc, Mutex, RwLock,
        mpsc::{Receiver, RecvTimeoutError},
    },
    time::{Duration, Instant},
};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, Table, WriteTransaction};
use tokio::sync::oneshot;

/// How long a lease is pinned while the batch that completes, reschedules or dead-letters
/// its task commits (an fsync: milliseconds; a failed commit leaves the lease held this long).
const COMMIT_GRACE: Duration = Duration::from_secs(30);

use super::{
    CALL_LOG, COUNTERS, DEAD_LETTERS, DeadRow, KV, KV_EXPIRY, LAST_TALKED, LIST_EXPIRY, LISTS,
    MANAGER_STATES, MAX_BATCH, NEVER, OWNERS, PURGE_INTERVAL, PURGE_LIMIT, QUARANTINE,
    SEQ_CALL_LOG, SEQ_LIST, SEQ_QUARANTINE, SEQ_TASK, SEQUENCES, TASKS, TaskRow, is_live,
    owners::{OwnerMirror, U64Halves},
    queue_index::QueueIndex,
};
use crate::{
    domain::manager::ManagerId,
    store::{
        DeadLetter, EnqueueOutcome, OwnerEntry, QuarantineEntry, QueuedTask, StoreError, now_ms,
    },
};

// --- the writer --------------------------------------------------------------------------

/// A durable write, applied by the writer thread.
pub(super) enum Op {
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
    AppendList {
        key: String,
        value: Vec<u8>,
        expires_ms: u64,
    },
    PutOwners(Vec<(u64, OwnerEntry, u64)>),
    SetManagerState {
        id: ManagerId,
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
    /// Deletes the key only while it holds `value`.
    DeleteIfEquals {
        key: String,
        value: Vec<u8>,
    },
    /// Sets the key's expiry only while it holds `value`.
    ExpireIfEquals {
        key: String,
        value: Vec<u8>,
        expires_ms: u64,
    },
    Complete {
        id: u64,
        token: u64,
    },
    /// With an error: a failed attempt (counted); without: postponed.
    Reschedule {
        id: u64,
        token: u64,
        delay: Duration,
        error: Option<String>,
    },
    DeadLetter {
        id: u64,
        token: u64,
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

pub(super) enum Reply {
    Unit,
    Bool(bool),
    U64(u64),
    Enqueued(EnqueueOutcome),
}

pub(super) struct Request {
    pub(super) op: Op,
    pub(super) reply: oneshot::Sender<Result<Reply, StoreError>>,
    /// `false` for a write the caller can afford to lose in a crash
    /// ([`crate::store::KeyValue::set_raw_volatile`]): a batch of only such writes commits
    /// without an fsync, and the writer makes it durable within [`VOLATILE_FLUSH`].
    pub(super) durable: bool,
}

/// Longest a volatile write stays without an fsync: after it, the writer commits durably (an
/// empty transaction, if nothing durable came meanwhile). This also bounds what redb holds
/// back for non-durable commits (pages it may not reuse before the next durable one).
pub(super) const VOLATILE_FLUSH: Duration = Duration::from_secs(1);

/// Changes to the in-memory state, applied only after the commit that made them durable.
pub(super) enum Effect {
    Owner {
        key: u64,
        entry: OwnerEntry,
        expires_ms: u64,
    },
    OwnersPurged(Vec<u64>),
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
pub(super) struct Shared {
    pub(super) db: Database,
    pub(super) owners: RwLock<OwnerMirror>,
    pub(super) queue: Mutex<QueueIndex>,
}

impl Shared {
    pub(super) fn apply_effects(&self, effects: Vec<Effect>) {
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
pub(super) struct Tables<'txn> {
    pub(super) kv: Table<'txn, &'static str, (&'static [u8], u64)>,
    pub(super) kv_expiry: Table<'txn, (u64, &'static str), ()>,
    pub(super) lists: Table<'txn, (&'static str, u64), (&'static [u8], u64)>,
    pub(super) list_expiry: Table<'txn, (u64, &'static str, u64), ()>,
    pub(super) counters: Table<'txn, &'static str, u64>,
    pub(super) sequences: Table<'txn, &'static str, u64>,
    pub(super) owners: Table<'txn, u64, (Option<u64>, Option<u64>, u64)>,
    pub(super) manager_states: Table<'txn, u64, &'static [u8]>,
    pub(super) call_log: Table<'txn, (i64, u64), &'static [u8]>,
    pub(super) last_talked: Table<'txn, u64, (i64, u64)>,
    pub(super) tasks: Table<'txn, u64, TaskRow>,
    pub(super) dead_letters: Table<'txn, u64, DeadRow>,
    pub(super) quarantine: Table<'txn, u64, &'static [u8]>,
}

impl<'txn> Tables<'txn> {
    pub(super) fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Tables {
            kv: txn.open_table(KV)?,
            kv_expiry: txn.open_table(KV_EXPIRY)?,
            lists: txn.open_table(LISTS)?,
            list_expiry: txn.open_table(LIST_EXPIRY)?,
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

    pub(super) fn next_sequence(&mut self, name: &str) -> Result<u64, StoreError> {
        let next = self.sequences.get(name)?.map_or(0, |v| v.value()) + 1;
        self.sequences.insert(name, next)?;
        Ok(next)
    }

    pub(super) fn kv_live(&self, key: &str, now: u64) -> Result<bool, StoreError> {
        Ok(self.kv.get(key)?.is_some_and(|v| is_live(v.value().1, now)))
    }

    pub(super) fn kv_set(
        &mut self,
        key: &str,
        value: &[u8],
        expires_ms: u64,
    ) -> Result<(), StoreError> {
        self.kv.insert(key, (value, expires_ms))?;
        if expires_ms != NEVER {
            self.kv_expiry.insert((expires_ms, key), ())?;
        }
        Ok(())
    }

    pub(super) fn task(&self, id: u64) -> Result<Option<TaskRecord>, StoreError> {
        Ok(self.tasks.get(id)?.map(|v| TaskRecord::from_row(v.value())))
    }

    pub(super) fn put_task(&mut self, id: u64, t: &TaskRecord) -> Result<(), StoreError> {
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
    pub(super) fn apply(
        &mut self,
        op: Op,
        now: u64,
        queue: &Mutex<QueueIndex>,
        effects: &mut Vec<Effect>,
    ) -> Result<Result<Reply, StoreError>, StoreError> {
        // A queue operation needs its lease. Holding it, the lease is pinned for
        // [`COMMIT_GRACE`] so no claim takes the task over while this batch commits; the
        // commit's effect then removes or delays the task (and its lease).
        let holds = |id: u64, token: u64| {
            queue.lock().expect("queue index poisoned").renew(
                id,
                token,
                Instant::now(),
                COMMIT_GRACE,
            )
        };
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
            Op::AppendList {
                key,
                value,
                expires_ms,
            } => {
                let seq = self.next_sequence(SEQ_LIST)?;
                self.lists
                    .insert((key.as_str(), seq), (value.as_slice(), expires_ms))?;
                if expires_ms != NEVER {
                    self.list_expiry
                        .insert((expires_ms, key.as_str(), seq), ())?;
                }
                Reply::Unit
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
            Op::SetManagerState { id, json } => {
                self.manager_states.insert(id.0, json.as_slice())?;
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
            Op::DeleteIfEquals { key, value } => {
                let held = self
                    .kv
                    .get(key.as_str())?
                    .is_some_and(|v| is_live(v.value().1, now) && v.value().0 == value.as_slice());
                if held {
                    self.kv.remove(key.as_str())?;
                }
                Reply::Bool(held)
            }
            Op::ExpireIfEquals {
                key,
                value,
                expires_ms,
            } => {
                let held = self
                    .kv
                    .get(key.as_str())?
                    .is_some_and(|v| is_live(v.value().1, now) && v.value().0 == value.as_slice());
                if held {
                    self.kv_set(&key, &value, expires_ms)?;
                }
                Reply::Bool(held)
            }
            Op::Complete { id, token } => {
                if !holds(id, token) {
                    return Ok(Err(StoreError::LeaseLost(id)));
                }
                self.tasks.remove(id)?;
                effects.push(Effect::TaskRemoved(id));
                Reply::Unit
            }
            Op::Reschedule {
                id,
                token,
                delay,
                error,
            } => {
                let Some(mut task) = self.task(id)?.filter(|_| holds(id, token)) else {
                    return Ok(Err(StoreError::LeaseLost(id)));
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
            Op::DeadLetter { id, token, reason } => {
                let Some(task) = self.task(id)?.filter(|_| holds(id, token)) else {
                    return Ok(Err(StoreError::LeaseLost(id)));
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
                    .map_err(|e| StoreError::encode("quarantine entry", e))?;
                self.quarantine.insert(id, json.as_slice())?;
                Reply::U64(id)
            }
        };
        Ok(Ok(reply))
    }
}

/// A queued task as stored, owned.
pub(super) struct TaskRecord {
    pub(super) group: String,
    pub(super) payload: Vec<u8>,
    pub(super) attempt: u32,
    pub(super) enqueued_at_ms: u64,
    pub(super) not_before_ms: u64,
    pub(super) last_error: Option<String>,
}

impl TaskRecord {
    pub(super) fn from_row(
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

    pub(super) fn into_task(self, id: u64) -> QueuedTask {
        QueuedTask {
            id,
            group: self.group,
            payload: self.payload,
            attempt: self.attempt,
            enqueued_at_ms: self.enqueued_at_ms,
            last_error: self.last_error,
            lease_token: 0,
        }
    }
}

pub(super) fn dead_letter_from_row(
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
            lease_token: 0,
        },
        reason: reason.to_owned(),
        failed_at_ms,
    }
}

pub(super) fn writer_loop(shared: Arc<Shared>, rx: Receiver<Request>) {
    let mut next_purge = Instant::now() + PURGE_INTERVAL;
    // When the oldest write committed without an fsync was, while one is.
    let mut volatile_since: Option<Instant> = None;
    loop {
        let due = volatile_since.map_or(next_purge, |since| next_purge.min(since + VOLATILE_FLUSH));
        match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
            Ok(first) => {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
                match run_batch(&shared, batch) {
                    Some(Durability::Immediate) => volatile_since = None,
                    Some(_) => {
                        volatile_since.get_or_insert_with(Instant::now);
                    }
                    None => {}
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            // redb makes every commit durable as the database closes.
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if volatile_since.is_some_and(|since| since.elapsed() >= VOLATILE_FLUSH) {
            // A failed flush is tried again a period later (it logs why).
            volatile_since = (!flush(&shared)).then(Instant::now);
        }
        if Instant::now() >= next_purge {
            if let Err(e) = run_purge(&shared) {
                tracing::warn!(error = %e, "Embedded store purge failed; will retry.");
            }
            next_purge = Instant::now() + PURGE_INTERVAL;
        }
    }
}

/// Makes every earlier commit durable: an empty transaction committed with an fsync.
fn flush(shared: &Shared) -> bool {
    let flushed = (|| -> Result<(), StoreError> {
        let mut txn = shared.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.commit()?;
        Ok(())
    })();
    if let Err(e) = &flushed {
        tracing::warn!(error = %e, "Embedded store flush of volatile writes failed; will retry.");
    }
    flushed.is_ok()
}

/// Applies `batch` in one transaction, committed with an fsync unless every request in it is
/// volatile; the durability it committed with, `None` when the commit failed.
pub(super) fn run_batch(shared: &Shared, batch: Vec<Request>) -> Option<Durability> {
    let now = now_ms();
    let mut replies = Vec::with_capacity(batch.len());
    let mut effects = Vec::new();
    let mut ops = Vec::with_capacity(batch.len());
    let durability = if batch.iter().any(|req| req.durable) {
        Durability::Immediate
    } else {
        Durability::None
    };
    for req in batch {
        ops.push(req.op);
        replies.push(req.reply);
    }
    let outcome = (|| -> Result<Vec<Result<Reply, StoreError>>, StoreError> {
        let mut txn = shared.db.begin_write()?;
        txn.set_durability(durability)?;
        let mut results = Vec::with_capacity(ops.len());
        {
            let mut tables = Tables::open(&txn)?;
            for op in ops {
                results.push(tables.apply(op, now, &shared.queue, &mut effects)?);
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
            Some(durability)
        }
        Err(e) => {
            tracing::error!(error = %e, requests = replies.len(), "Embedded store commit failed.");
            let cause = std::sync::Arc::new(e);
            for reply in replies {
                let _ = reply.send(Err(StoreError::Commit(cause.clone())));
            }
            None
        }
    }
}

/// Deletes expired KV records, list values and owner entries, in a transaction of its own so the owner
/// mirror it consults is current (every earlier batch's effects are applied).
pub(super) fn run_purge(shared: &Shared) -> Result<(), StoreError> {
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

/// Deletes due KV rows, due list values and `expired_owners` in one durable transaction; writes nothing (no
/// fsync) when there is nothing to delete, the common case.
pub(super) fn purge_rows(
    shared: &Shared,
    now: u64,
    expired_owners: &[u64],
) -> Result<(), StoreError> {
    let mut due = Vec::new();
    let mut due_list_values = Vec::new();
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
        let list_expiry = txn.open_table(LIST_EXPIRY)?;
        for row in list_expiry.range::<(u64, &str, u64)>(..(now + 1, "", 0))? {
            let (k, _) = row?;
            let (at, key, seq) = k.value();
            due_list_values.push((at, key.to_owned(), seq));
            if due_list_values.len() >= PURGE_LIMIT {
                break;
            }
        }
    }
    if due.is_empty() && due_list_values.is_empty() && expired_owners.is_empty() {
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
        // A list value is appended once and never rewritten: its expiry entry is never stale.
        let mut lists = txn.open_table(LISTS)?;
        let mut list_expiry = txn.open_table(LIST_EXPIRY)?;
        for (at, key, seq) in &due_list_values {
            list_expiry.remove((*at, key.as_str(), *seq))?;
            lists.remove((key.as_str(), *seq))?;
        }
        let mut owners = txn.open_table(OWNERS)?;
        for &key in expired_owners {
            owners.remove(key)?;
        }
    }
    txn.commit()?;
    Ok(())
}
