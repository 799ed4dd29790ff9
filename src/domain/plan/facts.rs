//! What the worker gathers before planning ([`CrmFacts`]) and who is who in a call
//! ([`resolve_parties`]).

use chrono::NaiveDateTime;

use crate::domain::{
    call::{CallEvent, Direction, strip_label},
    crm_model::{CustomerId, OrderId, TaskId},
    manager::{ManagerDirectory, ManagerId},
};

/// An order of the caller's customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFacts {
    pub id: OrderId,
    /// Status not in a closed status group.
    pub open: bool,
    pub manager_id: Option<ManagerId>,
    pub created_at: Option<NaiveDateTime>,
}

/// A CRM customer whose phone normalizes to the client number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerFacts {
    pub id: CustomerId,
    /// The responsible manager (the owner).
    pub manager_id: Option<ManagerId>,
    pub created_at: Option<NaiveDateTime>,
    /// Last activity (last order or contact), when the CRM said.
    pub last_active_at: Option<NaiveDateTime>,
    pub orders: Vec<OrderFacts>,
}

/// The open call-back task callgate made for this caller (store key `callback:<e164>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenCallback {
    pub task_id: TaskId,
    /// Missed calls counted so far.
    pub count: u32,
    pub last_missed_at: NaiveDateTime,
    /// The call id of the last miss.
    pub last_call_id: String,
}

/// What other legs of the same call id did, as far as the worker has seen.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OtherLegs {
    /// Some other leg was answered.
    pub answered: bool,
    /// Managers who talked on other legs.
    pub talkers: Vec<ManagerId>,
}

/// Everything the planner knows beyond the event, gathered by the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmFacts {
    /// The worker's clock, in the shop's local time: due time of open tasks, and the call
    /// time when the event has no date.
    pub now: NaiveDateTime,
    /// Customers with the client's number (empty: a new number).
    pub customers: Vec<CustomerFacts>,
    /// The manager on the shop's side of this leg (who answered an incoming call, who made
    /// an outgoing one); see [`resolve_parties`].
    pub answered_by: Option<ManagerId>,
    /// That manager's display name, for task texts.
    pub answered_by_name: Option<String>,
    /// The client side is a manager too: an internal call (S9).
    pub client_is_manager: bool,
    pub open_callback: Option<OpenCallback>,
    pub other_legs: OtherLegs,
}

impl CrmFacts {
    /// Facts about a number the CRM does not know, at `now`.
    pub fn new_number(now: NaiveDateTime) -> Self {
        CrmFacts {
            now,
            customers: Vec::new(),
            answered_by: None,
            answered_by_name: None,
            client_is_manager: false,
            open_callback: None,
            other_legs: OtherLegs::default(),
        }
    }
}

/// The managers involved in a call, as far as the directory can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Parties {
    /// The manager on the shop's side of this leg.
    pub answered_by: Option<ManagerId>,
    /// The client side is itself a manager (SIP login, code or phone of one).
    pub client_is_manager: bool,
}

/// Resolves who is who through the directory: the shop's side by staff id, then
/// `connected_with` (SIP login, code or number), then — for outgoing calls — the caller
/// field (the employee's SIP); the client side by its SIP login, code or number.
pub fn resolve_parties(event: &CallEvent, directory: &ManagerDirectory) -> Parties {
    let by_text = |raw: &str| {
        let addr = strip_label(raw);
        directory
            .by_sip(addr)
            .or_else(|| directory.by_code(addr))
            .map(|m| m.id)
    };
    let answered_by = event
        .staff_id
        .and_then(|s| directory.by_staff_id(s).map(|m| m.id))
        .or_else(|| event.connected_with.as_deref().and_then(by_text))
        .or_else(|| {
            event
                .connected_with_number
                .as_ref()
                .and_then(|n| directory.by_phone(n).map(|m| m.id))
        })
        .or_else(|| match event.direction() {
            Direction::Outgoing => event.caller_raw.as_deref().and_then(by_text),
            Direction::Incoming => None,
        });
    let client_is_manager = event.client_raw.as_deref().and_then(by_text).is_some()
        || event
            .client
            .as_ref()
            .is_ok_and(|n| directory.by_phone(n).is_some());
    Parties {
        answered_by,
        client_is_manager,
    }
}
