//! The orders mirror's I/O (issue 17 item 3): the same mechanism as the owner mirror's
//! customers, on the same [`Syncer`] (one poll loop, one lease, one bus, the same
//! `SyncState` record under its own key, the same cursor rules):
//!
//! 1. **First import** after the customers': `GET orders`, `limit=100`, page after page
//!    within the general rate limit; after each page its open orders are stored, then the
//!    next page number, so a restart resumes at the first unfinished page. Progress goes to
//!    the log and `/readyz` (`orders importing 41% (…)`). Before the first page, one
//!    `orders/history` read with a start date in the future gives the CRM's clock, and the
//!    cursor starts a minute before it (`filter[startDate]`), as for customers.
//! 2. **Following**: `orders/history` from the last applied id (`filter[sinceId]`, never
//!    with `page`) in every history poll, right after `customers/history`; the cursor is
//!    stored after each applied page.
//!
//! Every order is read by the import, but only open ones are kept (see
//! [`crate::domain::orders_mirror`] for why the history keeps that true). The import does
//! not ask the CRM for open orders only (`filter[extendedStatus][]`), though that would read
//! far fewer pages: `orders` pages by offset, and an order that closes while the import runs
//! would leave a filtered list and shift every later order one place back, so the first one
//! of the next page would be skipped with no history record to bring it back (it did not
//! change). Unfiltered, only an order deleted during the import shifts the list: that gap
//! is still open here (an open order may be missed until it changes). "Open" is judged
//! with the CRM's status groups (`reference/statuses`, cached for
//! [`crate::worker::STATUS_CACHE_TTL`]) and `crm.closed_status_groups`.

use std::time::Instant;

use futures::future::try_join_all;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::{
    CLOCK_PROBE, HISTORY_OVERLAP, PAGE_LIMIT, SyncError, Syncer, mirror::SyncPhase,
    redis::SyncEvent,
};
use crate::{
    crm::{OrderId, StatusGroups},
    domain::{
        mirror::{HistoryCursor, MirrorChange},
        orders_mirror::{MirrorOrder, OrderChange},
    },
    store::{KeyValueExt, keys},
    worker::STATUS_CACHE_TTL,
};

/// The orders mirror's own state on the [`Syncer`].
#[derive(Debug, Default)]
pub struct OrdersSync {
    /// `reference/statuses`, with when it was read.
    statuses: Mutex<Option<(Instant, StatusGroups)>>,
}

impl Syncer {
    /// Loads the stored open orders into memory (part of [`Syncer::load`]).
    pub(super) async fn load_orders(&self) -> Result<(), SyncError> {
        let rows = self
            .store
            .scan_json::<MirrorOrder>(&keys::mirror_orders(), usize::MAX)
            .await?;
        let changes: Vec<OrderChange> = rows
            .into_iter()
            .map(|(_, o)| OrderChange::Upsert(o))
            .collect();
        self.mirror.apply_orders(&changes);
        let state = self.load_state_at(&keys::mirror_orders_state()).await?;
        if state.import_done {
            self.mirror.set_orders_imported();
        } else if state.next_page > 1 {
            self.mirror.set_orders_phase(SyncPhase::Importing {
                done: state.imported,
                total: state.total_count,
            });
        }
        Ok(())
    }

    /// Whether an order in `status` is open, by the CRM's status groups (read at most every
    /// [`STATUS_CACHE_TTL`]). A status no group lists counts as open, as in the worker.
    async fn open_judge(&self) -> Result<impl Fn(&str) -> bool + use<'_>, SyncError> {
        let mut cache = self.orders.statuses.lock().await;
        let groups = match cache.as_ref() {
            Some((at, groups)) if at.elapsed() < STATUS_CACHE_TTL => groups.clone(),
            _ => {
                let groups = self.crm.status_groups().await?;
                *cache = Some((Instant::now(), groups.clone()));
                groups
            }
        };
        let closed = &self.config.closed_status_groups;
        Ok(move |status: &str| groups.get(status).is_none_or(|g| !closed.contains(g)))
    }

    /// Stores order changes, applies them in memory and tells the other instances.
    async fn commit_orders(&self, changes: Vec<OrderChange>) -> Result<(), SyncError> {
        if changes.is_empty() {
            return Ok(());
        }
        let store = &self.store;
        try_join_all(changes.iter().map(|change| async move {
            match change {
                OrderChange::Upsert(o) => {
                    store.set_json(&keys::mirror_order(o.id.0), o, None).await
                }
                OrderChange::Remove(id) => store.delete(&keys::mirror_order(id.0)).await,
            }
        }))
        .await?;
        self.mirror.apply_orders(&changes);
        self.publish(SyncEvent::Orders(changes)).await;
        self.metrics
            .mirror_orders
            .set(self.mirror.orders_size() as i64);
        Ok(())
    }

    /// The worker's own writes (a customer or an order it created): stored, applied and
    /// shared with the other instances at once, so the next event of the call knows them
    /// on whichever instance it runs; the CRM's history repeats them later (harmless). A
    /// failure is logged only: the history brings the change within a poll anyway.
    pub async fn own_writes(&self, customers: Vec<MirrorChange>, orders: Vec<OrderChange>) {
        // In memory first: this instance knows it even if storing fails.
        self.mirror.apply(&customers);
        self.mirror.apply_orders(&orders);
        if let Err(e) = self.commit(customers).await {
            self.error(&e, "own write");
        }
        if let Err(e) = self.commit_orders(orders).await {
            self.error(&e, "own write");
        }
    }

    /// Imports every open order, resuming where a previous run stopped.
    pub async fn import_orders(&self, token: &CancellationToken) -> Result<(), SyncError> {
        let _poll = self.poll.lock().await;
        let key = keys::mirror_orders_state();
        let mut state = self.load_state_at(&key).await?;
        if state.import_done {
            self.mirror.set_orders_imported();
            return Ok(());
        }
        if state.cursor.is_none() {
            state.cursor = Some(self.orders_history_start().await?);
            self.save_state_at(&key, &state).await?;
        }
        let started = Instant::now();
        let resumed_at = state.imported;
        tracing::info!(
            page = state.next_page,
            "Importing the CRM's open orders into the orders mirror."
        );
        loop {
            let page = state.next_page;
            let answer = tokio::select! {
                // Shutting down: the finished pages are stored, the import resumes here.
                () = token.cancelled() => return Ok(()),
                answer = self.crm.orders_page(page, PAGE_LIMIT) => answer?,
            };
            let is_open = self.open_judge().await?;
            let got = answer.orders.len();
            let changes = answer
                .orders
                .iter()
                .filter_map(|o| o.to_mirror(&is_open).map(OrderChange::Upsert))
                .collect();
            self.commit_orders(changes).await?;
            state.next_page = page + 1;
            state.imported += got as u64;
            state.total_pages = answer.total_pages.or(state.total_pages);
            state.total_count = answer.total_count.or(state.total_count);
            let finished = got == 0 || state.total_pages.is_none_or(|t| page >= t);
            state.import_done = finished;
            self.save_state_at(&key, &state).await?;
            self.mirror.set_orders_phase(SyncPhase::Importing {
                done: state.imported,
                total: state.total_count,
            });
            let rate =
                (state.imported - resumed_at) as f64 / started.elapsed().as_secs_f64().max(0.001);
            tracing::info!(
                done = state.imported,
                total = state.total_count,
                page,
                pages = state.total_pages,
                rate_per_s = format!("{rate:.0}"),
                "Importing orders."
            );
            if finished {
                break;
            }
        }
        self.mirror.set_orders_imported();
        self.publish(SyncEvent::OrdersImported).await;
        tracing::info!(
            orders = state.imported,
            open = self.mirror.orders_size(),
            elapsed_s = started.elapsed().as_secs(),
            "Orders mirror imported; following the CRM's order history from now on."
        );
        // Catch up with what changed during the import at once.
        self.poll_orders_history().await.map(|_| ())
    }

    /// The orders history cursor of a first import: a minute before the CRM's clock now.
    async fn orders_history_start(&self) -> Result<HistoryCursor, SyncError> {
        let probe = self
            .crm
            .orders_history(&HistoryCursor::Since(CLOCK_PROBE.to_owned()), 20)
            .await?;
        Ok(super::cursor_before(
            probe.generated_at.as_deref(),
            HISTORY_OVERLAP,
        ))
    }

    /// Reads the orders history from its cursor to its end (nothing before the orders
    /// import has set the cursor); the number of records read. The caller holds the poll
    /// lock ([`Syncer::poll_history`], [`Syncer::import_orders`]).
    pub(super) async fn poll_orders_history(&self) -> Result<usize, SyncError> {
        let key = keys::mirror_orders_state();
        let mut state = self.load_state_at(&key).await?;
        let mut read = 0;
        while let Some(cursor) = state.cursor.clone() {
            let page = self.crm.orders_history(&cursor, PAGE_LIMIT).await?;
            read += page.received;
            let is_open = self.open_judge().await?;
            let outcome = self.mirror.plan_orders_history(&page.records, &is_open);
            let mut changes = outcome.changes;
            for id in outcome.refetch {
                changes.push(match self.crm.order_by_id(id).await? {
                    Some(o) => o.to_change(&is_open),
                    None => OrderChange::Remove(OrderId(id.0)),
                });
            }
            self.commit_orders(changes).await?;
            if let Some(last) = page.last_id.max(outcome.last_id) {
                state.cursor = Some(HistoryCursor::AfterId(last));
                self.save_state_at(&key, &state).await?;
            }
            if page.received < PAGE_LIMIT as usize {
                break;
            }
        }
        if state.cursor.is_some() {
            self.mirror.set_orders_phase(SyncPhase::Synced {
                synced_at: Some(Instant::now()),
            });
            self.publish(SyncEvent::OrdersSynced).await;
        }
        Ok(read)
    }
}
