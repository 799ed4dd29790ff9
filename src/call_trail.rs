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
    store::{Store, StoreError, keys, now_ms},
};

/// How long a call's trail is kept.
pub const TRAIL_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Most steps read for one call.
pub const MAX_STEPS: usize = 1000;
/// Sequence (`next_id`) of trail steps.
const SEQUENCE: &str = "call_trail";

fn prefix(call_id: &str) -> String {
    format!("{}{}:{call_id}:", keys::CALL_TRAIL, call_id.len())
}

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
    let json = serde_json::to_vec(&step).map_err(|e| StoreError::Backend(e.to_string()))?;
    // Zero-padded, so key order is append order.
    let key = format!("{}{seq:020}", prefix(call_id));
    store.set_raw(&key, &json, Some(TRAIL_TTL)).await
}

/// `call_id`'s trail, oldest step first.
pub async fn read(store: &dyn Store, call_id: &str) -> Result<Vec<TrailStep>, StoreError> {
    store
        .scan_prefix(&prefix(call_id), MAX_STEPS)
        .await?
        .into_iter()
        .map(|(key, json)| {
            serde_json::from_slice(&json).map_err(|e| StoreError::Corrupt {
                key,
                detail: e.to_string(),
            })
        })
        .collect()
}
