//! The action planner (SPEC §4, scenarios S1–S14): what a call event should change in the
//! CRM.
//!
//! [`decide`] is the one pipeline the worker and `rules explain` share: the call's site
//! (`[[sites]]` by `project_id`, else by `dst`, else `crm.default_site`), the first matching
//! routing rule, then [`plan`]. [`plan`] is a pure function of the event, the CRM facts the
//! worker gathered, the configuration and the matched rule's actions. It returns a [`Plan`]:
//! an ordered list of [`Action`]s for the worker to execute, and the call-log entry to
//! record (its order date included: the worker stores it as planned).
//!
//! Files: `config` (what the planner takes from the configuration and the rule), `facts`
//! (what the worker gathers), `actions` (what a plan asks of the CRM), `planner` (S1–S14),
//! `decide` (site → rule → plan), `tests` (one test per scenario, `s1_…` to `s14_…`).
//!
//! # Who resolves what
//! The worker gathers [`CrmFacts`] before planning: the customers and orders of the client
//! number (orders already classified open/closed through `crm.closed_status_groups`), the
//! open call-back task of the caller (callgate's store, `callback:<e164>`), what other legs
//! of the same call did, and the managers on both sides. The last one is resolved with
//! [`resolve_parties`], a pure helper over the
//! [`ManagerDirectory`](crate::domain::manager::ManagerDirectory), so the planner itself
//! never sees the directory and its tests state plainly "answered by Tatiana".
//!
//! # References between actions
//! Actions are executed in order. A later action may need the id of something an earlier
//! one creates (the order and the task of a new caller hang on the customer just created):
//! it says so with [`CustomerRef::Created`] / [`OrderRef::Created`] inside a [`LinkRef`],
//! and the worker resolves the draft with the ids it got so far ([`Resolved`]). A plan never
//! refers to something it does not create first; [`UnresolvedRef`] exists only to make the
//! worker's bug visible instead of panicking.
//!
//! # Invariants
//! - The shop's own numbers and callers that are not numbers never produce a customer,
//!   order, task or pop-up (SPEC §2). Calls are still logged; a number is still uploaded.
//! - Internal manager-to-manager calls and calls a rule ignores produce no action at all,
//!   only the log entry (S9, S11).
//! - A task is never dropped for lack of an order: it is linked to the order when there is
//!   one, else to the customer, else (a missed call from a caller with no customer) to
//!   nothing but the phone (S13).
//! - One call-back task per caller and window, updated rather than duplicated; a call
//!   answered on any leg is not missed (S14).
//! - [`Action::key`] is unique within a plan and stable across re-planning of the same
//!   event, so the worker can record executed actions under `event key + action key`.
//! - Every finished event (end/missed) yields a log entry; start/answer events do not (they
//!   are not calls yet).

mod actions;
mod config;
mod decide;
mod facts;
mod planner;
#[cfg(test)]
mod tests;

pub use actions::{
    Action, CustomerRef, LinkRef, OrderDraft, OrderRef, Plan, Resolved, Scenario, TaskDraft,
    TaskPurpose, UnresolvedRef,
};
pub use config::{CreateOnIncoming, CreateOnOutgoing, PlannerConfig, RuleActions, TaskTexts};
pub use decide::{Decision, decide, decide_explained};
pub use facts::{
    CrmFacts, CustomerFacts, OpenCallback, OrderFacts, OtherLegs, Parties, resolve_parties,
};
pub use planner::plan;

/// retailCRM `orderMethod` of every order made from a call.
pub const ORDER_METHOD_PHONE: &str = "phone";
/// Prefix of the `externalId`s callgate gives customers and orders it creates.
pub const EXTERNAL_ID_PREFIX: &str = "callgate-";
