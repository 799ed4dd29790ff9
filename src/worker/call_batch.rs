//! Batched call records (SPEC §10, S12): the worker's `UploadCall` actions are gathered into
//! one `telephony/calls/upload` of up to `crm.calls_upload_batch` calls.
//!
//! How the guarantees are kept:
//! - **Exactly once**: the task of a call does not complete until its record is uploaded
//!   (its `upload` action waits here for the batch's answer). A crash before the answer
//!   leaves the task leased; it runs again and uploads again, and the CRM reports the
//!   repeat in `duplicateCalls` (the `externalId`), which counts as success. So a kill -9
//!   neither loses nor doubles a call record, and nothing is buffered outside the queue.
//! - **Flushed within the window**: a batch is sent when it is full, when every task the
//!   worker has in hand is waiting for it (nobody else can join: no reason to wait), or
//!   `crm.calls_upload_flush_ms` after its first call, whichever comes first.
//! - **A refused call dead-letters alone**: the CRM refuses a batch as a whole when one call
//!   is bad (400 with `errors` keyed `calls[i][field]`, PROTOCOLS §2.2/§2.6). The calls the
//!   errors name get the refusal (their tasks are dead-lettered with the CRM's words) and
//!   the others are sent again at once. A refusal that names no call is split in halves
//!   until the bad call is alone.
//!
//! The batcher has no task of its own: a waiting caller whose batch is due sends it and hands
//! each waiter its result.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    sync::{Notify, oneshot},
    time::Instant,
};

use crate::crm::{CallRecord, Crm, CrmError};

/// The CRM's cap on calls per `telephony/calls/upload` (PROTOCOLS §2.6).
pub const MAX_CALLS_PER_UPLOAD: usize = 50;

struct Pending {
    record: CallRecord,
    reply: oneshot::Sender<Result<(), CrmError>>,
}

#[derive(Default)]
struct State {
    pending: Vec<Pending>,
    /// When the oldest pending call arrived.
    first_at: Option<Instant>,
    /// Tasks the worker has in hand (see [`CallBatcher::enter`]).
    in_flight: usize,
    /// Callers inside [`CallBatcher::upload`] that have not been answered yet.
    waiting: usize,
}

/// Gathers call records into batched uploads. One per process, shared by the worker loops.
pub struct CallBatcher {
    crm: Arc<dyn Crm>,
    max: usize,
    window: Duration,
    state: Mutex<State>,
    changed: Notify,
}

/// Held while the worker processes one task; dropping it tells the batcher one fewer task
/// may still join a batch.
pub struct InFlight<'a>(&'a CallBatcher);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.lock().in_flight -= 1;
        self.0.changed.notify_waiters();
    }
}

impl CallBatcher {
    /// `max` is capped to [`MAX_CALLS_PER_UPLOAD`] (and at least 1).
    pub fn new(crm: Arc<dyn Crm>, max: usize, window: Duration) -> Self {
        CallBatcher {
            crm,
            max: max.clamp(1, MAX_CALLS_PER_UPLOAD),
            window,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("call batch lock poisoned")
    }

    /// Marks one task as in the worker's hands until the guard is dropped.
    pub fn enter(&self) -> InFlight<'_> {
        self.lock().in_flight += 1;
        InFlight(self)
    }

    /// Uploads one call record as part of a batch; returns when the CRM has it (or already
    /// had it), or with the error of its batch (retryable) or its own refusal.
    pub async fn upload(&self, record: CallRecord) -> Result<(), CrmError> {
        let (reply, mut answer) = oneshot::channel();
        {
            let mut st = self.lock();
            st.pending.push(Pending { record, reply });
            st.first_at.get_or_insert_with(Instant::now);
            st.waiting += 1;
        }
        let result = loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (batch, deadline) = {
                let mut st = self.lock();
                let deadline = st.first_at.map(|t| t + self.window);
                let due = !st.pending.is_empty()
                    && (st.pending.len() >= self.max
                        || st.waiting >= st.in_flight
                        || deadline.is_some_and(|d| d <= Instant::now()));
                let batch = if due {
                    let n = st.pending.len().min(self.max);
                    let batch: Vec<Pending> = st.pending.drain(..n).collect();
                    st.first_at = (!st.pending.is_empty()).then(Instant::now);
                    Some(batch)
                } else {
                    None
                };
                (batch, deadline)
            };
            if let Some(batch) = batch {
                self.send(batch).await;
                continue;
            }
            let sleep = deadline.unwrap_or_else(|| Instant::now() + self.window);
            tokio::select! {
                r = &mut answer => break r.unwrap_or_else(|_| Err(CrmError::Transport(Box::new(
                    std::io::Error::other("the call batch was dropped before its answer"),
                )))),
                () = &mut changed => {},
                () = tokio::time::sleep_until(sleep) => {},
            }
        };
        self.lock().waiting -= 1;
        self.changed.notify_waiters();
        result
    }

    /// Sends one batch and answers each of its calls.
    async fn send(&self, batch: Vec<Pending>) {
        let mut queue = vec![batch];
        while let Some(batch) = queue.pop() {
            let records: Vec<CallRecord> = batch.iter().map(|p| p.record.clone()).collect();
            match self.crm.upload_calls(&records).await {
                Ok(outcome) => {
                    tracing::debug!(
                        calls = records.len(),
                        processed = outcome.processed,
                        duplicates = outcome.duplicates.len(),
                        "Call records uploaded."
                    );
                    for p in batch {
                        let _ = p.reply.send(Ok(()));
                    }
                }
                Err(e) if e.is_retryable() => {
                    for p in batch {
                        let _ = p.reply.send(Err(copy_error(&e)));
                    }
                }
                Err(e) => {
                    let refused = refused_calls(&e, batch.len());
                    if !refused.is_empty() {
                        let (bad, good): (Vec<_>, Vec<_>) = batch
                            .into_iter()
                            .enumerate()
                            .partition(|(i, _)| refused.contains(i));
                        for (i, p) in bad {
                            let _ = p.reply.send(Err(own_refusal(&e, i)));
                        }
                        let good: Vec<Pending> = good.into_iter().map(|(_, p)| p).collect();
                        if !good.is_empty() {
                            queue.push(good);
                        }
                    } else if batch.len() > 1 {
                        let mut batch = batch;
                        let second = batch.split_off(batch.len() / 2);
                        queue.push(second);
                        queue.push(batch);
                    } else {
                        for p in batch {
                            let _ = p.reply.send(Err(copy_error(&e)));
                        }
                    }
                }
            }
        }
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
            CallResult, UtmSource,
            retailcrm::{RetailCrm, RetailCrmConfig},
        },
        domain::phone_number::PhoneNormalizer,
        testing::fake_retailcrm::{FakeCrmConfig, FakeRetailCrm},
    };

    const UPLOAD: &str = "POST /api/v5/telephony/calls/upload";

    async fn fake() -> (FakeRetailCrm, Arc<dyn Crm>) {
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
        (fake, Arc::new(crm))
    }

    fn call(id: &str) -> CallRecord {
        CallRecord {
            date: NaiveDate::from_ymd_opt(2024, 7, 31)
                .and_then(|d| d.and_hms_opt(14, 59, 35))
                .expect("date"),
            incoming: true,
            phone: "+380981234567".into(),
            user_id: None,
            code: None,
            result: CallResult::Answered,
            duration: 73,
            duration_waiting: 12,
            external_id: id.to_owned(),
            record_url: None,
            source: UtmSource::default(),
            external_phone: None,
            site: Some("shop1".into()),
            ga_client_id: None,
        }
    }

    fn ids(fake: &FakeRetailCrm) -> Vec<String> {
        let mut ids: Vec<String> = fake
            .calls()
            .iter()
            .filter_map(|c| c["externalId"].as_str().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn a_full_batch_goes_in_one_request() {
        let (fake, crm) = fake().await;
        let batcher = CallBatcher::new(crm, 7, Duration::from_secs(60));
        // More tasks in hand than calls, so only a full batch can send it (not the window).
        let _tasks: Vec<_> = (0..8).map(|_| batcher.enter()).collect();
        let uploads = (0..7).map(|i| batcher.upload(call(&format!("c{i}"))));
        for r in futures::future::join_all(uploads).await {
            r.expect("uploaded");
        }
        assert_eq!(fake.request_count(UPLOAD), 1);
        assert_eq!(
            ids(&fake),
            (0..7).map(|i| format!("c{i}")).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn a_batch_goes_when_every_task_in_hand_waits_for_it() {
        let (fake, crm) = fake().await;
        let batcher = CallBatcher::new(crm, 50, Duration::from_secs(60));
        let _tasks: Vec<_> = (0..3).map(|_| batcher.enter()).collect();
        let uploads = (0..3).map(|i| batcher.upload(call(&format!("c{i}"))));
        for r in futures::future::join_all(uploads).await {
            r.expect("uploaded");
        }
        assert_eq!(fake.request_count(UPLOAD), 1);
        assert_eq!(ids(&fake).len(), 3);
    }

    #[tokio::test]
    async fn a_batch_goes_within_the_window_of_its_first_call() {
        let (fake, crm) = fake().await;
        let window = Duration::from_millis(300);
        let batcher = CallBatcher::new(crm, 50, window);
        // Another task is in hand and never uploads: only the window sends the batch.
        let _tasks: Vec<_> = (0..2).map(|_| batcher.enter()).collect();
        let started = Instant::now();
        batcher.upload(call("c0")).await.expect("uploaded");
        let took = started.elapsed();
        assert!(took >= window, "sent before its window: {took:?}");
        assert!(took < Duration::from_secs(1), "not within 1 s: {took:?}");
        assert_eq!(fake.request_count(UPLOAD), 1);
    }

    #[tokio::test]
    async fn a_refused_call_fails_alone_and_the_rest_of_its_batch_is_uploaded() {
        let (fake, crm) = fake().await;
        let batcher = CallBatcher::new(crm, 3, Duration::from_secs(60));
        let _tasks: Vec<_> = (0..3).map(|_| batcher.enter()).collect();
        let mut bad = call("bad");
        bad.site = Some("no-such-store".into());
        let (a, b, c) = tokio::join!(
            batcher.upload(call("c0")),
            batcher.upload(bad),
            batcher.upload(call("c2")),
        );
        a.expect("c0 uploaded");
        c.expect("c2 uploaded");
        let e = b.expect_err("the bad call is refused");
        assert!(!e.is_retryable(), "bad content is not retried: {e}");
        assert!(e.reason().contains("call[site]"), "{}", e.reason());
        assert_eq!(ids(&fake), vec!["c0", "c2"]);
        assert_eq!(
            fake.request_count(UPLOAD),
            2,
            "the batch, then the rest of it"
        );
    }

    #[tokio::test]
    async fn a_call_uploaded_again_after_a_crash_is_a_success_and_not_a_second_record() {
        let (fake, crm) = fake().await;
        let batcher = CallBatcher::new(crm, 50, Duration::from_secs(60));
        // The first run uploaded c0 and c1, then crashed before completing c0's task.
        batcher.upload(call("c0")).await.expect("uploaded");
        batcher.upload(call("c1")).await.expect("uploaded");
        // The task runs again: its record goes again, in a batch with a new call.
        let _tasks: Vec<_> = (0..2).map(|_| batcher.enter()).collect();
        let (again, new) = tokio::join!(batcher.upload(call("c0")), batcher.upload(call("c2")));
        again.expect("a repeat is success");
        new.expect("uploaded");
        assert_eq!(ids(&fake), vec!["c0", "c1", "c2"]);
        assert_eq!(fake.request_count(UPLOAD), 3);
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
