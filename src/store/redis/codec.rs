//! How the Redis store encodes values: owner entries, TTLs, task tuples, quarantine records.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    crm::CustomerId,
    domain::manager::ManagerId,
    store::{OwnerEntry, QueuedTask, StoreError},
};

/// A TTL in whole milliseconds, or `None` when it is already over (zero, or below 1 ms):
/// such a key counts as expired at once, as in the embedded store.
pub(super) fn ttl_ms(ttl: Duration) -> Option<u64> {
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    (ms > 0).then_some(ms)
}

/// Escapes the glob characters of `SCAN MATCH`.
pub(super) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `{id, group, payload, attempt, enq, err}` as the queue scripts return it.
pub(super) type TaskTuple = (u64, String, Vec<u8>, u32, u64, Option<String>);

pub(super) fn task_from(t: TaskTuple) -> QueuedTask {
    let (id, group, payload, attempt, enqueued_at_ms, last_error) = t;
    QueuedTask {
        id,
        group,
        payload,
        attempt,
        enqueued_at_ms,
        last_error,
        lease_token: 0,
    }
}

pub(super) fn encode_owner(entry: OwnerEntry) -> String {
    let part = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    format!(
        "{}:{}",
        part(entry.customer_id.map(|c| c.0)),
        part(entry.manager_id.map(|m| m.0))
    )
}

pub(super) fn decode_owner(key: &str, raw: &str) -> Result<OwnerEntry, StoreError> {
    let (customer, manager) = raw
        .split_once(':')
        .ok_or_else(|| StoreError::corrupt(key, "owner entry without ':'"))?;
    let part = |s: &str| -> Result<Option<u64>, StoreError> {
        if s.is_empty() {
            Ok(None)
        } else {
            s.parse().map(Some).map_err(|e| StoreError::corrupt(key, e))
        }
    };
    Ok(OwnerEntry {
        customer_id: part(customer)?.map(CustomerId),
        manager_id: part(manager)?.map(ManagerId),
    })
}

/// A quarantine entry as stored (its id is the hash field).
#[derive(Serialize, Deserialize)]
pub(super) struct QuarantineRecord {
    pub(super) received_at_ms: u64,
    pub(super) reason: String,
    pub(super) content_type: Option<String>,
    pub(super) raw: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_entries_roundtrip_through_their_string_form() {
        for entry in [
            OwnerEntry::NEGATIVE,
            OwnerEntry {
                customer_id: Some(CustomerId(42)),
                manager_id: Some(ManagerId(7)),
            },
            OwnerEntry {
                customer_id: Some(CustomerId(1)),
                manager_id: None,
            },
        ] {
            assert_eq!(
                decode_owner("k", &encode_owner(entry)).expect("decode"),
                entry
            );
        }
        assert_eq!(encode_owner(OwnerEntry::NEGATIVE), ":");
        assert!(decode_owner("k", "42").is_err());
    }

    #[test]
    fn scan_patterns_escape_glob_characters() {
        assert_eq!(glob_escape("a*b?[c]\\d:"), "a\\*b\\?\\[c\\]\\\\d:");
    }

    #[test]
    fn zero_ttls_count_as_expired() {
        assert_eq!(ttl_ms(Duration::ZERO), None);
        assert_eq!(ttl_ms(Duration::from_micros(999)), None);
        assert_eq!(ttl_ms(Duration::from_millis(50)), Some(50));
    }
}
