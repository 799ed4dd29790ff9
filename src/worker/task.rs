//! The queue's task format: what the webhook handler leaves for the worker, and the key
//! that keeps a repeated delivery of one event out of the queue.
//!
//! The handler writes a [`StoredWebhook`] under [`dedupe_key`] for [`DEDUPE_TTL`]; the
//! worker reads it back and parses the fields again (so a later, better parser reads old
//! tasks too).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{domain::call::CallEvent, store::keys};

/// How long a delivered event's dedupe key is remembered. Ringostat never re-sends on its
/// own; repeats come from operators and from reconciliation, well within a week.
pub const DEDUPE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// What the queue holds for one webhook: the fields as received and the `?event=` hint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredWebhook {
    pub fields: Map<String, Value>,
    pub event: Option<String>,
    pub received_at_ms: u64,
}

/// The queue's dedupe key of a call event: `event:ringostat:<call id>|<moment>|<leg>` (see
/// [`CallEvent::dedupe_key`]), so a redelivery is not queued twice but each leg and moment
/// of a call is.
pub fn dedupe_key(event: &CallEvent) -> String {
    keys::event_dedupe("ringostat", &event.dedupe_key())
}
