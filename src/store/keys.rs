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
//! | `trail:<call id>` | a call's decision trail, a list (`crate::call_trail`) |
//! | `lookup:<e164>` | a lookup decision not yet joined to its call (no call id in the request) |
//! | `admin-session:<id>` | a signed-in operator's session of the web page (its CSRF token) |
//! | `sandbox:<kind><rest>` | records of the sandbox CRM |
//! | `reconcile:<project>` | the last reconciled point of a Ringostat project (flow E) |
//! | `lock:reconcile:<project>` | the lease of the instance reconciling a project |
//! | `mirror:c:<customer id>`, `mirror:state`, `mirror:inactive` | the owner mirror and its sync state (`crate::sync`) |
//! | `mirror:o:<order id>`, `mirror:orders-state` | the orders mirror (open orders) and its sync state (`crate::sync::orders`) |

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
/// Namespace of [`call_record_missed`].
const CALL_RECORD_MISSED: &str = "callrec-missed:";
/// Namespace of [`tracking_check`].
const TRACKING_CHECK: &str = "tracking-check:";
/// Namespace of [`call_trail`].
const CALL_TRAIL: &str = "trail:";
/// Namespace of [`caller_lookup`].
const CALLER_LOOKUP: &str = "lookup:";
/// Namespace of [`admin_session`].
const ADMIN_SESSION: &str = "admin-session:";
/// Namespace of the owner mirror ([`mirror_customer`], [`mirror_state`], [`mirror_inactive`]).
const MIRROR: &str = "mirror:";
/// Namespace of [`reconcile_point`].
const RECONCILE: &str = "reconcile:";
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

/// Prefix of every lock and lease one process holds in the key/value space
/// ([`number_lock`], [`reconcile_lease`]): the embedded store, a file only one process opens,
/// drops them all at open (their holder is dead).
pub const PROCESS_LOCKS: &str = LOCK;

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

/// `callrec-missed:<external id>`: a call record with this `externalId` went (or may have
/// gone) to `telephony/calls/upload` as not answered, so the CRM may hold it under that id.
pub fn call_record_missed(external_id: &str) -> String {
    format!("{CALL_RECORD_MISSED}{external_id}")
}

/// `tracking-check:<e164>`: the event whose S8 task asked to check this unknown tracking
/// number (one reminder per number per day, however many calls it gets).
pub fn tracking_check(tracking: &PhoneNumber) -> String {
    format!("{TRACKING_CHECK}{}", tracking.e164())
}

/// `trail:<call id>`: the list ([`super::KeyValue::append_list`]) of one call's decision
/// trail steps.
pub fn call_trail(call_id: &str) -> String {
    format!("{CALL_TRAIL}{call_id}")
}

/// `lookup:<e164>`: the last lookup decision for a caller whose lookup request carried no
/// call id, until the call's first event joins it to the call's trail.
pub fn caller_lookup(caller: &PhoneNumber) -> String {
    format!("{CALLER_LOOKUP}{}", caller.e164())
}

/// `admin-session:<id>`: a signed-in operator's session of the web page (its CSRF token).
pub fn admin_session(id: &str) -> String {
    format!("{ADMIN_SESSION}{id}")
}

/// `sandbox:<kind><rest>`: a record of the sandbox CRM (`rest` empty: the scan prefix of
/// `kind`).
pub fn sandbox(kind: &str, rest: impl std::fmt::Display) -> String {
    format!("{SANDBOX}{kind}{rest}")
}

/// `mirror:c:`: the prefix of every mirrored customer ([`mirror_customer`]).
pub fn mirror_customers() -> String {
    format!("{MIRROR}c:")
}

/// `mirror:c:<customer id, 20 digits>`: one mirrored customer (zero-padded so a prefix scan
/// returns them in id order).
pub fn mirror_customer(id: u64) -> String {
    format!("{MIRROR}c:{id:020}")
}

/// `mirror:state`: the first import's progress and the history cursor.
pub fn mirror_state() -> String {
    format!("{MIRROR}state")
}

/// `mirror:inactive`: the users the CRM lists as inactive.
pub fn mirror_inactive() -> String {
    format!("{MIRROR}inactive")
}

/// `mirror:o:`: the prefix of every mirrored open order ([`mirror_order`]).
pub fn mirror_orders() -> String {
    format!("{MIRROR}o:")
}

/// `mirror:o:<order id, 20 digits>`: one mirrored open order.
pub fn mirror_order(id: u64) -> String {
    format!("{MIRROR}o:{id:020}")
}

/// `mirror:orders-state`: the orders import's progress and the orders history cursor.
pub fn mirror_orders_state() -> String {
    format!("{MIRROR}orders-state")
}

/// `reconcile:<project>`: the last reconciled point of a Ringostat project (flow E).
pub fn reconcile_point(project_id: &str) -> String {
    format!("{RECONCILE}{project_id}")
}

/// `lock:reconcile:<project>`: the lease of the one instance reconciling a project.
pub fn reconcile_lease(project_id: &str) -> String {
    format!("{LOCK}reconcile:{project_id}")
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
        assert_eq!(call_trail("1:2"), "trail:1:2");
        assert_eq!(caller_lookup(&phone), "lookup:+380501234567");
        assert_eq!(admin_session("abc"), "admin-session:abc");
    }
}
