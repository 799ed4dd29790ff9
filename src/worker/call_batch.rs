//! Batched call records (SPEC §4 S12, §10): every finished call's record goes to
//! `telephony/calls/upload` in batches of up to `crm.calls_upload_batch` calls, one record per
//! call however many legs it had.
//!
//! How it works and how the guarantees are kept:
//! - **Handed over durably, slot freed.** A call event's `UploadCall` action does not upload:
//!   it queues the record as a task of its own ([`StoredCallRecord`], dedupe key from the
//!   event, a group of its own) and the event's task goes on and completes. A worker loop that
//!   claims a record task hands it, still leased, to this batcher ([`CallBatcher::hold`]) and
//!   is free at once (unless [`HELD_BATCHES`] full batches are already held: then it waits
//!   for one to go, so a backlog is claimed as fast as it is uploaded), so a batch is not
//!   capped by `worker.concurrency`: a backlog uploads in full batches whatever the number of
//!   loops. The batcher renews the leases it holds (every third of the lease), so a record
//!   waits in memory only while its task is leased to it.
//! - **A record's task completes only once the record is uploaded**: the batcher completes
//!   the record tasks of a batch after the CRM's answer (reschedules them on a retryable
//!   failure, dead-letters a refused call alone). A kill -9 before that leaves the record
//!   task in the queue; its lease runs out, it is claimed again and uploaded again, and the
//!   CRM reports the repeat in `duplicateCalls` (the `externalId`), which counts as success.
//!   A kill between queuing the record and completing the event's task re-runs the event,
//!   whose record is not queued twice (dedupe key). So nothing is lost or doubled.
//! - **One call, one record.** The legs of a ring group or queue share the call's
//!   `externalId` (S10's second talker gets its own, `<call id>:<leg>`). Records of one
//!   `externalId` held together go as one: an answered leg's record wins (who answered,
//!   duration, recording), otherwise the first. A record that is not answered settles for
//!   the window before it goes (unless its batch is full), so the answered leg of the same
//!   call, arriving meanwhile, replaces it.
//! - **A leg after the window.** The CRM ignores a repeated `externalId` (`duplicateCalls`;
//!   that a repeat updates the stored call is nowhere confirmed, PROTOCOLS §2.6, so callgate
//!   assumes the strict reading: it does not). Before a "no answer" record goes, callgate
//!   notes its `externalId` ([`keys::call_record_missed`]); an answered record whose
//!   `externalId` was noted goes under `<externalId>:<leg>` instead, so the CRM keeps the talk
//!   (two records for that call: the missed leg and the answered one) rather than only "no
//!   answer". A missed leg that comes after an answered one is not uploaded (the planner, S14).
//!   Legs of one call claimed by two instances (Redis) are not merged; the same rule applies.
//! - **Flushed within the window**: a batch goes when it holds `max` calls, or
//!   `crm.calls_upload_flush_ms` after its oldest record was handed over.
//! - **A refused call dead-letters alone**: the CRM refuses a batch as a whole when one call
//!   is bad (400 with `errors` keyed `calls[i][field]`, PROTOCOLS §2.2/§2.6). The calls the
//!   errors name get the refusal (their tasks are dead-lettered with the CRM's words) and
//!   the others are sent again at once. A refusal that names no call is split in halves
//!   until the bad call is alone.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

use super::{ACTION_TTL, task::StoredCallRecord};
use crate::{
    crm::{CallRecord, CallResult, Crm, CrmError},
    store::{QueuedTask, Store, StoreError, keys},
};

/// The CRM's cap on calls per `telephony/calls/upload` (PROTOCOLS §2.6).
pub const MAX_CALLS_PER_UPLOAD: usize = 50;
/// The batcher holds at most this many full batches before handing over waits.
pub const HELD_BATCHES: usize = 2;

/// A record task the batcher holds, leased, until its batch is answered.
pub struct Held {
    pub task: QueuedTask,
    pub record: StoredCallRecord,
    arrived: Instant,
    renewed: Instant,
}

/// What the upload of one held record task came to.
pub struct Settled {
    pub task: QueuedTask,
    /// The call the record belongs to (its trail).
    pub call_id: String,
    pub result: Result<(), CrmError>,
}

/// Gathers call records into batched uploads. One per process, shared by the worker loops.
pub struct CallBatcher {
    crm: Arc<dyn Crm>,
    store: Arc<dyn Store>,
    max: usize,
    window: Duration,
    lease: Duration,
    /// In the order they were handed over.
    pending: Mutex<Vec<Held>>,
    /// A record was handed over.
    changed: Notify,
    /// A batch was taken out of `pending`.
    drained: Notify,
    /// The batcher loop runs ([`CallBatcher::run_started`]): holding waits for room.
    running: AtomicBool,
}

impl CallBatcher {
    /// `max` is capped to [`MAX_CALLS_PER_UPLOAD`] (and at least 1); `lease` is the lease the
    /// worker claims tasks for (renewed every third of it while held).
    pub fn new(
        crm: Arc<dyn Crm>,
        store: Arc<dyn Store>,
        max: usize,
        window: Duration,
        lease: Duration,
    ) -> Self {
        CallBatcher {
            crm,
            store,
            max: max.clamp(1, MAX_CALLS_PER_UPLOAD),
            window,
            lease,
            pending: Mutex::new(Vec::new()),
            changed: Notify::new(),
            drained: Notify::new(),
            running: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Held>> {
        self.pending.lock().expect("call batch lock poisoned")
    }

    /// Says the batcher loop ([`CallBatcher::next_batch`] in a loop) runs from now on, so
    /// [`CallBatcher::hold`] may wait for it to make room.
    pub fn run_started(&self) {
        self.running.store(true, Ordering::Relaxed);
    }

    /// Takes over a claimed record task; it is settled by the batch it goes in. While the
    /// batcher loop runs and holds [`HELD_BATCHES`] full batches, the caller (a worker loop)
    /// waits for a batch to go: a backlog of records is claimed as fast as it is uploaded,
    /// not all at once (their leases renewed meanwhile).
    pub async fn hold(&self, task: QueuedTask, record: StoredCallRecord) {
        let now = Instant::now();
        self.lock().push(Held {
            task,
            record,
            arrived: now,
            renewed: now,
        });
        self.changed.notify_one();
        while self.running.load(Ordering::Relaxed) {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.held() < HELD_BATCHES * self.max {
                break;
            }
            drained.await;
        }
    }

    /// Record tasks held now.
    pub fn held(&self) -> usize {
        self.lock().len()
    }

    /// Everything held, at once (the worker is idle or stopping).
    pub fn take_all(&self) -> Vec<Held> {
        let all = std::mem::take(&mut *self.lock());
        self.drained.notify_waiters();
        all
    }

    /// Waits until a batch is due (module docs) and takes it; meanwhile renews the leases of
    /// the records held, and lets go of one whose lease was lost (its new holder uploads it).
    pub async fn next_batch(&self) -> Vec<Held> {
        let renew_every = self.lease / 3;
        loop {
            let changed = self.changed.notified();
            let now = Instant::now();
            let (batch, renew, wake) = {
                let mut pending = self.lock();
                let batch = self.due(&mut pending, now);
                let mut renew = Vec::new();
                for h in pending
                    .iter_mut()
                    .filter(|h| h.renewed + renew_every <= now)
                {
                    h.renewed = now;
                    renew.push(h.task.lease());
                }
                let wake = pending
                    .iter()
                    .map(|h| h.renewed + renew_every)
                    .chain(pending.first().map(|h| h.arrived + self.window))
                    .min();
                (batch, renew, wake)
            };
            for lease in renew {
                match self.store.renew_lease(lease, self.lease).await {
                    Err(StoreError::LeaseLost(id)) => {
                        tracing::warn!(
                            task = id,
                            "A held call record's lease was lost; its new holder uploads it."
                        );
                        self.lock().retain(|h| h.task.id != id);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Renewing a call record's lease failed; retrying.")
                    }
                    Ok(()) => {}
                }
            }
            if !batch.is_empty() {
                self.drained.notify_waiters();
                return batch;
            }
            match wake {
                Some(at) if at <= Instant::now() => {}
                Some(at) => tokio::select! {
                    () = changed => {},
                    () = tokio::time::sleep_until(at) => {},
                },
                None => changed.await,
            }
        }
    }

    /// The records due now, taken out of `pending`: the oldest `max` calls when that many are
    /// held; else, once the oldest has waited the window, every call that is answered or has
    /// waited the window (a young "no answer" settles on).
    fn due(&self, pending: &mut Vec<Held>, now: Instant) -> Vec<Held> {
        let Some(oldest) = pending.first() else {
            return Vec::new();
        };
        let window_over = oldest.arrived + self.window <= now;
        // Calls in order of their first record: (externalId, first arrival, answered).
        let mut calls: Vec<(&str, Instant, bool)> = Vec::new();
        for h in pending.iter() {
            let id = h.record.call_record.external_id.as_str();
            let answered = h.record.call_record.result == CallResult::Answered;
            match calls.iter_mut().find(|c| c.0 == id) {
                Some(c) => c.2 |= answered,
                None => calls.push((id, h.arrived, answered)),
            }
        }
        let full = calls.len() >= self.max;
        if !full && !window_over {
            return Vec::new();
        }
        let chosen: HashSet<String> = calls
            .iter()
            .filter(|(_, first, answered)| full || *answered || *first + self.window <= now)
            .take(self.max)
            .map(|(id, _, _)| (*id).to_owned())
            .collect();
        let (taken, rest): (Vec<Held>, Vec<Held>) = std::mem::take(pending)
            .into_iter()
            .partition(|h| chosen.contains(&h.record.call_record.external_id));
        *pending = rest;
        taken
    }

    /// Uploads `batch` (in uploads of at most `max` calls, one record per `externalId`) and
    /// says what came of each held task.
    pub async fn send(&self, batch: Vec<Held>) -> Vec<Settled> {
        // One record per externalId, in order of the first: an answered leg's wins.
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut calls: Vec<Vec<Held>> = Vec::new();
        for h in batch {
            let id = h.record.call_record.external_id.clone();
            match index.get(&id) {
                Some(&i) => calls[i].push(h),
                None => {
                    index.insert(id, calls.len());
                    calls.push(vec![h]);
                }
            }
        }
        let mut settled = Vec::new();
        for chunk in calls.chunks(self.max) {
            let mut records = Vec::new();
            let mut results: Vec<Option<Result<(), CrmError>>> = Vec::new();
            for legs in chunk {
                let chosen = legs
                    .iter()
                    .find(|h| h.record.call_record.result == CallResult::Answered)
                    .or(legs.first());
                let Some(chosen) = chosen else {
                    results.push(Some(Ok(())));
                    continue;
                };
                match self.record_of(&chosen.record).await {
                    Ok(record) => {
                        records.push(record);
                        results.push(None);
                    }
                    Err(e) => results.push(Some(Err(CrmError::Transport(Box::new(
                        std::io::Error::other(e.to_string()),
                    ))))),
                }
            }
            let mut uploaded = self.upload(&records).await.into_iter();
            for (legs, result) in chunk.iter().zip(results) {
                let result = match result {
                    Some(failed) => failed,
                    None => uploaded.next().unwrap_or_else(|| {
                        Err(CrmError::Transport(Box::new(std::io::Error::other(
                            "a call record got no answer from its batch",
                        ))))
                    }),
                };
                for h in legs {
                    settled.push(Settled {
                        task: h.task.clone(),
                        call_id: h.record.call_id.clone(),
                        result: copy_result(&result),
                    });
                }
            }
        }
        settled
    }

    /// The record `chosen` (the answered leg of its `externalId`, else the first) uploads, under
    /// the `externalId` the module docs say.
    async fn record_of(&self, chosen: &StoredCallRecord) -> Result<CallRecord, StoreError> {
        let mut record = chosen.call_record.clone();
        let noted = keys::call_record_missed(&record.external_id);
        if record.result == CallResult::Answered {
            if self.store.get_raw(&noted).await?.is_some() {
                record.external_id = chosen.alt_external_id.clone();
            }
        } else {
            self.store.set_raw(&noted, b"1", Some(ACTION_TTL)).await?;
        }
        Ok(record)
    }

    /// Uploads `records` (at most `max`) and answers each: success (a duplicate is one), the
    /// batch's retryable failure, or its own refusal.
    async fn upload(&self, records: &[CallRecord]) -> Vec<Result<(), CrmError>> {
        let mut results: Vec<Option<Result<(), CrmError>>> = records.iter().map(|_| None).collect();
        let mut queue: Vec<Vec<usize>> = vec![(0..records.len()).collect()];
        while let Some(part) = queue.pop() {
            if part.is_empty() {
                continue;
            }
            let batch: Vec<CallRecord> = part
                .iter()
                .filter_map(|&i| records.get(i).cloned())
                .collect();
            let mut answer = |i: usize, r: Result<(), CrmError>| {
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some(r);
                }
            };
            match self.crm.upload_calls(&batch).await {
                Ok(outcome) => {
                    tracing::debug!(
                        calls = batch.len(),
                        processed = outcome.processed,
                        duplicates = outcome.duplicates.len(),
                        "Call records uploaded."
                    );
                    for i in part {
                        answer(i, Ok(()));
                    }
                }
                Err(e) if e.is_retryable() => {
                    for i in part {
                        answer(i, Err(copy_error(&e)));
                    }
                }
                Err(e) => {
                    let refused = refused_calls(&e, part.len());
                    if !refused.is_empty() {
                        let mut good = Vec::new();
                        for (pos, i) in part.into_iter().enumerate() {
                            if refused.contains(&pos) {
                                answer(i, Err(own_refusal(&e, pos)));
                            } else {
                                good.push(i);
                            }
                        }
                        queue.push(good);
                    } else if part.len() > 1 {
                        let mut first = part;
                        let second = first.split_off(first.len() / 2);
                        queue.push(second);
                        queue.push(first);
                    } else {
                        for i in part {
                            answer(i, Err(copy_error(&e)));
                        }
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(CrmError::Transport(Box::new(std::io::Error::other(
                        "a call record got no answer from its batch",
                    ))))
                })
            })
            .collect()
    }
}

fn copy_result(r: &Result<(), CrmError>) -> Result<(), CrmError> {
    match r {
        Ok(()) => Ok(()),
        Err(e) => Err(copy_error(e)),
    }
}

/// Indexes of the calls a refusal names (`calls[3][phone]: …`), within `len`.
fn refused_calls(e: &CrmError, len: usize) -> Vec<usize> {
    let CrmError::Rejected { errors, .. } = e else {
        return Vec::new();
    };
    let mut out: Vec<usize> = errors
        .iter()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix("calls[")?;
            let end = rest.find(']')?;
            rest.get(..end)?.parse::<usize>().ok()
        })
        .filter(|i| *i < len)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The refusal of call `index` alone: the CRM's status and message with only its errors,
/// renumbered as the call's own (`calls[0]…`).
fn own_refusal(e: &CrmError, index: usize) -> CrmError {
    match e {
        CrmError::Rejected {
            status,
            message,
            errors,
        } => {
            let prefix = format!("calls[{index}]");
            CrmError::Rejected {
                status: *status,
                message: message.clone(),
                errors: errors
                    .iter()
                    .filter_map(|l| l.trim_start().strip_prefix(&prefix))
                    .map(|rest| format!("call{rest}"))
                    .collect(),
            }
        }
        other => copy_error(other),
    }
}

/// The same failure for another waiter of the batch.
fn copy_error(e: &CrmError) -> CrmError {
    match e {
        CrmError::Transport(inner) => {
            CrmError::Transport(Box::new(std::io::Error::other(inner.to_string())))
        }
        CrmError::Timeout(d) => CrmError::Timeout(*d),
        CrmError::RateLimited { retry_after } => CrmError::RateLimited {
            retry_after: *retry_after,
        },
        CrmError::Rejected {
            status,
            message,
            errors,
        } => CrmError::Rejected {
            status: *status,
            message: message.clone(),
            errors: errors.clone(),
        },
        CrmError::Server { status, body } => CrmError::Server {
            status: *status,
            body: body.clone(),
        },
        CrmError::NotApi { status, snippet } => CrmError::NotApi {
            status: *status,
            snippet: snippet.clone(),
        },
        // The sandbox's store failed: as retryable for every waiter, in the store's words.
        CrmError::Storage(inner) => {
            CrmError::Transport(Box::new(std::io::Error::other(inner.to_string())))
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use secrecy::SecretString;

    use super::*;
    use crate::{
        crm::{
            UtmSource,
            retailcrm::{RetailCrm, RetailCrmConfig},
        },
        domain::phone_number::PhoneNormalizer,
        store::embedded::EmbeddedStore,
        testing::fake_retailcrm::{FakeCrmConfig, FakeRetailCrm},
    };

    const UPLOAD: &str = "POST /api/v5/telephony/calls/upload";
    const WINDOW: Duration = Duration::from_secs(1);

    struct Setup {
        fake: FakeRetailCrm,
        batcher: CallBatcher,
        _dir: tempfile::TempDir,
    }

    async fn setup(max: usize) -> Setup {
        let fake = FakeRetailCrm::start(FakeCrmConfig {
            rate_limit_rps: None,
            telephony_rate_limit_rps: None,
            ..FakeCrmConfig::default()
        })
        .await;
        let crm = RetailCrm::new(
            RetailCrmConfig {
                base_url: fake.base_url().parse().expect("URL"),
                api_key: SecretString::from(fake.api_key().to_owned()),
                timeout: Duration::from_secs(5),
                site: Some("shop1".to_owned()),
            },
            PhoneNormalizer::new("UA").expect("region"),
        )
        .expect("adapter");
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(&dir.path().join("s.redb")).expect("store");
        let batcher = CallBatcher::new(
            Arc::new(crm),
            Arc::new(store),
            max,
            WINDOW,
            Duration::from_secs(15),
        );
        Setup {
            fake,
            batcher,
            _dir: dir,
        }
    }

    fn call(id: &str, result: CallResult) -> CallRecord {
        CallRecord {
            date: NaiveDate::from_ymd_opt(2024, 7, 31)
                .and_then(|d| d.and_hms_opt(14, 59, 35))
                .expect("date"),
            incoming: true,
            phone: "+380981234567".into(),
            user_id: None,
            code: None,
            result,
            duration: if result == CallResult::Answered {
                73
            } else {
                0
            },
            duration_waiting: 12,
            external_id: id.to_owned(),
            record_url: None,
            source: UtmSource::default(),
            external_phone: None,
            site: Some("shop1".into()),
            ga_client_id: None,
        }
    }

    fn held(task: u64, record: CallRecord, arrived: Instant) -> Held {
        Held {
            task: QueuedTask {
                id: task,
                group: format!("callrec:{task}"),
                payload: Vec::new(),
                attempt: 0,
                enqueued_at_ms: 0,
                last_error: None,
                lease_token: 1,
            },
            record: StoredCallRecord {
                alt_external_id: format!("{}:staff{task}", record.external_id),
                call_id: record.external_id.clone(),
                call_record: record,
            },
            arrived,
            renewed: arrived,
        }
    }

    fn answered(id: &str) -> CallRecord {
        call(id, CallResult::Answered)
    }

    fn missed(id: &str) -> CallRecord {
        call(id, CallResult::NoAnswer)
    }

    /// The CRM's call records: (externalId, result), sorted.
    fn stored(fake: &FakeRetailCrm) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = fake
            .calls()
            .iter()
            .map(|c| {
                (
                    c["externalId"].as_str().unwrap_or("?").to_owned(),
                    c["result"].as_str().unwrap_or("?").to_owned(),
                )
            })
            .collect();
        out.sort();
        out
    }

    fn all_ok(settled: &[Settled]) {
        for s in settled {
            if let Err(e) = &s.result {
                panic!("task {} failed: {e}", s.task.id);
            }
        }
    }

    #[tokio::test]
    async fn a_full_batch_goes_at_once_in_one_request() {
        let s = setup(7).await;
        for i in 0..7 {
            let h = held(i, missed(&format!("c{i}")), Instant::now());
            s.batcher.hold(h.task, h.record).await;
        }
        // Young "no answer" records, but 7 calls fill the batch: no waiting for the window.
        let batch = tokio::time::timeout(WINDOW / 2, s.batcher.next_batch())
            .await
            .expect("a full batch is due at once");
        assert_eq!(batch.len(), 7);
        let settled = s.batcher.send(batch).await;
        assert_eq!(settled.len(), 7);
        all_ok(&settled);
        assert_eq!(s.fake.request_count(UPLOAD), 1);
        assert_eq!(stored(&s.fake).len(), 7);
    }

    #[tokio::test]
    async fn handing_over_waits_while_two_full_batches_are_held() {
        let s = setup(2).await;
        s.batcher.run_started();
        for i in 0..3 {
            let h = held(i, missed(&format!("c{i}")), Instant::now());
            s.batcher.hold(h.task, h.record).await;
        }
        // The fourth record fills two batches: its loop waits for one to go...
        let h = held(3, missed("c3"), Instant::now());
        let fourth =
            tokio::time::timeout(Duration::from_millis(200), s.batcher.hold(h.task, h.record));
        assert!(fourth.await.is_err(), "handed over without waiting");
        assert_eq!(s.batcher.held(), 4, "the record is held all the same");
        // ...and no longer once one went.
        assert_eq!(s.batcher.next_batch().await.len(), 2);
        let h = held(4, missed("c4"), Instant::now());
        tokio::time::timeout(WINDOW, s.batcher.hold(h.task, h.record))
            .await
            .expect("room again");
    }

    #[tokio::test]
    async fn a_batch_is_due_once_its_oldest_record_has_waited_the_window() {
        let s = setup(50).await;
        let t0 = Instant::now();
        let mut pending = vec![
            held(1, answered("a"), t0),
            held(2, missed("b"), t0 + Duration::from_millis(100)),
            held(3, answered("c"), t0 + Duration::from_millis(900)),
            held(4, missed("d"), t0 + Duration::from_millis(950)),
        ];
        assert!(
            s.batcher.due(&mut pending, t0 + WINDOW / 2).is_empty(),
            "nothing is due before the window of the oldest"
        );
        let batch = s.batcher.due(&mut pending, t0 + WINDOW);
        let ids: Vec<&str> = batch
            .iter()
            .map(|h| h.record.call_record.external_id.as_str())
            .collect();
        // The answered ones go; "b" has not waited its window yet, nor "d".
        assert_eq!(ids, vec!["a", "c"]);
        let batch = s
            .batcher
            .due(&mut pending, t0 + WINDOW + Duration::from_millis(100));
        assert_eq!(batch.len(), 1, "b has waited its window");
        assert_eq!(pending.len(), 1, "d settles on");
    }

    #[tokio::test]
    async fn the_legs_of_one_call_upload_as_one_answered_record() {
        let s = setup(50).await;
        let t0 = Instant::now();
        // The ring group's missed leg first, the answered leg of the same call after it.
        let mut pending = vec![
            held(1, missed("rg-1"), t0),
            held(2, missed("other"), t0),
            held(3, answered("rg-1"), t0 + Duration::from_millis(300)),
        ];
        let batch = s.batcher.due(&mut pending, t0 + WINDOW);
        assert_eq!(batch.len(), 3);
        let settled = s.batcher.send(batch).await;
        assert_eq!(settled.len(), 3, "every leg's task is settled");
        all_ok(&settled);
        assert_eq!(
            stored(&s.fake),
            vec![
                ("other".to_owned(), "no answer".to_owned()),
                ("rg-1".to_owned(), "answered".to_owned()),
            ]
        );
        assert_eq!(s.fake.calls()[0]["externalId"], "rg-1");
        assert_eq!(s.fake.request_count(UPLOAD), 1);
    }

    #[tokio::test]
    async fn an_answered_leg_after_its_missed_record_went_is_kept_under_its_own_id() {
        let s = setup(50).await;
        let settled = s
            .batcher
            .send(vec![held(1, missed("rg-2"), Instant::now())])
            .await;
        all_ok(&settled);
        let settled = s
            .batcher
            .send(vec![held(2, answered("rg-2"), Instant::now())])
            .await;
        all_ok(&settled);
        // Sent again after a crash: still no third record.
        let again = s
            .batcher
            .send(vec![held(2, answered("rg-2"), Instant::now())])
            .await;
        all_ok(&again);
        assert_eq!(
            stored(&s.fake),
            vec![
                ("rg-2".to_owned(), "no answer".to_owned()),
                ("rg-2:staff2".to_owned(), "answered".to_owned()),
            ],
            "the talk is not lost behind the missed leg's record"
        );
    }

    #[tokio::test]
    async fn a_refused_call_fails_alone_and_the_rest_of_its_batch_is_uploaded() {
        let s = setup(3).await;
        let mut bad = answered("bad");
        bad.site = Some("no-such-store".into());
        let now = Instant::now();
        let settled = s
            .batcher
            .send(vec![
                held(1, answered("c0"), now),
                held(2, bad, now),
                held(3, answered("c2"), now),
            ])
            .await;
        let by_task = |id: u64| {
            settled
                .iter()
                .find(|s| s.task.id == id)
                .map(|s| copy_result(&s.result))
                .expect("settled")
        };
        by_task(1).expect("c0 uploaded");
        by_task(3).expect("c2 uploaded");
        let e = by_task(2).expect_err("the bad call is refused");
        assert!(!e.is_retryable(), "bad content is not retried: {e}");
        assert!(e.reason().contains("call[site]"), "{}", e.reason());
        let ids: Vec<String> = stored(&s.fake).into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, vec!["c0", "c2"]);
        assert_eq!(
            s.fake.request_count(UPLOAD),
            2,
            "the batch, then the rest of it"
        );
    }

    #[tokio::test]
    async fn a_call_uploaded_again_after_a_crash_is_a_success_and_not_a_second_record() {
        let s = setup(50).await;
        let now = Instant::now();
        all_ok(
            &s.batcher
                .send(vec![
                    held(1, answered("c0"), now),
                    held(2, answered("c1"), now),
                ])
                .await,
        );
        // c0's record task is claimed again after a crash: it goes with a new call.
        all_ok(
            &s.batcher
                .send(vec![
                    held(1, answered("c0"), now),
                    held(3, answered("c2"), now),
                ])
                .await,
        );
        let ids: Vec<String> = stored(&s.fake).into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, vec!["c0", "c1", "c2"]);
        assert_eq!(s.fake.request_count(UPLOAD), 2);
    }

    fn rejected(errors: &[&str]) -> CrmError {
        CrmError::Rejected {
            status: 400,
            message: "Errors in the entity format".to_owned(),
            errors: errors.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn a_refusal_names_its_calls_by_index() {
        let e = rejected(&[
            "calls[3][phone]: This value should not be blank.",
            "calls[1][date]: bad",
            "calls[3][type]: bad",
            "calls[99][type]: out of range",
            "calls: not an index",
        ]);
        assert_eq!(refused_calls(&e, 5), vec![1, 3]);
        assert!(refused_calls(&rejected(&["calls: too many"]), 5).is_empty());
        let own = own_refusal(&e, 3);
        assert_eq!(
            own.reason(),
            "400 Errors in the entity format (call[phone]: This value should not be blank.; call[type]: bad)"
        );
    }
}
