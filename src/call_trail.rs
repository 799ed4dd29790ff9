//! A call's decision trail (issue 16): the lookup decision that routed it, what the planner
//! planned for each of its events, each CRM action with the ids the CRM gave, each retry and
//! dead letter, in order.
//!
//! Stored as one ordered list per call ([`KeyValue::append_list`], key `trail:<call id>`):
//! appending never reads nor rewrites what is there, and reading a call's trail reads that
//! list alone (no scan of the key space on any backend). Steps expire with [`TRAIL_TTL`].
//! Recording is best effort: a store failure is logged and the call's work goes on.
//!
//! The lookup's decision is recorded off its hot path and within a budget: at most
//! `lookup.trail_max_per_sec` lookups a second are admitted ([`LookupTrail::admit`]); an
//! admitted lookup hands a [`LookupRecord`] to a bounded channel ([`LookupTrail::offer`],
//! never waits); a lookup beyond the budget, or finding the channel full, records nothing and
//! is counted in `callgate_lookup_trail_dropped`. A background task stores the records in
//! batches ([`crate::lookup::LookupService::record_decisions`], [`store_lookups`]). A lookup request that
//! carries Ringostat's `call_id` goes straight into that call's trail. One without it is kept
//! under the caller's number for [`CALLER_LOOKUP_TTL`] ([`keys::caller_lookup`]) and joined
//! to the call by the worker when the call's first incoming event arrives
//! ([`join_caller_lookup`]).

use std::{collections::HashMap, num::NonZeroU32, sync::Arc, time::Duration};

use futures::future::join_all;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    domain::{
        call_log::{TrailKind, TrailStep},
        phone_number::PhoneNumber,
    },
    metrics::Metrics,
    store::{KeyValueExt, Store, StoreError, keys, now_ms},
};

/// How long a call's trail is kept.
pub const TRAIL_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Most steps read for one call.
pub const MAX_STEPS: usize = 1000;
/// How long a lookup decision without a call id waits for its call's events.
pub const CALLER_LOOKUP_TTL: Duration = Duration::from_secs(10 * 60);
/// Lookup decisions waiting to be stored; beyond it a decision is dropped (and counted).
pub const LOOKUP_TRAIL_CAPACITY: usize = 4096;
/// A `call_id` longer than this is not one Ringostat made: the decision is keyed by the
/// caller instead (outside data never sizes a store key without a bound).
pub const MAX_CALL_ID_BYTES: usize = 128;

/// Appends a step to `call_id`'s trail; logs and forgets a store failure.
pub async fn record(store: &dyn Store, call_id: &str, kind: TrailKind) {
    append(
        store,
        call_id,
        &TrailStep {
            at_ms: now_ms(),
            kind,
        },
    )
    .await;
}

/// Appends a step made earlier (it keeps its time); logs and forgets a store failure
/// (`false`).
async fn append(store: &dyn Store, call_id: &str, step: &TrailStep) -> bool {
    let appended = store
        .append_list_json(&keys::call_trail(call_id), step, TRAIL_TTL)
        .await;
    if let Err(e) = &appended {
        tracing::warn!(error = %e, "Recording a decision trail step failed.");
    }
    appended.is_ok()
}

/// `call_id`'s trail, oldest step first.
pub async fn read(store: &dyn Store, call_id: &str) -> Result<Vec<TrailStep>, StoreError> {
    store
        .read_list_json(&keys::call_trail(call_id), MAX_STEPS)
        .await
}

/// Which call a lookup decision belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupKey {
    /// The request's `call_id`.
    Call(String),
    /// No call id: the caller, until the call's first event names the call.
    Caller(PhoneNumber),
}

impl LookupKey {
    /// The request's call id when it has a usable one, else the caller when it is a number;
    /// `None` when the decision cannot be tied to any call.
    pub fn of(call_id: Option<&str>, caller: Option<PhoneNumber>) -> Option<LookupKey> {
        match call_id.map(str::trim) {
            Some(id) if !id.is_empty() && id.len() <= MAX_CALL_ID_BYTES => {
                Some(LookupKey::Call(id.to_owned()))
            }
            _ => caller.map(LookupKey::Caller),
        }
    }
}

/// A lookup decision on its way to the store.
#[derive(Debug, Clone)]
pub struct LookupRecord {
    pub key: LookupKey,
    /// A [`TrailKind::Lookup`] step, timed when the lookup answered.
    pub step: TrailStep,
}

/// The lookup's end of the channel: never waits.
#[derive(Debug, Clone)]
pub struct LookupTrail {
    tx: mpsc::Sender<LookupRecord>,
    /// `lookup.trail_max_per_sec`; `None` records nothing.
    budget: Option<Arc<DefaultDirectRateLimiter>>,
    metrics: Arc<Metrics>,
}

impl LookupTrail {
    /// The sender, and the receiver [`crate::lookup::LookupService::record_decisions`] drains.
    /// At most `max_per_sec` decisions a second are admitted (a burst of one second's worth);
    /// 0 admits none.
    pub fn channel(
        capacity: usize,
        max_per_sec: u32,
        metrics: Arc<Metrics>,
    ) -> (LookupTrail, mpsc::Receiver<LookupRecord>) {
        let (tx, rx) = mpsc::channel(capacity);
        let budget = NonZeroU32::new(max_per_sec)
            .map(|rate| Arc::new(RateLimiter::direct(Quota::per_second(rate))));
        (
            LookupTrail {
                tx,
                budget,
                metrics,
            },
            rx,
        )
    }

    /// Whether this lookup's decision is to be recorded: one of the second's
    /// `lookup.trail_max_per_sec` is left (taken now) and the channel has room. A lookup that
    /// is refused is counted as dropped and builds no record at all: beyond the budget,
    /// recording costs the lookup one atomic check.
    pub fn admit(&self) -> bool {
        let admitted = self.tx.capacity() > 0
            && self
                .budget
                .as_ref()
                .is_some_and(|budget| budget.check().is_ok());
        if !admitted {
            self.metrics.lookup_trail_dropped.inc();
        }
        admitted
    }

    /// Hands an admitted record to the background task; drops it (counted) when the channel
    /// is full or nobody drains it any more.
    pub fn offer(&self, record: LookupRecord) {
        if self.tx.try_send(record).is_err() {
            self.metrics.lookup_trail_dropped.inc();
        }
    }
}

/// Most lookup records the recorder takes from the channel and stores at once.
pub const LOOKUP_BATCH: usize = 512;
/// How long the recorder gathers lookup records into one batch after the first: a decision
/// reaches its trail within about this, and the store sees a few commits a second rather
/// than one per lookup (on the embedded store each commit is an fsync).
pub const LOOKUP_LINGER: Duration = Duration::from_millis(250);

/// The next batch of lookup records: waits for the first, then gathers more for
/// [`LOOKUP_LINGER`] or until [`LOOKUP_BATCH`]. Once `token` is cancelled the channel is
/// closed and everything still queued is returned at once. Empty when there is nothing more
/// to store (stopped and drained, or every sender gone).
pub async fn next_batch(
    records: &mut mpsc::Receiver<LookupRecord>,
    token: &CancellationToken,
) -> Vec<LookupRecord> {
    let mut batch = Vec::with_capacity(LOOKUP_BATCH);
    let taken = tokio::select! {
        taken = records.recv_many(&mut batch, LOOKUP_BATCH) => taken,
        () = token.cancelled() => 0,
    };
    let until = tokio::time::Instant::now() + LOOKUP_LINGER;
    while taken > 0 && batch.len() < LOOKUP_BATCH {
        let room = LOOKUP_BATCH - batch.len();
        let more = tokio::select! {
            more = tokio::time::timeout_at(until, records.recv_many(&mut batch, room)) => more,
            () = token.cancelled() => break,
        };
        if !matches!(more, Ok(n) if n > 0) {
            break;
        }
    }
    if token.is_cancelled() {
        records.close();
        while records.recv_many(&mut batch, LOOKUP_BATCH).await > 0 {}
    }
    batch
}

/// Stores a batch of lookup records, each into its call's trail or under its caller, with
/// the batch's writes in flight together (the embedded store commits them in one
/// transaction, Redis pipelines them): one store round trip per batch, not per lookup. Of
/// several decisions for one caller only the last is kept (each replaces the one before);
/// steps of one call are appended in order. The writes are volatile
/// ([`crate::store::KeyValue::set_raw_volatile`]): a best-effort record is not worth an
/// fsync of its own (on the embedded store that was most of recording's cost to the lookup,
/// load-tests/RESULTS.md), so a crash may lose the last second's decisions.
/// Returns how many records were stored.
pub async fn store_lookups(store: &dyn Store, records: Vec<LookupRecord>) -> usize {
    let mut by_call: HashMap<String, Vec<TrailStep>> = HashMap::new();
    let mut by_caller: HashMap<PhoneNumber, TrailStep> = HashMap::new();
    for record in records {
        match record.key {
            LookupKey::Call(call_id) => by_call.entry(call_id).or_default().push(record.step),
            LookupKey::Caller(caller) => {
                by_caller.insert(caller, record.step);
            }
        }
    }
    let calls = by_call.iter().map(|(call_id, steps)| async move {
        let key = keys::call_trail(call_id);
        let mut stored = 0;
        for step in steps {
            let appended = match encode(&key, step) {
                Ok(bytes) => store.append_list_volatile(&key, &bytes, TRAIL_TTL).await,
                Err(e) => Err(e),
            };
            match appended {
                Ok(()) => stored += 1,
                Err(e) => tracing::warn!(error = %e, "Recording a decision trail step failed."),
            }
        }
        stored
    });
    let callers = by_caller.iter().map(|(caller, step)| async move {
        let key = keys::caller_lookup(caller);
        let kept = match encode(&key, step) {
            Ok(bytes) => {
                store
                    .set_raw_volatile(&key, &bytes, Some(CALLER_LOOKUP_TTL))
                    .await
            }
            Err(e) => Err(e),
        };
        match kept {
            Ok(()) => 1,
            Err(e) => {
                tracing::warn!(error = %e, "Keeping a lookup decision for its call failed.");
                0
            }
        }
    });
    let (calls, callers) = futures::join!(join_all(calls), join_all(callers));
    calls.into_iter().chain(callers).sum()
}

fn encode(key: &str, step: &TrailStep) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(step).map_err(|e| StoreError::encode(key, e))
}

/// Moves the lookup decision kept under `caller` (a lookup without a call id) into
/// `call_id`'s trail, once: the record is deleted as it is joined. Best effort, like
/// [`record`]: a store failure is logged.
pub async fn join_caller_lookup(store: &dyn Store, call_id: &str, caller: &PhoneNumber) {
    if let Err(e) = try_join_caller_lookup(store, call_id, caller).await {
        tracing::warn!(error = %e, "Joining a lookup decision to its call failed.");
    }
}

async fn try_join_caller_lookup(
    store: &dyn Store,
    call_id: &str,
    caller: &PhoneNumber,
) -> Result<(), StoreError> {
    let key = keys::caller_lookup(caller);
    let Some(raw) = store.get_raw(&key).await? else {
        return Ok(());
    };
    let step: TrailStep = serde_json::from_slice(&raw).map_err(|e| StoreError::corrupt(&key, e))?;
    // Whoever deletes the record joins it: two events never both join one decision.
    if store.delete_if_equals(&key, &raw).await? {
        append(store, call_id, &step).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_beyond_the_budget_are_not_admitted_and_are_counted() {
        let metrics = Arc::new(Metrics::new());
        let (trail, _rx) = LookupTrail::channel(16, 1, metrics.clone());
        // A budget of one a second: the first is admitted, the next (well within the second)
        // is not.
        assert!(trail.admit());
        assert!(!trail.admit());
        assert_eq!(metrics.lookup_trail_dropped.get(), 1);
        let (off, _rx) = LookupTrail::channel(16, 0, metrics.clone());
        assert!(!off.admit());
        assert_eq!(metrics.lookup_trail_dropped.get(), 2);
    }

    #[test]
    fn a_full_channel_admits_nothing() {
        let metrics = Arc::new(Metrics::new());
        let (trail, _rx) = LookupTrail::channel(1, 1000, metrics.clone());
        let caller = PhoneNumber::from_e164("+380981234567").expect("e164");
        assert!(trail.admit());
        trail.offer(LookupRecord {
            key: LookupKey::Caller(caller),
            step: TrailStep {
                at_ms: 0,
                kind: TrailKind::DeadLetter {
                    reason: "x".to_owned(),
                },
            },
        });
        assert!(!trail.admit());
        assert_eq!(metrics.lookup_trail_dropped.get(), 1);
    }

    #[tokio::test]
    async fn a_batch_keeps_each_callers_last_decision_and_every_step_of_a_call_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            crate::store::embedded::EmbeddedStore::open(&dir.path().join("s.redb")).expect("store");
        let caller = PhoneNumber::from_e164("+380981234567").expect("e164");
        let step = |reason: &str| TrailStep {
            at_ms: 1,
            kind: TrailKind::DeadLetter {
                reason: reason.to_owned(),
            },
        };
        let record = |key: LookupKey, reason: &str| LookupRecord {
            key,
            step: step(reason),
        };
        let stored = store_lookups(
            &store,
            vec![
                record(LookupKey::Caller(caller.clone()), "first"),
                record(LookupKey::Call("c1".to_owned()), "a"),
                record(LookupKey::Caller(caller.clone()), "second"),
                record(LookupKey::Call("c1".to_owned()), "b"),
                record(LookupKey::Call("c2".to_owned()), "c"),
            ],
        )
        .await;
        assert_eq!(stored, 4, "three call steps and the caller's last decision");
        assert_eq!(
            read(&store, "c1").await.expect("c1"),
            vec![step("a"), step("b")]
        );
        assert_eq!(read(&store, "c2").await.expect("c2"), vec![step("c")]);
        join_caller_lookup(&store, "c3", &caller).await;
        assert_eq!(read(&store, "c3").await.expect("c3"), vec![step("second")]);
    }

    fn numbered(n: u64) -> LookupRecord {
        LookupRecord {
            key: LookupKey::Call(format!("c{n}")),
            step: TrailStep {
                at_ms: n,
                kind: TrailKind::DeadLetter {
                    reason: String::new(),
                },
            },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_gathers_what_arrives_within_the_linger_and_leaves_the_rest() {
        let (tx, mut rx) = mpsc::channel(16);
        let token = CancellationToken::new();
        tx.send(numbered(1)).await.expect("send");
        let sender = tokio::spawn({
            let tx = tx.clone();
            async move {
                tokio::time::sleep(LOOKUP_LINGER / 2).await;
                tx.send(numbered(2)).await.expect("send");
                tokio::time::sleep(LOOKUP_LINGER).await;
                tx.send(numbered(3)).await.expect("send");
            }
        });
        let batch = next_batch(&mut rx, &token).await;
        assert_eq!(
            batch.iter().map(|r| r.step.at_ms).collect::<Vec<_>>(),
            [1, 2]
        );
        sender.await.expect("sender");
        let batch = next_batch(&mut rx, &token).await;
        assert_eq!(batch.iter().map(|r| r.step.at_ms).collect::<Vec<_>>(), [3]);
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_returns_everything_queued_and_then_nothing() {
        let (tx, mut rx) = mpsc::channel(2 * LOOKUP_BATCH);
        let token = CancellationToken::new();
        for n in 0..(LOOKUP_BATCH as u64 + 10) {
            tx.send(numbered(n)).await.expect("send");
        }
        token.cancel();
        let batch = next_batch(&mut rx, &token).await;
        assert_eq!(
            batch.len(),
            LOOKUP_BATCH + 10,
            "more than one batch's worth, at once"
        );
        assert!(next_batch(&mut rx, &token).await.is_empty());
        // The channel is closed: later decisions are refused, not left behind.
        assert!(tx.try_send(numbered(0)).is_err());
    }

    #[test]
    fn a_decision_is_keyed_by_a_usable_call_id_else_by_a_number_caller() {
        let caller = PhoneNumber::from_e164("+380981234567").expect("e164");
        assert_eq!(
            LookupKey::of(Some(" c1 "), Some(caller.clone())),
            Some(LookupKey::Call("c1".to_owned()))
        );
        let too_long = "x".repeat(MAX_CALL_ID_BYTES + 1);
        for unusable in [Some(""), Some("  "), Some(too_long.as_str()), None] {
            assert_eq!(
                LookupKey::of(unusable, Some(caller.clone())),
                Some(LookupKey::Caller(caller.clone())),
                "{unusable:?}"
            );
            assert_eq!(LookupKey::of(unusable, None), None, "{unusable:?}");
        }
    }
}
