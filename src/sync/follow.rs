//! Several instances on one Redis: each applies what the others publish on the sync bus's
//! stream ([`super::redis::CHANGES`]) to its own memory — the owner mirror's changes (when
//! `[sync]` is on) and the managers' states (always).
//!
//! The position is taken before the stored mirror and states are loaded
//! ([`Follower::position_before_loading`]), so an event that lands in between is applied
//! twice, which is harmless: every event carries whole states.

use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::{
    RETRY_PAUSE, SyncError, Syncer,
    managers::ManagerBoard,
    redis::{BusError, RedisSyncBus, SyncEvent},
};
use crate::metrics::Metrics;

pub struct Follower {
    bus: Arc<RedisSyncBus>,
    position: Mutex<String>,
    managers: Arc<ManagerBoard>,
    syncer: Option<Arc<Syncer>>,
    metrics: Arc<Metrics>,
}

impl Follower {
    /// The stream's newest id: call before loading anything from the store.
    pub async fn position_before_loading(bus: &RedisSyncBus) -> Result<String, BusError> {
        bus.position().await
    }

    pub fn new(
        bus: Arc<RedisSyncBus>,
        position: String,
        managers: Arc<ManagerBoard>,
        syncer: Option<Arc<Syncer>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Follower {
            bus,
            position: Mutex::new(position),
            managers,
            syncer,
            metrics,
        }
    }

    /// Applies the other instances' events until `token` is cancelled.
    pub async fn run_until_stopped(self: Arc<Self>, token: CancellationToken) {
        loop {
            let from = self.position.lock().await.clone();
            let read = tokio::select! {
                () = token.cancelled() => return,
                read = self.bus.read(&from) => read,
            };
            match read {
                Ok((events, position)) => {
                    for event in events {
                        match event {
                            SyncEvent::Managers(states) => self.managers.apply(&states),
                            other => {
                                if let Some(syncer) = &self.syncer {
                                    syncer.apply_remote(other);
                                }
                            }
                        }
                    }
                    *self.position.lock().await = position;
                }
                Err(e) => {
                    let e = SyncError::Bus(e);
                    self.metrics.sync_error(e.kind());
                    tracing::warn!(error = %e, "Reading the other instances' changes failed; will retry.");
                    tokio::select! {
                        () = token.cancelled() => return,
                        () = tokio::time::sleep(RETRY_PAUSE) => {}
                    }
                }
            }
        }
    }
}
