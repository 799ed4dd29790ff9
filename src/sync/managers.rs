//! The managers' states (status, presence) as this process knows them: what the lookup's
//! `owner_if_available` reads, from memory, on every store (SPEC §3, §10: no store round trip
//! on the hot path).
//!
//! The store keeps the durable copy. The board is loaded from it at start (the directory's
//! managers: nobody else is a destination), and every write in this process goes through
//! [`ManagerBoard::set`]: store first, then memory, then (Redis) the sync bus's stream, which
//! every other instance's [`super::follow::Follower`] applies to its own board. So a status
//! set through one instance's `/retailcrm/user-status` is seen by the other instances' next
//! lookups as soon as the stream read returns (milliseconds).

use std::{collections::HashMap, sync::Arc};

use arc_swap::ArcSwap;

use super::redis::{RedisSyncBus, SyncEvent};
use crate::{
    domain::manager::{ManagerId, ManagerState},
    metrics::Metrics,
    store::{Store, StoreError},
};

pub struct ManagerBoard {
    /// Read on every lookup without a lock (a handful of managers: a write replaces the
    /// map).
    states: ArcSwap<HashMap<ManagerId, ManagerState>>,
    store: Arc<dyn Store>,
    bus: Option<Arc<RedisSyncBus>>,
    metrics: Arc<Metrics>,
}

impl ManagerBoard {
    /// Loads the stored states of `managers` (the directory's).
    pub async fn load(
        store: Arc<dyn Store>,
        bus: Option<Arc<RedisSyncBus>>,
        metrics: Arc<Metrics>,
        managers: &[ManagerId],
    ) -> Result<Self, StoreError> {
        let mut states = HashMap::with_capacity(managers.len());
        for &id in managers {
            if let Some(state) = store.get_manager_state(id).await? {
                states.insert(id, state);
            }
        }
        Ok(ManagerBoard {
            states: ArcSwap::from_pointee(states),
            store,
            bus,
            metrics,
        })
    }

    /// The manager's state as last reported (the default, free with unknown presence, when
    /// nothing was).
    pub fn get(&self, id: ManagerId) -> ManagerState {
        self.states.load().get(&id).copied().unwrap_or_default()
    }

    /// Stores the states that differ from what this process knows, applies them in memory
    /// and tells the other instances. A state the bus could not carry is stored: the other
    /// instances have it at their next start (counted in `callgate_sync_errors{kind="bus"}`).
    pub async fn set(&self, states: &[(ManagerId, ManagerState)]) -> Result<(), StoreError> {
        let changed: Vec<(ManagerId, ManagerState)> = {
            let known = self.states.load();
            states
                .iter()
                .filter(|(id, state)| known.get(id) != Some(state))
                .copied()
                .collect()
        };
        if changed.is_empty() {
            return Ok(());
        }
        for &(id, state) in &changed {
            self.store.set_manager_state(id, state).await?;
        }
        self.apply(&changed);
        if let Some(bus) = &self.bus
            && let Err(e) = bus.publish(&SyncEvent::Managers(changed)).await
        {
            self.metrics.sync_error("bus");
            tracing::warn!(error = %e, "Could not tell the other instances of a manager state change; they load it at their next start.");
        }
        Ok(())
    }

    /// Applies states another instance stored.
    pub fn apply(&self, states: &[(ManagerId, ManagerState)]) {
        self.states.rcu(|known| {
            let mut known = HashMap::clone(known);
            known.extend(states.iter().copied());
            known
        });
    }
}
