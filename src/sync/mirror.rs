//! The in-memory owner mirror every instance answers lookups from: the pure
//! [`OwnerMirror`] behind a read-write lock, plus where the sync stands (for `/readyz`,
//! metrics and the lookup's "after the first import" rule).
//!
//! The lookup takes the read lock for two hash lookups; writers (an applied page of
//! history, a page of the import) hold the write lock only while applying changes already
//! fetched and persisted, never across an `.await`.

use std::{
    collections::HashSet,
    sync::{
        Mutex, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    crm::CustomerId,
    domain::{
        manager::ManagerId,
        mirror::{MirrorChange, MirrorCustomer, OwnerMirror},
        orders_mirror::{
            MirrorOrder, OrderChange, OrderHistoryRecord, OrdersMirror, OrdersOutcome,
        },
        phone_number::PhoneNumber,
    },
};

/// Where the sync stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SyncPhase {
    /// Loading the stored mirror or waiting for the first poll.
    Starting,
    /// The first import: customers read so far of the CRM's total.
    Importing { done: u64, total: Option<u64> },
    /// Following the history; `synced_at` is the end of the last poll that reached the
    /// newest record (on an instance that does not poll: the last change it received).
    Synced { synced_at: Option<Instant> },
}

/// The last failed sync step, for the operator page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncFailure {
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// The `callgate_sync_errors` label (`crm`, `crm_unreachable`, `store`, …).
    pub kind: &'static str,
    /// The step (`import`, `history`, `users`, …).
    pub step: String,
    pub error: String,
}

/// A number's owner as the lookup reads it from the mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MirroredOwner {
    pub customer: CustomerId,
    pub manager: Option<ManagerId>,
    /// Whether the CRM lists `manager` as active (true without a manager).
    pub active: bool,
}

#[derive(Debug)]
pub struct SharedMirror {
    inner: RwLock<OwnerMirror>,
    imported: AtomicBool,
    phase: Mutex<SyncPhase>,
    last_failure: Mutex<Option<SyncFailure>>,
    /// The orders mirror (open orders by customer), fed the same way.
    orders: RwLock<OrdersMirror>,
    orders_imported: AtomicBool,
    orders_phase: Mutex<SyncPhase>,
}

impl Default for SharedMirror {
    fn default() -> Self {
        Self::new()
    }
}

impl SharedMirror {
    pub fn new() -> Self {
        SharedMirror {
            inner: RwLock::new(OwnerMirror::new()),
            imported: AtomicBool::new(false),
            phase: Mutex::new(SyncPhase::Starting),
            last_failure: Mutex::new(None),
            orders: RwLock::new(OrdersMirror::new()),
            orders_imported: AtomicBool::new(false),
            orders_phase: Mutex::new(SyncPhase::Starting),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, OwnerMirror> {
        self.inner.read().expect("owner mirror lock poisoned")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, OwnerMirror> {
        self.inner.write().expect("owner mirror lock poisoned")
    }

    fn orders_read(&self) -> std::sync::RwLockReadGuard<'_, OrdersMirror> {
        self.orders.read().expect("orders mirror lock poisoned")
    }

    /// Every mirrored customer with `phone` (the planner picks the most recently active).
    pub fn customers_of(&self, phone: &PhoneNumber) -> Vec<MirrorCustomer> {
        self.read().customers_of(phone)
    }

    /// The open orders of `customer`, newest first.
    pub fn orders_of(&self, customer: CustomerId) -> Vec<MirrorOrder> {
        self.orders_read().of_customer(customer)
    }

    /// Whether the orders mirror's first import has finished.
    pub fn orders_imported(&self) -> bool {
        self.orders_imported.load(Ordering::Acquire)
    }

    pub fn set_orders_imported(&self) {
        self.orders_imported.store(true, Ordering::Release);
        self.set_orders_phase(SyncPhase::Synced { synced_at: None });
    }

    pub fn apply_orders(&self, changes: &[OrderChange]) {
        if changes.is_empty() {
            return;
        }
        let mut orders = self.orders.write().expect("orders mirror lock poisoned");
        for change in changes {
            orders.apply(change);
        }
    }

    pub fn plan_orders_history(
        &self,
        records: &[OrderHistoryRecord],
        is_open: &dyn Fn(&str) -> bool,
    ) -> OrdersOutcome {
        self.orders_read().plan_history(records, is_open)
    }

    /// Mirrored open orders.
    pub fn orders_size(&self) -> usize {
        self.orders_read().len()
    }

    pub fn orders_phase(&self) -> SyncPhase {
        *self.orders_phase.lock().expect("sync phase lock poisoned")
    }

    pub fn set_orders_phase(&self, phase: SyncPhase) {
        *self.orders_phase.lock().expect("sync phase lock poisoned") = phase;
    }

    /// Whether the worker may take a call's facts from the mirrors: both first imports done
    /// and the history read to its end within `max_lag` (a poller that keeps failing, or an
    /// instance that has heard nothing for that long, may have a gap).
    pub fn facts_fresh(&self, max_lag: Duration) -> bool {
        let orders_lag = match self.orders_phase() {
            SyncPhase::Synced {
                synced_at: Some(at),
            } => Some(at.elapsed()),
            _ => None,
        };
        self.imported()
            && self.orders_imported()
            && self.lag().is_some_and(|lag| lag <= max_lag)
            && orders_lag.is_some_and(|lag| lag <= max_lag)
    }

    /// The owner of `phone` (see [`OwnerMirror::owner`]) and whether the CRM lists its
    /// manager as active, in one read of the mirror (this is the lookup's hot path).
    pub fn owner(&self, phone: &PhoneNumber) -> Option<MirroredOwner> {
        let mirror = self.read();
        let (customer, manager) = mirror.owner(phone)?;
        Some(MirroredOwner {
            customer,
            manager,
            active: manager.is_none_or(|m| mirror.is_active(m)),
        })
    }

    /// Whether the mirror has this customer.
    pub fn contains(&self, id: CustomerId) -> bool {
        self.read().customer(id).is_some()
    }

    pub fn is_active(&self, manager: ManagerId) -> bool {
        self.read().is_active(manager)
    }

    /// Whether the first import has finished: from then on the mirror alone answers.
    pub fn imported(&self) -> bool {
        self.imported.load(Ordering::Acquire)
    }

    pub fn set_imported(&self) {
        self.imported.store(true, Ordering::Release);
        let mut phase = self.phase.lock().expect("sync phase lock poisoned");
        if !matches!(*phase, SyncPhase::Synced { .. }) {
            *phase = SyncPhase::Synced { synced_at: None };
        }
    }

    pub fn apply(&self, changes: &[MirrorChange]) {
        if changes.is_empty() {
            return;
        }
        let mut mirror = self.write();
        for change in changes {
            mirror.apply(change);
        }
    }

    pub fn set_inactive(&self, inactive: HashSet<ManagerId>) {
        self.write().set_inactive(inactive);
    }

    pub fn inactive(&self) -> Vec<ManagerId> {
        let mut v: Vec<ManagerId> = self.read().inactive().iter().copied().collect();
        v.sort();
        v
    }

    pub fn plan_history(
        &self,
        records: &[crate::domain::mirror::HistoryRecord],
        normalizer: &crate::domain::phone_number::PhoneNormalizer,
    ) -> crate::domain::mirror::HistoryOutcome {
        self.read().plan_history(records, normalizer)
    }

    /// Mirrored customers and distinct numbers.
    pub fn size(&self) -> (usize, usize) {
        let m = self.read();
        (m.len(), m.phone_count())
    }

    pub fn phase(&self) -> SyncPhase {
        *self.phase.lock().expect("sync phase lock poisoned")
    }

    pub fn set_phase(&self, phase: SyncPhase) {
        *self.phase.lock().expect("sync phase lock poisoned") = phase;
    }

    /// Remembers a failed sync step (the newest replaces the one before).
    pub fn record_failure(&self, failure: SyncFailure) {
        *self
            .last_failure
            .lock()
            .expect("sync failure lock poisoned") = Some(failure);
    }

    /// The last failed sync step, if any step failed since the start.
    pub fn last_failure(&self) -> Option<SyncFailure> {
        self.last_failure
            .lock()
            .expect("sync failure lock poisoned")
            .clone()
    }

    /// The history lag: time since the last poll that reached the newest record.
    pub fn lag(&self) -> Option<Duration> {
        match self.phase() {
            SyncPhase::Synced {
                synced_at: Some(at),
            } => Some(at.elapsed()),
            _ => None,
        }
    }

    /// Import progress as a fraction (1 once imported).
    pub fn progress(&self) -> f64 {
        match self.phase() {
            SyncPhase::Synced { .. } => 1.0,
            SyncPhase::Importing {
                done,
                total: Some(total),
            } if total > 0 => (done as f64 / total as f64).min(1.0),
            _ => 0.0,
        }
    }

    /// One line for `/readyz`: `mirror importing 41% (4100/10000 customers)`,
    /// `mirror synced, lag 3 s`.
    pub fn status_line(&self) -> String {
        match self.phase() {
            SyncPhase::Starting => "mirror starting".to_owned(),
            SyncPhase::Importing { done, total } => {
                importing_line("mirror", done, total, "customers")
            }
            SyncPhase::Synced { synced_at: None } => "mirror synced".to_owned(),
            SyncPhase::Synced {
                synced_at: Some(at),
            } => format!("mirror synced, lag {} s", at.elapsed().as_secs()),
        }
    }

    /// The orders mirror's part of `/readyz`: `orders importing 41% (410/1000 orders)`,
    /// `orders synced, lag 3 s (120 open)`.
    pub fn orders_status_line(&self) -> String {
        match self.orders_phase() {
            SyncPhase::Starting => "orders starting".to_owned(),
            SyncPhase::Importing { done, total } => importing_line("orders", done, total, "orders"),
            SyncPhase::Synced { synced_at: None } => {
                format!("orders synced ({} open)", self.orders_size())
            }
            SyncPhase::Synced {
                synced_at: Some(at),
            } => format!(
                "orders synced, lag {} s ({} open)",
                at.elapsed().as_secs(),
                self.orders_size()
            ),
        }
    }
}

/// `<what> importing 41% (410/1000 <items>)`, or without a percentage when the total is not
/// known.
fn importing_line(what: &str, done: u64, total: Option<u64>, items: &str) -> String {
    match total {
        Some(total) if total > 0 => format!(
            "{what} importing {}% ({done}/{total} {items})",
            (done.min(total) * 100) / total
        ),
        _ => format!("{what} importing ({done} {items})"),
    }
}
