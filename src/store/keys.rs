//! Keys of the raw key/value space ([`super::KeyValue`]), built in one place so two
//! features never collide and no call site concatenates a namespace by hand.
//!
//! | key | what |
//! |---|---|
//! | `dedupe:<source>:<event key>` | an accepted webhook delivery (the queue's dedupe key) |
//! | `action:<event key>:<action key>` | an executed CRM action and its result |
//! | `action:<event key>:log` | the event's call log entry was written |
//! | `lock:number:<e164>` | the per-number lock of the worker (owner token as value) |
//! | `callback:<e164>` | the open call-back task of a caller within its window (S14) |
//! | `legs:<call id>` | what the legs of one call did so far (answered, who talked) |
//! | `tracking-check:<e164>` | the event whose S8 task asked to check this tracking number |
//! | `sandbox:<kind><rest>` | records of the sandbox CRM |

use crate::domain::phone_number::PhoneNumber;

/// Namespace of [`event_dedupe`].
const EVENT_DEDUPE: &str = "dedupe:";
/// Namespace of [`action`] and [`action_log`].
const ACTION: &str = "action:";
/// Namespace of [`number_lock`].
const LOCK: &str = "lock:";
/// Namespace of [`callback`].
const CALLBACK: &str = "callback:";
/// Namespace of [`call_legs`].
const CALL_LEGS: &str = "legs:";
/// Namespace of [`tracking_check`].
const TRACKING_CHECK: &str = "tracking-check:";
/// Namespace of the sandbox CRM's records; [`sandbox`] builds keys under it.
pub const SANDBOX: &str = "sandbox:";

/// `dedupe:<source>:<event key>`: an accepted webhook delivery.
pub fn event_dedupe(source: &str, event_key: &str) -> String {
    format!("{EVENT_DEDUPE}{source}:{event_key}")
}

/// `action:<event key>:<action key>`: an executed CRM action and its result.
pub fn action(event_key: &str, action_key: &str) -> String {
    format!("{ACTION}{event_key}:{action_key}")
}

/// `action:<event key>:log`: the event's call log entry was appended.
pub fn action_log(event_key: &str) -> String {
    action(event_key, "log")
}

/// `lock:number:<e164>`: the worker's per-number mutual exclusion.
pub fn number_lock(phone: &PhoneNumber) -> String {
    format!("{LOCK}number:{}", phone.e164())
}

/// `callback:<e164>`: the open call-back task of a caller within its window (S14).
pub fn callback(phone: &PhoneNumber) -> String {
    format!("{CALLBACK}{}", phone.e164())
}

/// `legs:<call id>`: what the legs of one call did so far (answered, who talked).
pub fn call_legs(call_id: &str) -> String {
    format!("{CALL_LEGS}{call_id}")
}

/// `tracking-check:<e164>`: the event whose S8 task asked to check this unknown tracking
/// number (one reminder per number per day, however many calls it gets).
pub fn tracking_check(tracking: &PhoneNumber) -> String {
    format!("{TRACKING_CHECK}{}", tracking.e164())
}

/// `sandbox:<kind><rest>`: a record of the sandbox CRM (`rest` empty: the scan prefix of
/// `kind`).
pub fn sandbox(kind: &str, rest: impl std::fmt::Display) -> String {
    format!("{SANDBOX}{kind}{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_stored_format() {
        let phone = PhoneNumber::from_e164("+380501234567").expect("canonical");
        assert_eq!(
            event_dedupe("ringostat", "c1:end"),
            "dedupe:ringostat:c1:end"
        );
        assert_eq!(action("c1:end", "customer"), "action:c1:end:customer");
        assert_eq!(action_log("c1:end"), "action:c1:end:log");
        assert_eq!(number_lock(&phone), "lock:number:+380501234567");
        assert_eq!(callback(&phone), "callback:+380501234567");
        assert_eq!(call_legs("c1"), "legs:c1");
        assert_eq!(tracking_check(&phone), "tracking-check:+380501234567");
        assert_eq!(sandbox("order:", 7), "sandbox:order:7");
    }
}
