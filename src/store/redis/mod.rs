//! The Redis store: several callgate instances behind a load balancer share one Redis for the
//! owner index, manager states, idempotency keys, locks, the call log, dead letters,
//! quarantine and the durable event queue.
//!
//! # Key layout
//!
//! Every key is `<store.key_prefix><const>…`, the consts below (one documented `const` per
//! key or key family). The raw key/value space of the trait lives under [`KV`], so no raw key
//! can ever collide with the store's own structures.
//!
//! | key | type | content |
//! |---|---|---|
//! | [`KV`]`<key>` | STRING | raw value, `PX` TTL (dedupe keys: the task id, 8 bytes BE) |
//! | [`SEQ`]`<name>` | STRING | counter of [`Store::next_id`] (`INCR`) |
//! | [`OWNER`]`<e164>` | STRING | `"<customer>:<manager>"` (empty = none), `PX` TTL |
//! | [`MANAGERS`] | HASH | manager id → `ManagerState` JSON |
//! | [`CALL_LOG`] | ZSET | score call date (ms), member 20-digit append sequence |
//! | [`CALL_LOG_ENTRIES`] | HASH | member of [`CALL_LOG`] → `CallLogEntry` JSON |
//! | [`CALL_LOG_SEQ`] | STRING | append sequence of the call log |
//! | [`LAST_TALKED`] | HASH | E.164 → `"<call date ms>:<manager id>"` |
//! | [`QUARANTINE`] / [`QUARANTINE_ENTRIES`] / [`QUARANTINE_SEQ`] | ZSET / HASH / STRING | ids by id; id → JSON; id counter |
//! | [`Q_SEQ`] | STRING | task id counter |
//! | [`Q_LEASE_SEQ`] | STRING | lease token counter |
//! | [`Q_TASK`]`<id>` | HASH | one unfinished task: `group payload attempt enq nb err state sid lease` |
//! | [`Q_TASKS`] | ZSET | every unfinished task id (score = id): depth and listing |
//! | [`Q_GROUP`]`<group>` | ZSET | unfinished task ids of one group (score = id); the first is the head |
//! | [`Q_ACTIVE`] | HASH | group → its one *active* task (ready, leased or delayed) |
//! | [`Q_READY`] | STREAM + consumer group [`Q_CONSUMER_GROUP`] | `id=<task id>` of ready heads |
//! | [`Q_LEASES`] | ZSET | leased task id → lease deadline (ms, Redis clock) |
//! | [`Q_DELAYED`] | ZSET | delayed head id → due time (ms, Redis clock) |
//! | [`Q_DEAD`] / [`Q_DEAD_ENTRY`]`<id>` | ZSET / HASH | dead letter ids; one dead letter |
//!
//! # The queue: a stream with a consumer group, fed one head per group
//!
//! SPEC §7 asks for Redis Streams with a consumer group; the trait asks for per-group
//! ordering (a call's events one at a time, in id order), per-claim leases, delayed retries
//! and dead letters. A plain stream read by a consumer group would hand out the second event
//! of a call while the first is still being worked on, so the stream only ever carries
//! tasks that may run *now*:
//!
//! - Every unfinished task is a hash [`Q_TASK`] and a member of its group's ZSET
//!   [`Q_GROUP`] (ordered by id). Each group has at most one **active** task ([`Q_ACTIVE`]),
//!   normally its head, in exactly one state: `ready` (an entry in the stream [`Q_READY`],
//!   its stream id in the task's `sid` field), `leased` (that entry is in the consumer group's
//!   pending entries list, and the task is in [`Q_LEASES`]) or `delayed` (in [`Q_DELAYED`]).
//!   The other tasks of the group are `waiting` and appear nowhere else.
//! - **Enqueue** (one script): `EXISTS` on the dedupe key (in the KV space) → duplicate; else
//!   `INCR` the id, `SET <dedupe key> <id> PX ttl`, write the task hash and ZSETs and, if the
//!   group was idle, `XADD` the task to the stream. One script is one atomic step, so no
//!   crash or concurrent instance can see the dedupe key without the task or the reverse.
//! - **Claim** (one script, atomic across instances): (1) a task whose lease deadline passed
//!   is handed to this instance's consumer with `XCLAIM` and leased again; else (2) due
//!   delayed heads are moved from [`Q_DELAYED`] to the stream (`XADD`); then (3)
//!   `XREADGROUP GROUP workers <consumer> COUNT 1 STREAMS q:ready >` hands out the oldest
//!   undelivered entry, which the script leases ([`Q_LEASES`], deadline = now + lease).
//!   Since only heads are ever in the stream, two tasks of one group are never out at once,
//!   whichever instance claims.
//! - **Complete / reschedule / dead-letter / replay** (one script each): take the task out of
//!   the stream (`XACK` + `XDEL`), the leases and the delays, change the task, then
//!   re-`schedule` the group: its head becomes ready (`XADD`) or delayed (`ZADD`), unless a
//!   task of the group is still leased. `complete` of an unknown id is a no-op (a worker whose
//!   lease ran out may complete after another instance did). A discard deletes a dead
//!   letter's record and its index entry in one script.
//!
//! **Why our own lease ZSET instead of `XAUTOCLAIM`'s idle time.** The trait gives the lease
//! length to the claim that takes the task; `XAUTOCLAIM min-idle-time` is chosen by the
//! instance that *re*-claims. A task leased for 50 ms must be claimable by another instance
//! asking with a one-hour lease, and vice versa. So the deadline is stored per task in
//! [`Q_LEASES`] (on Redis's clock, `TIME`, so instance clock skew does not matter) and the
//! expired entry is moved in the pending list with `XCLAIM … 0`, which keeps `XPENDING`
//! truthful for operators (who holds what, delivery counts).
//!
//! **Retry now.** `retry_all_now` moves every delayed head to the stream and counts those
//! that were not yet due. Only heads are ever delayed in Redis; a task that is not its
//! group's head keeps its `nb` and is checked when it becomes the head (this happens only
//! after a dead letter with a lower id was replayed into a busy group).
//!
//! **Consumers.** Each `RedisStore` reads as its own consumer (`callgate-<random>`).
//! `connect` forgets consumers idle for [`CONSUMER_FORGET_AFTER`] with nothing pending, so
//! restarts do not pile up names; a forgotten live consumer is recreated by its next read.
//!
//! **Order.** The stream hands out entries in `XADD` order. A fresh head is added in id
//! order; a head that becomes ready later (its group-mate finished, its delay ran out) goes
//! to the back. Expired leases are served before new entries. Within a group, order is
//! always exact.
//!
//! **The scripts** live in `scripts/*.lua` (loaded by `scripts.rs`), one file per atomic
//! step, each opening with what it does and why it must be atomic; `codec.rs` holds how
//! values are encoded.
//!
//! **Keys inside scripts.** The scripts build keys from the prefix (`ARGV[1]`) rather than
//! declaring them all in `KEYS`, because a task's group key is known only inside the script.
//! That is fine on a standalone Redis (and Sentinel); on Redis Cluster the prefix would need a
//! hash tag (`{callgate}:`) to keep every key in one slot.
//!
//! # Durability
//!
//! `enqueue` answers `Accepted` once Redis has executed the script (the `XADD` and the task
//! hash are in memory and handed to the AOF). What survives a Redis crash depends on Redis's
//! configuration, not on callgate: with `appendonly yes` + `appendfsync everysec` (the usual
//! production setting) a Redis *process* crash loses nothing acknowledged (the AOF write
//! reached the kernel before the reply), but a machine crash or power loss can lose about the
//! last second (up to two when the disk lags). `appendfsync always` closes that window at the
//! cost of an fsync per write; without AOF, everything since the last RDB snapshot is lost.
//! Redis 7.0 has no `WAITAOF`, so callgate cannot ask for more per request. A script's writes
//! reach the AOF (and replicas) as one `MULTI`/`EXEC` block, so a crash never replays half an
//! enqueue; a script that *fails* midway is not rolled back by Redis, which is why the scripts
//! check everything (task exists, group known) before their first write and only touch keys
//! of the types listed above. Replicas are asynchronous: a failover can lose the last
//! acknowledged writes, whatever the AOF setting. The embedded store
//! is the one that is durable across `kill -9` of the machine. Leases are data here (unlike
//! the embedded store), so they survive a restart of callgate; a lease of a crashed instance
//! simply runs out.
//!
//! # Costs
//!
//! `get_owner`, `get_manager_state`, `last_talked`, `get_raw`: one `GET`/`HGET`, one round
//! trip. `scan_prefix` uses `SCAN MATCH` over the whole keyspace (admin and sandbox paths
//! only). TTLs are Redis's own (`PX`), so nothing needs purging.

use std::time::Duration;

use async_trait::async_trait;
use redis::{
    AsyncCommands, Client, Script,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

use self::{
    codec::{
        QuarantineRecord, TaskTuple, decode_owner, encode_owner, glob_escape, task_from, ttl_ms,
    },
    scripts::Scripts,
};
use super::{
    CallLog, DeadLetter, EnqueueOutcome, KeyValue, Lease, ManagerStates, OwnerEntry, OwnerIndex,
    QuarantineEntry, Queue, QueuedTask, StoreError, now_ms,
};
use crate::domain::{
    call_log::{CallLogEntry, CallLogFilter, CallLogPosition, LoggedCall},
    manager::{ManagerId, ManagerState},
    phone_number::PhoneNumber,
};

mod codec;
mod scripts;

// --- keys (each appended to the configured prefix) ---------------------------------------

/// `kv:<key>` STRING: the trait's raw key/value space (`SET PX`, `SET NX PX`); enqueue's
/// dedupe keys too, holding the task id (8 bytes, big endian, as the embedded store does).
pub const KV: &str = "kv:";
/// `list:<key>` LIST: an ordered list of [`KeyValue::append_list`] (`RPUSH` + `PEXPIRE` in
/// one `MULTI`: the list lives `ttl` after its last append), read with `LRANGE`.
pub const LIST: &str = "list:";
/// `seq:<name>` STRING: a counter of [`Store::next_id`].
pub const SEQ: &str = "seq:";
/// `owner:<e164>` STRING: an owner entry, `"<customer id>:<manager id>"`, either side empty
/// for none (`":"` is a negative entry), with its TTL as `PX`.
pub const OWNER: &str = "owner:";
/// `managers` HASH: manager id → `ManagerState` as JSON.
pub const MANAGERS: &str = "managers";
/// `calllog` ZSET: score = call date in ms, member = append sequence as 20 digits (so calls
/// of the same millisecond sort in append order).
pub const CALL_LOG: &str = "calllog";
/// `calllog:entries` HASH: member of [`CALL_LOG`] → `CallLogEntry` as JSON.
pub const CALL_LOG_ENTRIES: &str = "calllog:entries";
/// `calllog:seq` STRING: the call log's append sequence.
pub const CALL_LOG_SEQ: &str = "calllog:seq";
/// `last_talked` HASH: E.164 → `"<call date ms>:<manager id>"` of the newest call (by call
/// date, not by arrival) in which a manager talked to that number.
pub const LAST_TALKED: &str = "last_talked";
/// `quarantine` ZSET: quarantine ids (score = id).
pub const QUARANTINE: &str = "quarantine";
/// `quarantine:entries` HASH: id → the entry as JSON (without its id).
pub const QUARANTINE_ENTRIES: &str = "quarantine:entries";
/// `quarantine:seq` STRING: quarantine id counter.
pub const QUARANTINE_SEQ: &str = "quarantine:seq";
/// `q:seq` STRING: task id counter (ids never repeat).
pub const Q_SEQ: &str = "q:seq";
/// `q:task:<id>` HASH: an unfinished task. Fields: `group`, `payload`, `attempt`, `enq`
/// (enqueued at, ms), `nb` (not before, ms), `err` (last error, absent if none), `state`
/// (`waiting` | `ready` | `leased` | `delayed`), `sid` (its stream entry when ready/leased).
pub const Q_TASK: &str = "q:task:";
/// `q:lease:seq` STRING: lease token counter (each claim's token is new).
pub const Q_LEASE_SEQ: &str = "q:lease:seq";
/// `q:tasks` ZSET: every unfinished task id, score = id.
pub const Q_TASKS: &str = "q:tasks";
/// `q:group:<group>` ZSET: the unfinished task ids of one group, score = id; the first is
/// the group's head.
pub const Q_GROUP: &str = "q:group:";
/// `q:active` HASH: group → the one task of that group that is ready, leased or delayed.
pub const Q_ACTIVE: &str = "q:active";
/// `q:ready` STREAM: entries `id=<task id>` of tasks that may be claimed now, read through
/// the consumer group [`Q_CONSUMER_GROUP`]; leased tasks stay in its pending entries list.
pub const Q_READY: &str = "q:ready";
/// `q:leases` ZSET: leased task id → lease deadline (ms on Redis's clock).
pub const Q_LEASES: &str = "q:leases";
/// `q:delayed` ZSET: a group head waiting for its retry → due time (ms on Redis's clock).
pub const Q_DELAYED: &str = "q:delayed";
/// `q:dead` ZSET: dead letter ids, score = id (newest = highest id).
pub const Q_DEAD: &str = "q:dead";
/// `q:dead:<id>` HASH: a dead letter: the task's fields plus `reason` and `failed`.
pub const Q_DEAD_ENTRY: &str = "q:dead:";
/// The consumer group of [`Q_READY`] that every callgate instance reads through.
pub const Q_CONSUMER_GROUP: &str = "workers";

// --- limits ------------------------------------------------------------------------------

/// Due delayed tasks moved to the stream per claim (the rest follow on the next claims).
pub const PROMOTE_BATCH: usize = 100;
/// Stale stream entries (task gone meanwhile) a claim skips before answering "nothing".
pub(crate) const SKIP_LIMIT: usize = 32;
/// Expired leases with no task behind them a claim cleans up before going on.
pub(crate) const STALE_LEASE_LIMIT: usize = 8;
/// Call log members read per page while filtering.
const CALL_LOG_PAGE: usize = 256;
/// `SCAN … COUNT` hint of `scan_prefix`.
const SCAN_COUNT: usize = 1000;
/// A consumer (a callgate instance) idle this long with nothing pending is removed from the
/// consumer group when an instance starts, so restarts do not pile up consumer names.
pub const CONSUMER_FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);
/// A command that takes longer fails (and the caller retries or reports `/readyz` not ready).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Connecting (and reconnecting) gives up after this long per attempt.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// Maps a queue script's answer: -2 is a lease no longer held.
fn held(answer: i64, lease: Lease) -> Result<(), StoreError> {
    if answer == -2 {
        Err(StoreError::LeaseLost(lease.id))
    } else {
        Ok(())
    }
}

// --- the store ---------------------------------------------------------------------------

/// The shared Redis store. See the module docs. Cheap to clone: the connection manager is
/// a handle to one multiplexed, auto-reconnecting connection.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    /// This instance's consumer name in [`Q_CONSUMER_GROUP`].
    consumer: String,
    scripts: std::sync::Arc<Scripts>,
}

impl std::fmt::Debug for RedisStore {
    // No URL: it may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// [`Store::reschedule`] (with an error) and [`Store::postpone`] (without): one script.
    async fn delay_task(
        &self,
        lease: Lease,
        delay: Duration,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let task = lease.id.to_string();
        let token = lease.token.to_string();
        let delay_ms = u64::try_from(delay.as_millis())
            .unwrap_or(u64::MAX)
            .to_string();
        let mut args = vec![task.as_bytes(), token.as_bytes(), delay_ms.as_bytes()];
        args.extend(error.map(str::as_bytes));
        let done: i64 = self.run(&self.scripts.reschedule, &[], &args).await?;
        held(done, lease)
    }

    /// Runs a queue script taking `id, token, extra…` that answers -2 for a lost lease.
    async fn with_lease(
        &self,
        script: &Script,
        lease: Lease,
        extra: &[&[u8]],
    ) -> Result<(), StoreError> {
        let task = lease.id.to_string();
        let token = lease.token.to_string();
        let mut args = vec![task.as_bytes(), token.as_bytes()];
        args.extend_from_slice(extra);
        let done: i64 = self.run(script, &[], &args).await?;
        held(done, lease)
    }

    /// Connects (the connection manager reconnects by itself later), makes sure the queue's
    /// stream and consumer group exist, and forgets long-idle consumers (see
    /// [`CONSUMER_FORGET_AFTER`]).
    pub async fn connect(url: &str, key_prefix: &str) -> Result<Self, StoreError> {
        let client = Client::open(url).map_err(StoreError::Redis)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECTION_TIMEOUT));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(StoreError::Redis)?;
        let store = RedisStore {
            conn,
            prefix: key_prefix.to_owned(),
            consumer: format!("callgate-{:016x}", rand::random::<u64>()),
            scripts: std::sync::Arc::new(Scripts::new()),
        };
        let idle = u64::try_from(CONSUMER_FORGET_AFTER.as_millis())
            .unwrap_or(u64::MAX)
            .to_string();
        let forgotten: u64 = store
            .run(&store.scripts.prepare_group, &[], &[idle.as_bytes()])
            .await?;
        if forgotten > 0 {
            tracing::info!(forgotten, "Forgot idle consumers of the Redis queue.");
        }
        Ok(store)
    }

    /// The configured key prefix.
    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn kv_key(&self, key: &str) -> String {
        format!("{}{KV}{key}", self.prefix)
    }

    fn owner_key(&self, phone: &PhoneNumber) -> String {
        format!("{}{OWNER}{}", self.prefix, phone.e164())
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Runs a script whose only argument before `args` is the prefix.
    async fn run<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<T, StoreError> {
        let mut inv = script.prepare_invoke();
        for k in keys {
            inv.key(*k);
        }
        inv.arg(self.prefix.as_str());
        for a in args {
            inv.arg(*a);
        }
        inv.invoke_async(&mut self.conn())
            .await
            .map_err(StoreError::Redis)
    }
}

#[async_trait]
impl KeyValue for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn())
            .await
            .map_err(StoreError::Redis)?;
        Ok(())
    }

    async fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn()
            .get(self.kv_key(key))
            .await
            .map_err(StoreError::Redis)
    }

    async fn set_raw(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        let k = self.kv_key(key);
        let mut cmd = redis::cmd("SET");
        cmd.arg(&k).arg(value);
        match ttl.map(ttl_ms) {
            None => {}
            Some(Some(ms)) => {
                cmd.arg("PX").arg(ms);
            }
            // Already expired: what is left is "absent".
            Some(None) => return self.delete(key).await,
        }
        cmd.query_async::<()>(&mut self.conn())
            .await
            .map_err(StoreError::Redis)
    }

    async fn set_raw_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let k = self.kv_key(key);
        let mut cmd = redis::cmd("SET");
        cmd.arg(&k).arg(value).arg("NX");
        match ttl.map(ttl_ms) {
            None => {}
            Some(Some(ms)) => {
                cmd.arg("PX").arg(ms);
            }
            // Set and expired in the same instant: it wins if the key was absent, and
            // leaves nothing behind.
            Some(None) => {
                let exists: bool = self.conn().exists(&k).await.map_err(StoreError::Redis)?;
                return Ok(!exists);
            }
        }
        let reply: Option<String> = cmd
            .query_async(&mut self.conn())
            .await
            .map_err(StoreError::Redis)?;
        Ok(reply.is_some())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.conn()
            .del::<_, ()>(self.kv_key(key))
            .await
            .map_err(StoreError::Redis)
    }

    async fn scan_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let base = self.kv_key("");
        let pattern = format!("{}*", glob_escape(&format!("{base}{prefix}")));
        let mut conn = self.conn();
        let mut cursor: u64 = 0;
        let mut keys: Vec<String> = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut conn)
                .await
                .map_err(StoreError::Redis)?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        // SCAN may return a key twice (rehashing); order and deduplicate.
        keys.sort_unstable();
        keys.dedup();
        let mut out = Vec::new();
        for chunk in keys.chunks(limit.min(SCAN_COUNT)) {
            let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                .arg(chunk)
                .query_async(&mut conn)
                .await
                .map_err(StoreError::Redis)?;
            for (k, v) in chunk.iter().zip(values) {
                // Expired (or deleted) between the scan and the read: absent.
                if let Some(v) = v
                    && let Some(short) = k.strip_prefix(base.as_str())
                {
                    out.push((short.to_owned(), v));
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    async fn append_list(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let k = format!("{}{LIST}{key}", self.prefix);
        // A zero TTL: the value is expired at once, i.e. never stored.
        let Some(ms) = ttl_ms(ttl) else {
            return Ok(());
        };
        redis::pipe()
            .atomic()
            .rpush(&k, value)
            .ignore()
            .pexpire(&k, i64::try_from(ms).unwrap_or(i64::MAX))
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(StoreError::Redis)
    }

    async fn read_list(&self, key: &str, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        let Some(last) = limit.checked_sub(1) else {
            return Ok(Vec::new());
        };
        self.conn()
            .lrange(
                format!("{}{LIST}{key}", self.prefix),
                0,
                isize::try_from(last).unwrap_or(isize::MAX),
            )
            .await
            .map_err(StoreError::Redis)
    }

    async fn delete_if_equals(&self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        let deleted: i64 = self
            .run(
                &self.scripts.delete_if_equals,
                &[&self.kv_key(key)],
                &[value],
            )
            .await?;
        Ok(deleted == 1)
    }

    async fn expire_if_equals(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let ms = ttl_ms(ttl).unwrap_or(1).to_string();
        let renewed: i64 = self
            .run(
                &self.scripts.expire_if_equals,
                &[&self.kv_key(key)],
                &[value, ms.as_bytes()],
            )
            .await?;
        Ok(renewed == 1)
    }

    async fn next_id(&self, sequence: &str) -> Result<u64, StoreError> {
        self.conn()
            .incr(format!("{}{SEQ}{sequence}", self.prefix), 1u64)
            .await
            .map_err(StoreError::Redis)
    }
}

#[async_trait]
impl OwnerIndex for RedisStore {
    async fn get_owner(&self, phone: &PhoneNumber) -> Result<Option<OwnerEntry>, StoreError> {
        let key = self.owner_key(phone);
        let raw: Option<String> = self.conn().get(&key).await.map_err(StoreError::Redis)?;
        raw.map(|r| decode_owner(&key, &r)).transpose()
    }

    async fn put_owner(
        &self,
        phone: &PhoneNumber,
        entry: OwnerEntry,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = self.owner_key(phone);
        match ttl_ms(ttl) {
            Some(ms) => self
                .conn()
                .pset_ex::<_, _, ()>(&key, encode_owner(entry), ms)
                .await
                .map_err(StoreError::Redis),
            None => self
                .conn()
                .del::<_, ()>(&key)
                .await
                .map_err(StoreError::Redis),
        }
    }
}

#[async_trait]
impl ManagerStates for RedisStore {
    async fn get_manager_state(&self, id: ManagerId) -> Result<Option<ManagerState>, StoreError> {
        let raw: Option<Vec<u8>> = self
            .conn()
            .hget(self.key(MANAGERS), id.0)
            .await
            .map_err(StoreError::Redis)?;
        raw.map(|r| {
            serde_json::from_slice(&r)
                .map_err(|e| StoreError::corrupt(format!("{MANAGERS}/{}", id.0), e))
        })
        .transpose()
    }

    async fn set_manager_state(
        &self,
        id: ManagerId,
        state: ManagerState,
    ) -> Result<(), StoreError> {
        let json =
            serde_json::to_vec(&state).map_err(|e| StoreError::encode("manager state", e))?;
        self.conn()
            .hset::<_, _, _, ()>(self.key(MANAGERS), id.0, json)
            .await
            .map_err(StoreError::Redis)
    }
}

#[async_trait]
impl CallLog for RedisStore {
    async fn append_call_log(&self, entry: &CallLogEntry) -> Result<(), StoreError> {
        let json =
            serde_json::to_vec(entry).map_err(|e| StoreError::encode("call log entry", e))?;
        let date = entry.date.and_utc().timestamp_millis().to_string();
        let phone = entry
            .client_phone
            .as_ref()
            .map(|p| p.e164().to_owned())
            .unwrap_or_default();
        let manager = entry
            .manager_id
            .map(|m| m.0.to_string())
            .unwrap_or_default();
        self.run::<i64>(
            &self.scripts.append_call_log,
            &[],
            &[date.as_bytes(), phone.as_bytes(), manager.as_bytes(), &json],
        )
        .await
        .map(|_| ())
    }

    async fn last_talked(&self, phone: &PhoneNumber) -> Result<Option<ManagerId>, StoreError> {
        let raw: Option<String> = self
            .conn()
            .hget(self.key(LAST_TALKED), phone.e164())
            .await
            .map_err(StoreError::Redis)?;
        raw.map(|r| {
            r.rsplit_once(':')
                .and_then(|(_, m)| m.parse().ok())
                .map(ManagerId)
                .ok_or_else(|| StoreError::corrupt(format!("{LAST_TALKED}/{}", phone.masked()), r))
        })
        .transpose()
    }

    async fn query_call_log(
        &self,
        filter: &CallLogFilter,
        before: Option<CallLogPosition>,
        limit: usize,
    ) -> Result<Vec<LoggedCall>, StoreError> {
        let mut conn = self.conn();
        let index = self.key(CALL_LOG);
        let entries = self.key(CALL_LOG_ENTRIES);
        // Members of one score (call date) come in descending member (sequence) order, so
        // the log reads in descending position; a cursor starts at its date and skips the
        // members of that date at or after its sequence.
        let max = before.map_or_else(|| "+inf".to_owned(), |p| p.date_ms.to_string());
        let mut out = Vec::new();
        let mut offset = 0usize;
        while out.len() < limit {
            let page: Vec<(String, f64)> = redis::cmd("ZREVRANGEBYSCORE")
                .arg(&index)
                .arg(&max)
                .arg("-inf")
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(offset)
                .arg(CALL_LOG_PAGE)
                .query_async(&mut conn)
                .await
                .map_err(StoreError::Redis)?;
            if page.is_empty() {
                break;
            }
            offset += page.len();
            let mut positions = Vec::with_capacity(page.len());
            for (member, score) in &page {
                let seq: u64 = member
                    .parse()
                    .map_err(|e| StoreError::corrupt(format!("{CALL_LOG}/{member}"), e))?;
                let position = CallLogPosition {
                    date_ms: *score as i64,
                    seq,
                };
                if before.is_none_or(|b| position < b) {
                    positions.push((member, position));
                }
            }
            if positions.is_empty() {
                continue;
            }
            let jsons: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
                .arg(&entries)
                .arg(
                    positions
                        .iter()
                        .map(|(m, _)| m.as_str())
                        .collect::<Vec<_>>(),
                )
                .query_async(&mut conn)
                .await
                .map_err(StoreError::Redis)?;
            for ((member, position), json) in positions.into_iter().zip(jsons) {
                let Some(json) = json else { continue };
                let entry: CallLogEntry = serde_json::from_slice(&json)
                    .map_err(|e| StoreError::corrupt(format!("{CALL_LOG_ENTRIES}/{member}"), e))?;
                if filter.matches(&entry) {
                    out.push(LoggedCall { position, entry });
                    if out.len() >= limit {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Queue for RedisStore {
    async fn enqueue(
        &self,
        dedupe_key: &str,
        dedupe_ttl: Duration,
        group: &str,
        payload: &[u8],
    ) -> Result<EnqueueOutcome, StoreError> {
        // A zero window still has to be a valid `PX`; 1 ms is as good as gone.
        let ttl = ttl_ms(dedupe_ttl).unwrap_or(1).to_string();
        let id: u64 = self
            .run(
                &self.scripts.enqueue,
                &[&self.kv_key(dedupe_key)],
                &[ttl.as_bytes(), group.as_bytes(), payload],
            )
            .await?;
        Ok(match id {
            0 => EnqueueOutcome::Duplicate,
            id => EnqueueOutcome::Accepted { id },
        })
    }

    async fn claim_next(&self, lease: Duration) -> Result<Option<QueuedTask>, StoreError> {
        let lease = ttl_ms(lease).unwrap_or(0).to_string();
        let task: Option<(u64, String, Vec<u8>, u32, u64, Option<String>, u64)> = self
            .run(
                &self.scripts.claim,
                &[],
                &[lease.as_bytes(), self.consumer.as_bytes()],
            )
            .await?;
        Ok(task.map(
            |(id, group, payload, attempt, enq, err, token)| QueuedTask {
                lease_token: token,
                ..task_from((id, group, payload, attempt, enq, err))
            },
        ))
    }

    async fn renew_lease(&self, lease: Lease, duration: Duration) -> Result<(), StoreError> {
        let ms = ttl_ms(duration).unwrap_or(1).to_string();
        self.with_lease(&self.scripts.renew_lease, lease, &[ms.as_bytes()])
            .await
    }

    async fn complete(&self, lease: Lease) -> Result<(), StoreError> {
        self.with_lease(&self.scripts.complete, lease, &[]).await
    }

    async fn reschedule(
        &self,
        lease: Lease,
        delay: Duration,
        error: &str,
    ) -> Result<(), StoreError> {
        self.delay_task(lease, delay, Some(error)).await
    }

    async fn postpone(&self, lease: Lease, delay: Duration) -> Result<(), StoreError> {
        self.delay_task(lease, delay, None).await
    }

    async fn dead_letter(&self, lease: Lease, reason: &str) -> Result<(), StoreError> {
        self.with_lease(&self.scripts.dead_letter, lease, &[reason.as_bytes()])
            .await
    }

    async fn retry_all_now(&self) -> Result<u64, StoreError> {
        self.run(&self.scripts.retry_all_now, &[], &[]).await
    }

    async fn queue_depth(&self) -> Result<u64, StoreError> {
        self.conn()
            .zcard(self.key(Q_TASKS))
            .await
            .map_err(StoreError::Redis)
    }

    async fn list_queue(&self, limit: usize) -> Result<Vec<QueuedTask>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = limit.min(i64::MAX as usize).to_string();
        let tasks: Vec<TaskTuple> = self
            .run(&self.scripts.list_queue, &[], &[limit.as_bytes()])
            .await?;
        Ok(tasks.into_iter().map(task_from).collect())
    }

    async fn list_dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = limit.min(i64::MAX as usize).to_string();
        type DeadTuple = (u64, String, Vec<u8>, u32, u64, Option<String>, String, u64);
        let dead: Vec<DeadTuple> = self
            .run(&self.scripts.list_dead, &[], &[limit.as_bytes()])
            .await?;
        Ok(dead
            .into_iter()
            .map(
                |(id, group, payload, attempt, enq, err, reason, failed_at_ms)| DeadLetter {
                    task: task_from((id, group, payload, attempt, enq, err)),
                    reason,
                    failed_at_ms,
                },
            )
            .collect())
    }

    async fn dead_letter_count(&self) -> Result<u64, StoreError> {
        self.conn()
            .zcard(self.key(Q_DEAD))
            .await
            .map_err(StoreError::Redis)
    }

    async fn replay_dead_letter(&self, id: u64) -> Result<bool, StoreError> {
        let replayed: i64 = self
            .run(&self.scripts.replay, &[], &[id.to_string().as_bytes()])
            .await?;
        Ok(replayed == 1)
    }

    async fn discard_dead_letter(&self, id: u64) -> Result<bool, StoreError> {
        let discarded: i64 = self
            .run(&self.scripts.discard, &[], &[id.to_string().as_bytes()])
            .await?;
        Ok(discarded == 1)
    }

    async fn quarantine(
        &self,
        reason: &str,
        content_type: Option<&str>,
        raw: &str,
    ) -> Result<u64, StoreError> {
        let json = serde_json::to_vec(&QuarantineRecord {
            received_at_ms: now_ms(),
            reason: reason.to_owned(),
            content_type: content_type.map(str::to_owned),
            raw: raw.to_owned(),
        })
        .map_err(|e| StoreError::encode("quarantine entry", e))?;
        self.run(&self.scripts.quarantine, &[], &[&json]).await
    }

    async fn list_quarantine(&self, limit: usize) -> Result<Vec<QuarantineEntry>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn();
        let stop = isize::try_from(limit).unwrap_or(isize::MAX) - 1;
        let ids: Vec<u64> = conn
            .zrevrange(self.key(QUARANTINE), 0, stop)
            .await
            .map_err(StoreError::Redis)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let jsons: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(self.key(QUARANTINE_ENTRIES))
            .arg(&ids)
            .query_async(&mut conn)
            .await
            .map_err(StoreError::Redis)?;
        let mut out = Vec::with_capacity(ids.len());
        for (id, json) in ids.into_iter().zip(jsons) {
            let Some(json) = json else { continue };
            let r: QuarantineRecord = serde_json::from_slice(&json)
                .map_err(|e| StoreError::corrupt(format!("{QUARANTINE_ENTRIES}/{id}"), e))?;
            out.push(QuarantineEntry {
                id,
                received_at_ms: r.received_at_ms,
                reason: r.reason,
                content_type: r.content_type,
                raw: r.raw,
            });
        }
        Ok(out)
    }
}
