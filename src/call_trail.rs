//! A call's decision trail (issue 16): what the planner planned for each of its events, each
//! CRM action with the ids the CRM gave, each retry and dead letter, in order.
//!
//! Stored in the store's key/value space, one key per step (`trail:<len>:<call id>:<seq>`,
//! the sequence from `next_id`), so appending never reads nor rewrites what is there and
//! every backend keeps the steps in order with no backend code of its own. The length
//! prefix keeps one call's prefix from matching another's (`1` vs `1:2`). Steps expire with
//! [`TRAIL_TTL`]. Recording is best effort: a store failure is logged and the call's work
//! goes on.

use std::time::Duration;

use crate::{
    domain::call_log::{TrailKind, TrailStep},
    store::{KeyValueExt, Store, StoreError, keys, now_ms},
};

/// How long a call's trail is kept.
pub const TRAIL_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Most steps read for one call.
pub const MAX_STEPS: usize = 1000;
/// Sequence (`next_id`) of trail steps.
const SEQUENCE: &str = "call_trail";

/// Appends a step to `call_id`'s trail; logs and forgets a store failure.
pub async fn record(store: &dyn Store, call_id: &str, kind: TrailKind) {
    if let Err(e) = try_record(store, call_id, kind).await {
        tracing::warn!(error = %e, "Recording a decision trail step failed.");
    }
}

async fn try_record(store: &dyn Store, call_id: &str, kind: TrailKind) -> Result<(), StoreError> {
    let seq = store.next_id(SEQUENCE).await?;
    let step = TrailStep {
        at_ms: now_ms(),
        kind,
    };
    store
        .set_json(&keys::call_trail_step(call_id, seq), &step, Some(TRAIL_TTL))
        .await
}

/// `call_id`'s trail, oldest step first.
pub async fn read(store: &dyn Store, call_id: &str) -> Result<Vec<TrailStep>, StoreError> {
    Ok(store
        .scan_json(&keys::call_trail(call_id), MAX_STEPS)
        .await?
        .into_iter()
        .map(|(_, step)| step)
        .collect())
}
