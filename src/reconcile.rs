//! Reconciliation (flow E, SPEC §6): Ringostat never re-sends a webhook that was not answered
//! 200 (PROTOCOLS §1.1), so callgate lists Ringostat's call log (`GET /calls/list`) every
//! `ringostat.reconcile_interval_secs` and queues every finished call that never arrived by
//! webhook as its after-call event. The decisions (windows, splitting under the cap, which
//! listed call is which webhook) are pure, in `crate::domain::reconcile`; this module does
//! the I/O.
//!
//! # Invariants
//! - **Applied once.** A recovered call is queued through the same `Store::enqueue` under the
//!   same dedupe key as its after-call webhook, so a call received both ways (or listed by two
//!   overlapping windows, or by two runs) is queued once and the worker applies it once.
//!   Before queueing, every key an after-call webhook of the call may have carried is looked
//!   up (`ListedCall::known_as`).
//! - **No window lost.** The last reconciled point is persisted in the store
//!   (`reconcile:<project>`) only after every window up to it was listed and queued; an
//!   error (Ringostat down, the store failing) ends the run with the point where it was, and
//!   the next run lists the same span again. It survives a restart.
//! - **One at a time.** A run holds a lease (`lock:reconcile:<project>`, set-if-absent with a
//!   TTL of two intervals) so that of several instances sharing a Redis one reconciles; the
//!   others skip that run. Should a lease expire during a very long run, two runs overlap,
//!   which the dedupe keys make harmless.
//! - **Settling.** The newest [`SETTLE`] of the log is left to the next run: the webhook of a
//!   call that just ended may still be on its way.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use chrono::{NaiveDateTime, Timelike};
use chrono_tz::Tz;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    domain::{
        call::FieldAliases,
        phone_number::PhoneNormalizer,
        reconcile::{
            ListedCall, RECOVERED_MOMENT, REQUESTED_FIELDS, Window, is_full, next_point,
            read_listing, windows,
        },
    },
    metrics::Metrics,
    ringostat::{DATE_FORMAT, RingostatClient, RingostatError},
    store::{EnqueueOutcome, Store, StoreError, keys},
    worker::task::{DEDUPE_TTL, StoredWebhook, dedupe_store_key},
};

/// The newest part of the call log a run leaves to the next one.
pub const SETTLE: Duration = Duration::from_secs(60);
/// Recovered calls being queued at once.
const ENQUEUE_CONCURRENCY: usize = 32;
/// Shortest lease of a run, whatever the interval.
const MIN_LEASE: Duration = Duration::from_secs(60);

/// What a [`Reconciler`] needs besides its adapters.
#[derive(Debug, Clone)]
pub struct ReconcileConfig {
    pub project_id: String,
    /// The project's time zone: windows are its local time.
    pub timezone: Tz,
    pub interval: Duration,
    pub overlap: Duration,
}

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// `false` when another instance held the lease and this one skipped the run.
    pub ran: bool,
    /// `calls/list` requests (one per window, split halves included).
    pub windows: u32,
    /// Calls listed (finished or not, readable or not).
    pub listed: usize,
    /// Finished calls that had never arrived, now queued.
    pub recovered: usize,
    /// Finished calls that had arrived (by webhook or an earlier run).
    pub already_received: usize,
    /// Listed rows that are not readable calls (logged).
    pub unreadable: usize,
    /// The point persisted at the end of the run.
    pub reconciled_to: Option<NaiveDateTime>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("listing Ringostat's call log failed")]
    Ringostat(#[from] RingostatError),
    #[error("the store failed during reconciliation")]
    Store(#[from] StoreError),
    #[error("cannot encode a recovered call")]
    Encode(#[from] serde_json::Error),
}

/// The flow-E poller.
pub struct Reconciler {
    client: Arc<RingostatClient>,
    store: Arc<dyn Store>,
    aliases: Arc<FieldAliases>,
    normalizer: PhoneNormalizer,
    metrics: Arc<Metrics>,
    wakeup: Arc<Notify>,
    cfg: ReconcileConfig,
    /// Names this instance in the lease.
    instance: String,
}

impl Reconciler {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Arc<RingostatClient>,
        store: Arc<dyn Store>,
        aliases: Arc<FieldAliases>,
        normalizer: PhoneNormalizer,
        metrics: Arc<Metrics>,
        wakeup: Arc<Notify>,
        cfg: ReconcileConfig,
    ) -> Self {
        Reconciler {
            client,
            store,
            aliases,
            normalizer,
            metrics,
            wakeup,
            cfg,
            instance: format!("{:016x}", rand::random::<u64>()),
        }
    }

    fn point_key(&self) -> String {
        keys::reconcile_point(&self.cfg.project_id)
    }

    fn lease_key(&self) -> String {
        keys::reconcile_lease(&self.cfg.project_id)
    }

    fn now_local(&self) -> NaiveDateTime {
        let now = chrono::Utc::now()
            .with_timezone(&self.cfg.timezone)
            .naive_local();
        now.with_nanosecond(0).unwrap_or(now)
    }

    /// The last reconciled point, if any run finished one.
    pub async fn reconciled_point(&self) -> Result<Option<NaiveDateTime>, StoreError> {
        let Some(raw) = self.store.get_raw(&self.point_key()).await? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&raw);
        match NaiveDateTime::parse_from_str(&text, DATE_FORMAT) {
            Ok(point) => Ok(Some(point)),
            Err(_) => {
                tracing::warn!(stored = %text, "The stored reconciled point is unreadable; starting one interval back.");
                Ok(None)
            }
        }
    }

    /// Runs every `interval` (the first run one interval after start) until `token` is
    /// cancelled. A failed run is logged; its span is listed again by the next one.
    pub async fn run_until_stopped(self: Arc<Self>, token: CancellationToken) {
        let start = tokio::time::Instant::now() + self.cfg.interval;
        let mut ticker = tokio::time::interval_at(start, self.cfg.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = token.cancelled() => break,
                _ = ticker.tick() => {}
            }
            match self.run_once().await {
                Ok(report) if report.ran => tracing::info!(
                    windows = report.windows,
                    listed = report.listed,
                    recovered = report.recovered,
                    "Reconciliation run finished."
                ),
                Ok(_) => tracing::debug!("Another instance holds the reconciliation lease."),
                Err(e) => tracing::warn!(
                    error.cause_chain = ?e,
                    "Reconciliation failed; the window is kept for the next run."
                ),
            }
        }
    }

    /// One run under the lease (skipped, `ran: false`, when another instance holds it).
    pub async fn run_once(&self) -> Result<RunReport, ReconcileError> {
        let lease = self.lease_key();
        let ttl = (self.cfg.interval * 2).max(MIN_LEASE);
        if !self
            .store
            .set_raw_if_absent(&lease, self.instance.as_bytes(), Some(ttl))
            .await?
        {
            return Ok(RunReport::default());
        }
        let result = self.run_locked().await;
        // Release only a lease that is still ours (it may have expired and been retaken).
        if let Ok(Some(holder)) = self.store.get_raw(&lease).await
            && holder == self.instance.as_bytes()
            && let Err(e) = self.store.delete(&lease).await
        {
            tracing::warn!(error = %e, "Could not release the reconciliation lease; it expires by itself.");
        }
        if result.is_err() {
            self.metrics.reconcile_failures.inc();
        }
        result
    }

    async fn run_locked(&self) -> Result<RunReport, ReconcileError> {
        let now = self.now_local() - chrono::Duration::seconds(SETTLE.as_secs() as i64);
        let point = match self.reconciled_point().await? {
            Some(p) => p,
            None => now - chrono::Duration::seconds(self.cfg.interval.as_secs() as i64),
        };
        let mut report = RunReport {
            ran: true,
            ..RunReport::default()
        };
        let mut earliest_unfinished: Option<NaiveDateTime> = None;
        for window in windows(point, now, self.cfg.overlap) {
            let mut pending = VecDeque::from([window]);
            while let Some(part) = pending.pop_front() {
                let rows = self
                    .client
                    .calls_list(part.from, part.to, REQUESTED_FIELDS)
                    .await?;
                report.windows += 1;
                self.metrics.reconcile_windows.inc();
                if is_full(rows.len()) {
                    if let Some((first, second)) = part.split() {
                        pending.push_front(second);
                        pending.push_front(first);
                        continue;
                    }
                    tracing::error!(
                        from = %part.from,
                        "One second of the call log holds more calls than calls/list returns; some may be missed."
                    );
                }
                self.apply(&part, &rows, &mut report, &mut earliest_unfinished)
                    .await?;
            }
            let reached = next_point(&window, earliest_unfinished);
            self.store
                .set_raw(
                    &self.point_key(),
                    reached.format(DATE_FORMAT).to_string().as_bytes(),
                    None,
                )
                .await?;
            report.reconciled_to = Some(reached);
            self.metrics
                .reconcile_lag_seconds
                .set((self.now_local() - reached).num_seconds());
        }
        Ok(report)
    }

    /// Queues the missing calls of one listed window.
    async fn apply(
        &self,
        window: &Window,
        rows: &[serde_json::Map<String, serde_json::Value>],
        report: &mut RunReport,
        earliest_unfinished: &mut Option<NaiveDateTime>,
    ) -> Result<(), ReconcileError> {
        let normalize = |raw: &str| self.normalizer.parse(raw).map(|p| p.number);
        let listing = read_listing(rows, &self.aliases, Some(&self.cfg.project_id), &normalize);
        report.listed += rows.len();
        report.unreadable += listing.unreadable.len();
        for e in &listing.unreadable {
            tracing::warn!(from = %window.from, to = %window.to, problem = %e, "A listed call is unreadable; skipped.");
        }
        if let Some(t) = listing.earliest_unfinished {
            *earliest_unfinished = Some(earliest_unfinished.map_or(t, |e| e.min(t)));
        }
        // Several enqueues in flight share the store's group commits (one fsync for many).
        let mut outcomes = Vec::with_capacity(listing.finished.len());
        let mut failure = None;
        for chunk in listing.finished.chunks(ENQUEUE_CONCURRENCY) {
            let queued: Vec<_> = chunk
                .iter()
                .map(|call| self.enqueue_if_missing(call))
                .collect();
            outcomes.extend(futures::future::join_all(queued).await);
        }
        for outcome in outcomes {
            match outcome {
                Ok(true) => {
                    report.recovered += 1;
                    self.metrics.reconcile_recovered.inc();
                }
                Ok(false) => report.already_received += 1,
                Err(e) => failure = Some(e),
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// `true` when the call had never arrived and is now queued.
    async fn enqueue_if_missing(&self, call: &ListedCall) -> Result<bool, ReconcileError> {
        for key in &call.known_as {
            if self.store.get_raw(&dedupe_store_key(key)).await?.is_some() {
                return Ok(false);
            }
        }
        let stored = StoredWebhook {
            fields: call.fields.clone(),
            event: Some(RECOVERED_MOMENT.as_str().to_owned()),
            received_at_ms: crate::store::now_ms(),
        };
        let bytes = serde_json::to_vec(&stored)?;
        let outcome = self
            .store
            .enqueue(
                &dedupe_store_key(&call.dedupe_key),
                DEDUPE_TTL,
                &call.call_id,
                &bytes,
            )
            .await?;
        match outcome {
            EnqueueOutcome::Accepted { id } => {
                self.wakeup.notify_one();
                tracing::info!(task = id, call_id = %call.call_id, "Recovered a call that never arrived by webhook.");
                Ok(true)
            }
            EnqueueOutcome::Duplicate => Ok(false),
        }
    }
}
