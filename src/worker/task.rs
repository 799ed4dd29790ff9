//! The queue's task formats: what the webhook handler leaves for the worker, what the worker
//! leaves for the call batcher, and the keys that keep a repeat of either out of the queue.
//!
//! The handler writes a [`StoredWebhook`] under [`dedupe_key`] for [`DEDUPE_TTL`]; the
//! worker reads it back and parses the fields again (so a later, better parser reads old
//! tasks too). A call event's `UploadCall` action writes a [`StoredCallRecord`] (see
//! [`super::call_batch`]) in a group of its own, so the record of one leg never holds up the
//! next leg of the call.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{crm::CallRecord, domain::call::CallEvent, store::keys};

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
    dedupe_store_key(&event.dedupe_key())
}

/// The same key from an event key (`<call id>|<moment>|<leg>`): reconciliation looks up the
/// keys an after-call webhook of a listed call may have had.
pub fn dedupe_store_key(event_key: &str) -> String {
    keys::event_dedupe("ringostat", event_key)
}

/// What the queue holds for one call record on its way to `telephony/calls/upload`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredCallRecord {
    pub call_record: CallRecord,
    /// The Ringostat call id (the call's trail).
    pub call_id: String,
    /// The `externalId` an answered record takes when its own one may already hold a "no
    /// answer" record of another leg in the CRM (`<externalId>:<leg>`).
    pub alt_external_id: String,
}

/// A task of the queue, either kind.
#[derive(Debug, Clone)]
pub enum StoredTask {
    Webhook(StoredWebhook),
    CallRecord(Box<StoredCallRecord>),
}

/// Reads a queued task's payload.
pub fn decode(payload: &[u8]) -> Result<StoredTask, serde_json::Error> {
    let value: Value = serde_json::from_slice(payload)?;
    if value.get("call_record").is_some() {
        serde_json::from_value(value).map(|r| StoredTask::CallRecord(Box::new(r)))
    } else {
        serde_json::from_value(value).map(StoredTask::Webhook)
    }
}

/// The queue's dedupe key and group of the call record of one event (`<call id>|<moment>|<leg>`):
/// a re-run of the event after a crash does not queue its record twice.
pub fn call_record_keys(event_key: &str) -> (String, String) {
    (
        keys::event_dedupe("callrec", event_key),
        format!("callrec:{event_key}"),
    )
}
