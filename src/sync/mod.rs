//! Flow F (SPEC §3.1): the owner mirror is kept a true copy of the CRM.
//!
//! 1. **First import**: `GET customers`, `limit=100`, page after page through the
//!    rate-limited CRM (so it shares the general limit with the worker), every phone of every
//!    customer into the mirror. After each page the customers are stored and then the next
//!    page number, so an import cut short (crash, restart) resumes at the first page it had
//!    not finished, without reading the finished ones again. Progress goes to the log
//!    (done/total, rate, ETA), to `/readyz` and to the metrics.
//! 2. **Following**: before the first page, one `customers/history` read with a start date
//!    in the future gives the CRM's clock (`generatedAt`); the cursor starts a minute before
//!    it (`filter[startDate]`), so every change made while the import runs is applied after
//!    it (applying a change the import already saw is harmless: the history replays to the
//!    same state). Then `customers/history` from the last applied id every
//!    `sync.history_interval_secs`, and `users` every `sync.users_interval_secs` (status
//!    and presence into the manager states, inactive users never a destination). The cursor
//!    is stored after each applied page, so it survives a restart.
//! 3. **Several instances** (Redis store): one instance at a time holds the poll lease
//!    ([`redis::RedisSyncBus`]) and polls; it stores each change and appends it to a stream
//!    that every other instance reads into its own memory. The embedded store has one
//!    instance, which always polls.
//!
//! The mirror is stored in the store's key/value space (`mirror:`), one record per
//! customer, and loaded into memory at start: a restart needs no new import.

pub mod follow;
pub mod managers;
pub mod mirror;
pub mod orders;
pub mod redis;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::NaiveDateTime;
use futures::future::try_join_all;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

use self::{
    managers::ManagerBoard,
    mirror::{SharedMirror, SyncPhase},
    redis::{RedisSyncBus, SyncEvent},
};
use crate::{
    crm::{Crm, CrmError, CustomerId},
    domain::{
        manager::{ManagerId, ManagerState},
        mirror::{HistoryCursor, MirrorChange, MirrorCustomer},
        phone_number::PhoneNormalizer,
    },
    metrics::Metrics,
    store::{KeyValueExt, Store, StoreError, keys},
};

/// `limit` of the import's `customers` pages and of history reads.
pub const PAGE_LIMIT: u32 = 100;
/// How far before the CRM's clock at the import's start the history is followed from.
pub const HISTORY_OVERLAP: Duration = Duration::from_secs(60);
/// A start date no record has: the probe that reads the CRM's clock.
const CLOCK_PROBE: &str = "2100-01-01 00:00:00";
/// The CRM's date-time format.
const DATETIME: &str = "%Y-%m-%d %H:%M:%S";
/// Pause after a failed step before the next try.
pub(crate) const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// `mirror:c:<customer id, 20 digits>`: one mirrored customer.
fn customer_key(id: CustomerId) -> String {
    keys::mirror_customer(id.0)
}
/// `mirror:state`: import progress and the history cursor ([`SyncState`]).
fn state_key() -> String {
    keys::mirror_state()
}
/// `mirror:inactive`: the users the CRM lists as inactive.
fn inactive_key() -> String {
    keys::mirror_inactive()
}

/// Settings of flow F.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub history_interval: Duration,
    /// Status groups whose orders are closed (`crm.closed_status_groups`): the orders
    /// mirror keeps the others.
    pub closed_status_groups: HashSet<String>,
    pub users_interval: Duration,
    /// How long the poll lease lasts without renewal (Redis store).
    pub lease: Duration,
}

/// What is stored of the sync's progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    pub import_done: bool,
    /// The first page the import has not finished.
    pub next_page: u32,
    pub total_pages: Option<u32>,
    pub total_count: Option<u64>,
    /// Customers read by the import so far.
    pub imported: u64,
    /// Where the next history read starts; set before the import's first page.
    pub cursor: Option<HistoryCursor>,
}

/// What [`Syncer::import_page`] read.
struct ImportedPage {
    got: u64,
    total_pages: Option<u32>,
    total_count: Option<u64>,
    /// No page after this one.
    last: bool,
}

/// Why a sync step failed (a label of `callgate_sync_errors`).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Crm(#[from] CrmError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the mirror's Redis bus failed")]
    Bus(#[source] redis::BusError),
}

impl SyncError {
    /// Every [`SyncError::kind`] (each exported at 0 from the start, so a dashboard's rate
    /// has a series before the first error).
    pub const KINDS: [&'static str; 5] =
        ["crm", "crm_rate_limited", "crm_unreachable", "store", "bus"];

    pub fn kind(&self) -> &'static str {
        match self {
            SyncError::Crm(e) => match e {
                CrmError::RateLimited { .. } => "crm_rate_limited",
                CrmError::Timeout(_) | CrmError::Transport(_) => "crm_unreachable",
                _ => "crm",
            },
            SyncError::Store(_) => "store",
            SyncError::Bus(_) => "bus",
        }
    }
}

/// An error and its causes, `outer: inner: …`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A history cursor `overlap` before the CRM's clock (`generatedAt` of a probe; our own
/// clock when the CRM gave none).
fn cursor_before(generated_at: Option<&str>, overlap: Duration) -> HistoryCursor {
    let now = generated_at
        .and_then(|g| NaiveDateTime::parse_from_str(g, DATETIME).ok())
        .unwrap_or_else(|| chrono::Local::now().naive_local());
    let overlap = chrono::Duration::from_std(overlap).unwrap_or_default();
    HistoryCursor::Since((now - overlap).format(DATETIME).to_string())
}

/// Runs flow F for one instance.
pub struct Syncer {
    crm: Arc<dyn Crm>,
    store: Arc<dyn Store>,
    mirror: Arc<SharedMirror>,
    normalizer: PhoneNormalizer,
    config: SyncConfig,
    metrics: Arc<Metrics>,
    bus: Option<Arc<RedisSyncBus>>,
    /// The managers' states (`users` writes status and presence there).
    managers: Arc<ManagerBoard>,
    /// One poll at a time (the loop and [`Syncer::poll_now`]).
    poll: Mutex<()>,
    wake: Notify,
    /// The orders mirror's part ([`orders`]).
    orders: orders::OrdersSync,
}

impl Syncer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        crm: Arc<dyn Crm>,
        store: Arc<dyn Store>,
        mirror: Arc<SharedMirror>,
        normalizer: PhoneNormalizer,
        config: SyncConfig,
        metrics: Arc<Metrics>,
        bus: Option<Arc<RedisSyncBus>>,
        managers: Arc<ManagerBoard>,
    ) -> Arc<Self> {
        Arc::new(Syncer {
            crm,
            store,
            mirror,
            normalizer,
            config,
            metrics,
            bus,
            managers,
            poll: Mutex::new(()),
            wake: Notify::new(),
            orders: orders::OrdersSync::default(),
        })
    }

    pub fn mirror(&self) -> &Arc<SharedMirror> {
        &self.mirror
    }

    /// The settings it runs with.
    pub fn config(&self) -> &SyncConfig {
        &self.config
    }

    fn error(&self, e: &SyncError, what: &str) {
        self.metrics.sync_error(e.kind());
        self.mirror.record_failure(mirror::SyncFailure {
            at_ms: crate::store::now_ms(),
            kind: e.kind(),
            step: what.to_owned(),
            error: error_chain(e),
        });
        tracing::warn!(error = %e, kind = e.kind(), step = what, "Owner mirror sync step failed; will retry.");
    }

    // === Loading ===

    /// Loads the stored mirror into memory (at start, before serving; on Redis after the
    /// [`follow::Follower`] noted the stream's position).
    pub async fn load(&self) -> Result<(), SyncError> {
        let started = Instant::now();
        let prefix = keys::mirror_customers();
        let rows = self
            .store
            .scan_json::<MirrorCustomer>(&prefix, usize::MAX)
            .await?;
        let changes: Vec<MirrorChange> = rows
            .into_iter()
            .map(|(_, c)| MirrorChange::Upsert(c))
            .collect();
        self.mirror.apply(&changes);
        if let Some(inactive) = self
            .store
            .get_json::<Vec<ManagerId>>(&inactive_key())
            .await?
        {
            self.mirror.set_inactive(inactive.into_iter().collect());
        }
        let state = self.load_state().await?;
        if state.import_done {
            self.mirror.set_imported();
        } else if state.next_page > 1 {
            self.mirror.set_phase(SyncPhase::Importing {
                done: state.imported,
                total: state.total_count,
            });
        }
        self.load_orders().await?;
        self.update_size_metrics();
        tracing::info!(
            customers = changes.len(),
            imported = state.import_done,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Owner mirror loaded from the store."
        );
        Ok(())
    }

    async fn load_state(&self) -> Result<SyncState, SyncError> {
        self.load_state_at(&state_key()).await
    }

    /// The sync state stored under `key` (customers' or orders').
    async fn load_state_at(&self, key: &str) -> Result<SyncState, SyncError> {
        match self.store.get_json(key).await? {
            Some(state) => Ok(state),
            None => Ok(SyncState {
                next_page: 1,
                ..SyncState::default()
            }),
        }
    }

    async fn save_state(&self, state: &SyncState) -> Result<(), SyncError> {
        self.save_state_at(&state_key(), state).await
    }

    async fn save_state_at(&self, key: &str, state: &SyncState) -> Result<(), SyncError> {
        self.store.set_json(key, state, None).await?;
        Ok(())
    }

    // === Running ===

    /// Polls (when this instance holds the lease) and follows the other instances' changes
    /// until `token` is cancelled.
    pub async fn run_until_stopped(self: Arc<Self>, token: CancellationToken) {
        let tick = match &self.bus {
            Some(_) => self.config.history_interval.min(self.config.lease / 3),
            None => self.config.history_interval,
        };
        let mut next_users = Instant::now();
        let mut next_history = Instant::now();
        loop {
            let leader = match &self.bus {
                None => true,
                Some(bus) => match bus.try_lead(self.config.lease).await {
                    Ok(held) => held,
                    Err(e) => {
                        self.error(&SyncError::Bus(e), "lease");
                        false
                    }
                },
            };
            if leader {
                if Instant::now() >= next_users {
                    match self.users_once().await {
                        Ok(()) => next_users = Instant::now() + self.config.users_interval,
                        Err(e) => self.error(&e, "users"),
                    }
                }
                if !self.mirror.imported() {
                    if let Err(e) = self.import(&token).await {
                        self.error(&e, "import");
                    }
                } else if Instant::now() >= next_history {
                    // The orders import (re)tried at each poll; failing, it never holds the
                    // customers' history back.
                    if !self.mirror.orders_imported()
                        && let Err(e) = self.import_orders(&token).await
                    {
                        self.error(&e, "orders import");
                    }
                    match self.poll_history().await {
                        Ok(_) => next_history = Instant::now() + self.config.history_interval,
                        Err(e) => self.error(&e, "history"),
                    }
                }
            }
            let wait = if leader && !self.mirror.imported() {
                RETRY_PAUSE
            } else if leader {
                next_history
                    .saturating_duration_since(Instant::now())
                    .min(next_users.saturating_duration_since(Instant::now()))
                    .min(tick)
            } else {
                tick
            };
            tokio::select! {
                () = token.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => { next_history = Instant::now(); }
            }
        }
        if let Some(bus) = &self.bus
            && let Err(e) = bus.release().await
        {
            tracing::warn!(error = %e, "Could not give the poll lease up; it expires on its own.");
        }
    }

    /// Reads the history now, when this instance polls and the import is done (the sandbox
    /// CRM's admin API: its new customer routes at the next lookup). Otherwise wakes the
    /// poll loop.
    pub async fn poll_now(&self) {
        let leader = match &self.bus {
            None => true,
            Some(bus) => bus.try_lead(self.config.lease).await.unwrap_or(false),
        };
        if leader && self.mirror.imported() {
            if let Err(e) = self.poll_history().await {
                self.error(&e, "history");
            }
        } else {
            self.wake.notify_one();
        }
    }

    /// Stores changes, applies them in memory and tells the other instances.
    async fn commit(&self, changes: Vec<MirrorChange>) -> Result<(), SyncError> {
        if changes.is_empty() {
            return Ok(());
        }
        let store = &self.store;
        try_join_all(changes.iter().map(|change| async move {
            match change {
                MirrorChange::Upsert(c) => store.set_json(&customer_key(c.id), c, None).await,
                MirrorChange::Remove(id) => store.delete(&customer_key(*id)).await,
            }
        }))
        .await?;
        self.mirror.apply(&changes);
        self.publish(SyncEvent::Changes(changes)).await;
        self.update_size_metrics();
        Ok(())
    }

    async fn publish(&self, event: SyncEvent) {
        if let Some(bus) = &self.bus
            && let Err(e) = bus.publish(&event).await
        {
            // The change is stored: an instance that misses it has it at its next start.
            self.error(&SyncError::Bus(e), "publish");
        }
    }

    fn update_size_metrics(&self) {
        let (customers, phones) = self.mirror.size();
        self.metrics.mirror_customers.set(customers as i64);
        self.metrics.mirror_phones.set(phones as i64);
    }

    // === The first import ===

    /// Imports every customer, resuming where a previous run stopped.
    ///
    /// `customers` pages by offset, so a customer deleted (or merged away) during the import
    /// shifts every later customer one place back: the first customer of the next page slips
    /// onto a page already read and would be skipped (no history record names it). So the
    /// import ends with a repair: the history since before the import is applied, and if it
    /// removed a customer this import had read, the pages from that customer's page on are
    /// read again and the customers the mirror lacks are added; until a round removes none
    /// of what was read. (Whether the CRM has a stable order or an id filter for the list is
    /// [UNCONFIRMED], PROTOCOLS §2.8, so nothing here relies on the order.) The import is
    /// done, and stored as done, only after the repair.
    pub async fn import(&self, token: &CancellationToken) -> Result<(), SyncError> {
        let poll = self.poll.lock().await;
        let mut state = self.load_state().await?;
        if state.import_done {
            self.mirror.set_imported();
            return Ok(());
        }
        if state.cursor.is_none() {
            state.cursor = Some(self.history_start().await?);
            self.save_state(&state).await?;
        }
        let started = Instant::now();
        let resumed_at = state.imported;
        // A resumed import does not know the pages of what it read before: a removal of one
        // of those repairs from page 1.
        let resumed = state.next_page > 1;
        let mut pages: HashMap<CustomerId, u32> = HashMap::new();
        tracing::info!(
            page = state.next_page,
            "Importing the CRM's customers into the owner mirror."
        );
        loop {
            let page = state.next_page;
            let Some(answer) = self.import_page(page, &mut pages, false, token).await? else {
                // Shutting down: the finished pages are stored, the import resumes here.
                return Ok(());
            };
            state.next_page = page + 1;
            state.imported += answer.got;
            state.total_pages = answer.total_pages.or(state.total_pages);
            state.total_count = answer.total_count.or(state.total_count);
            self.save_state(&state).await?;
            self.report_progress(&state, resumed_at, started);
            if answer.last {
                break;
            }
        }
        drop(poll);
        // Catch up with what changed during the import, repairing what deletions shifted.
        loop {
            let (_, removed) = self.poll_history_reporting_removals().await?;
            let from = removed
                .iter()
                .filter_map(|id| pages.get(id).copied().or(resumed.then_some(1)))
                .min();
            let Some(from) = from else { break };
            tracing::info!(
                page = from,
                removed = removed.len(),
                "Customers were removed during the import; reading the pages from here again."
            );
            let _poll = self.poll.lock().await;
            let mut page = from;
            loop {
                let Some(answer) = self.import_page(page, &mut pages, true, token).await? else {
                    return Ok(());
                };
                if answer.last {
                    break;
                }
                page += 1;
            }
        }
        let mut state = self.load_state().await?;
        state.import_done = true;
        self.save_state(&state).await?;
        self.mirror.set_imported();
        self.mirror.set_phase(SyncPhase::Synced {
            synced_at: Some(Instant::now()),
        });
        self.metrics.mirror_import_progress.set(1.0);
        self.metrics.mirror_history_lag.set(0.0);
        self.publish(SyncEvent::Imported).await;
        tracing::info!(
            customers = state.imported,
            elapsed_s = started.elapsed().as_secs(),
            "Owner mirror imported; following the CRM's history from now on."
        );
        Ok(())
    }

    /// Reads one page of `customers` into the mirror, noting each customer's page; with
    /// `missing_only`, only the customers the mirror lacks (a repair: the others are as the
    /// history left them). `None` when shutting down.
    async fn import_page(
        &self,
        page: u32,
        pages: &mut HashMap<CustomerId, u32>,
        missing_only: bool,
        token: &CancellationToken,
    ) -> Result<Option<ImportedPage>, SyncError> {
        let answer = tokio::select! {
            () = token.cancelled() => return Ok(None),
            answer = self.crm.customers_page(page, PAGE_LIMIT) => answer?,
        };
        let got = answer.customers.len();
        let changes = answer
            .customers
            .iter()
            .inspect(|c| {
                pages.insert(c.id, page);
            })
            .filter(|c| !missing_only || !self.mirror.contains(c.id))
            .map(|c| MirrorChange::Upsert(c.to_mirror(&self.normalizer, 0)))
            .collect::<Vec<_>>();
        if missing_only && !changes.is_empty() {
            tracing::info!(
                page,
                added = changes.len(),
                "Customers a deletion had shifted past the import added."
            );
        }
        self.commit(changes).await?;
        Ok(Some(ImportedPage {
            got: got as u64,
            total_pages: answer.total_pages,
            total_count: answer.total_count,
            last: got == 0 || answer.total_pages.is_none_or(|t| page >= t),
        }))
    }

    fn report_progress(&self, state: &SyncState, resumed_at: u64, started: Instant) {
        self.mirror.set_phase(SyncPhase::Importing {
            done: state.imported,
            total: state.total_count,
        });
        self.metrics
            .mirror_import_progress
            .set(self.mirror.progress());
        let elapsed = started.elapsed().as_secs_f64().max(0.001);
        let rate = (state.imported - resumed_at) as f64 / elapsed;
        let eta = state
            .total_count
            .filter(|_| rate > 0.0)
            .map(|t| (t.saturating_sub(state.imported) as f64 / rate).round() as u64);
        tracing::info!(
            done = state.imported,
            total = state.total_count,
            page = state.next_page - 1,
            pages = state.total_pages,
            rate_per_s = format!("{rate:.0}"),
            eta_s = eta,
            "Importing customers."
        );
    }

    /// The history cursor of a first import: a minute before the CRM's clock now.
    async fn history_start(&self) -> Result<HistoryCursor, SyncError> {
        let probe = self
            .crm
            .customers_history(&HistoryCursor::Since(CLOCK_PROBE.to_owned()), 20)
            .await?;
        Ok(cursor_before(
            probe.generated_at.as_deref(),
            HISTORY_OVERLAP,
        ))
    }

    // === Following ===

    /// Reads the history from the cursor to its end, applying page after page; the number
    /// of records read.
    pub async fn poll_history(&self) -> Result<usize, SyncError> {
        self.poll_history_reporting_removals()
            .await
            .map(|(read, _)| read)
    }

    /// [`Syncer::poll_history`], also naming the customers it removed from the mirror.
    async fn poll_history_reporting_removals(&self) -> Result<(usize, Vec<CustomerId>), SyncError> {
        let _poll = self.poll.lock().await;
        let mut state = self.load_state().await?;
        let mut read = 0;
        let mut removed = Vec::new();
        loop {
            let cursor = state.cursor.clone().unwrap_or(HistoryCursor::AfterId(0));
            let page = self.crm.customers_history(&cursor, PAGE_LIMIT).await?;
            read += page.received;
            let outcome = self.mirror.plan_history(&page.records, &self.normalizer);
            let mut changes = outcome.changes;
            for (id, activity) in outcome.refetch {
                changes.push(match self.crm.customer_by_id(id).await? {
                    Some(c) => MirrorChange::Upsert(c.to_mirror(&self.normalizer, activity)),
                    None => MirrorChange::Remove(id),
                });
            }
            removed.extend(changes.iter().filter_map(|c| match c {
                MirrorChange::Remove(id) => Some(*id),
                MirrorChange::Upsert(_) => None,
            }));
            self.commit(changes).await?;
            if let Some(last) = page.last_id.max(outcome.last_id) {
                state.cursor = Some(HistoryCursor::AfterId(last));
                self.save_state(&state).await?;
            }
            if page.received < PAGE_LIMIT as usize {
                break;
            }
        }
        // The orders history has its own lag (the worker checks both); its failure does not
        // hold the customers' back.
        match self.poll_orders_history().await {
            Ok(n) => read += n,
            Err(e) => self.error(&e, "orders history"),
        }
        // The import's own catch-up reads are not "synced" yet: it says so once repaired.
        if self.mirror.imported() {
            self.mirror.set_phase(SyncPhase::Synced {
                synced_at: Some(Instant::now()),
            });
            self.metrics.mirror_history_lag.set(0.0);
            self.publish(SyncEvent::Synced).await;
        }
        Ok((read, removed))
    }

    /// `users`: status and presence into the manager states; the inactive ones remembered.
    pub async fn users_once(&self) -> Result<(), SyncError> {
        let users = self.crm.list_users().await?;
        let inactive: HashSet<ManagerId> =
            users.iter().filter(|u| !u.active).map(|u| u.id).collect();
        let states: Vec<(ManagerId, ManagerState)> = users
            .iter()
            .filter_map(|u| {
                let status = u.status?;
                Some((
                    u.id,
                    ManagerState {
                        status,
                        online: u.online,
                    },
                ))
            })
            .collect();
        self.managers.set(&states).await?;
        if inactive.iter().copied().collect::<HashSet<_>>()
            != self.mirror.inactive().into_iter().collect()
        {
            let mut list: Vec<ManagerId> = inactive.iter().copied().collect();
            list.sort();
            self.store.set_json(&inactive_key(), &list, None).await?;
            self.mirror.set_inactive(inactive);
            self.publish(SyncEvent::Inactive(list)).await;
        }
        Ok(())
    }

    /// Applies an event another instance published ([`follow::Follower`]).
    pub(crate) fn apply_remote(&self, event: SyncEvent) {
        match event {
            SyncEvent::Changes(changes) => {
                self.mirror.apply(&changes);
                self.update_size_metrics();
            }
            SyncEvent::Inactive(list) => {
                self.mirror.set_inactive(list.into_iter().collect());
            }
            SyncEvent::Imported => self.mirror.set_imported(),
            SyncEvent::Orders(changes) => self.mirror.apply_orders(&changes),
            SyncEvent::OrdersImported => self.mirror.set_orders_imported(),
            SyncEvent::OrdersSynced => {
                self.mirror.set_orders_phase(SyncPhase::Synced {
                    synced_at: Some(Instant::now()),
                });
            }
            SyncEvent::Synced => {
                self.mirror.set_imported();
                self.mirror.set_phase(SyncPhase::Synced {
                    synced_at: Some(Instant::now()),
                });
            }
            // The follower applies these to the board itself.
            SyncEvent::Managers(_) => {}
        }
    }
}
