//! The action planner (SPEC §4, scenarios S1–S14): what a call event should change in the
//! CRM.
//!
//! [`plan`] is a pure function of the event, the CRM facts the worker gathered, the
//! configuration and the matched routing rule's actions. It returns a [`Plan`]: an ordered
//! list of [`Action`]s for the worker to execute, and the call-log entry to record.
//!
//! # Who resolves what
//! The worker gathers [`CrmFacts`] before planning: the customers and orders of the client
//! number (orders already classified open/closed through `crm.closed_status_groups`), the
//! site (from `[[sites]]` by `project_id`/`dst`), the open call-back task of the caller
//! (callgate's store, `callback:<e164>`), what other legs of the same call did, and the
//! managers on both sides. The last one is resolved with [`resolve_parties`], a pure helper
//! over the [`ManagerDirectory`], so the planner itself never sees the directory and its
//! tests state plainly "answered by Tatiana".
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

use std::{collections::HashSet, fmt};

use chrono::{Duration, NaiveDateTime};
use serde::{Deserialize, Serialize};

use super::crm_model::{
    CallEventNotice, CallEventType, CallRecord, CallResult, CustomerId, NewCustomer, NewOrder,
    NewTask, OrderId, TaskId, TaskLink, TaskUpdate, UtmSource,
};
use super::{
    call::{CallEvent, CallOutcome, Direction, EventMoment, strip_label},
    call_log::CallLogEntry,
    manager::{ManagerDirectory, ManagerId},
    phone_number::PhoneNumber,
};

/// retailCRM `orderMethod` of every order made from a call.
pub const ORDER_METHOD_PHONE: &str = "phone";
/// Prefix of the `externalId`s callgate gives customers and orders it creates.
pub const EXTERNAL_ID_PREFIX: &str = "callgate-";

// === Configuration ===

/// `crm.create_on_incoming`: what an answered incoming call from a new number creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreateOnIncoming {
    #[default]
    CustomerAndOrder,
    /// Only the customer; orders are made by hand when the caller buys.
    Customer,
}

/// `crm.create_on_outgoing`: what an answered outgoing call to a new number creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreateOnOutgoing {
    #[default]
    Nothing,
    Customer,
    CustomerAndOrder,
}

/// Task texts. Placeholders: `{phone}` (the client, E.164), `{manager}` (the manager who
/// talked), `{count}` (missed calls so far), `{number}` (the tracking number).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskTexts {
    /// The closed task on whoever talked (S1–S4, S7, S10).
    pub closed_call: String,
    /// The open call-back task (S5, S6, S14).
    pub callback: String,
    /// The open task on the owner when another manager talked to their customer (S7).
    pub notify_owner: String,
    /// The task on the senior manager about an unknown tracking number (S8).
    pub check_tracking: String,
}

impl Default for TaskTexts {
    fn default() -> Self {
        TaskTexts {
            closed_call: "Call with {phone}".to_owned(),
            callback: "Call back {phone} (missed calls: {count})".to_owned(),
            notify_owner: "Your customer {phone} talked to {manager}".to_owned(),
            check_tracking: "Check the number {number}: calls to it map to no site or manager"
                .to_owned(),
        }
    }
}

fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    vars.iter()
        .fold(template.to_owned(), |text, (name, value)| {
            text.replace(&format!("{{{name}}}"), value)
        })
}

/// What the planner needs from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannerConfig {
    pub create_on_incoming: CreateOnIncoming,
    pub create_on_outgoing: CreateOnOutgoing,
    /// `crm.senior_manager_id`: call-backs for callers with no owner (S5), unknown tracking
    /// numbers (S8), and the closed task when nobody else can take it.
    pub senior_manager_id: Option<ManagerId>,
    /// `crm.callback_window_min`: misses this close to the previous miss update the same
    /// call-back task (S14). Sliding: measured from the last miss.
    pub callback_window_min: u32,
    /// Status of orders made from calls when no rule says otherwise.
    pub default_order_status: String,
    /// `crm.default_site`: the site when the worker could not tell one.
    pub default_site: String,
    /// The shop's own numbers: tracking numbers of `[[sites]]`, `[[managers]]` phones and
    /// configured own lines. They never become customers; a tracking number not in this set
    /// is unknown (S8).
    pub own_numbers: HashSet<PhoneNumber>,
    pub texts: TaskTexts,
    /// Also send a `hangup` pop-up event to the manager after an answered call (off by
    /// default: start/answer webhooks do the pop-up).
    pub popup_after_call: bool,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        PlannerConfig {
            create_on_incoming: CreateOnIncoming::default(),
            create_on_outgoing: CreateOnOutgoing::default(),
            senior_manager_id: None,
            callback_window_min: 60,
            default_order_status: "new".to_owned(),
            default_site: "default".to_owned(),
            own_numbers: HashSet::new(),
            texts: TaskTexts::default(),
            popup_after_call: false,
        }
    }
}

/// The actions of the routing rule that matched the event (SPEC §5).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RuleActions {
    /// The rule's name, for the log.
    pub name: String,
    /// Status of any order the call creates.
    pub order_status: Option<String>,
    /// `Some(false)`: never create an order; `Some(true)`: create one even where the config
    /// would not (only where a customer exists or is created).
    pub create_order: Option<bool>,
    /// Responsible manager of new customers and orders, and performer of call-back tasks
    /// for callers with no owner. Never changes an existing customer's owner.
    pub assign_to: Option<ManagerId>,
    /// Text of the closed call task and the call-back task.
    pub task_text: Option<String>,
    /// Send nothing to the CRM; log only.
    pub ignore: bool,
}

// === Facts ===

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
    /// The site told from `project_id` / `dst`; `None` → `crm.default_site`.
    pub site: Option<String>,
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
            site: None,
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

// === Actions ===

/// A customer an action refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomerRef {
    Existing(CustomerId),
    /// The one [`Action::EnsureCustomer`] of this plan yields (created or found).
    Created,
}

/// An order an action refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderRef {
    Existing(OrderId),
    /// The one [`Action::CreateOrder`] of this plan creates.
    Created,
}

/// What a task hangs on, before ids are known (S13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkRef {
    Order(OrderRef),
    Customer(CustomerRef),
    /// Only the phone (a missed call from a caller with no customer).
    None,
}

/// Ids produced by the actions executed so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resolved {
    pub customer: Option<CustomerId>,
    pub order: Option<OrderId>,
}

/// A draft refers to something the plan creates, but it was not created (a worker bug:
/// actions must run in plan order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UnresolvedRef {
    #[error("the plan refers to the customer it ensures, but that action has not run")]
    Customer,
    #[error("the plan refers to the order it creates, but that action has not run")]
    Order,
}

impl CustomerRef {
    pub fn resolve(self, r: &Resolved) -> Result<CustomerId, UnresolvedRef> {
        match self {
            CustomerRef::Existing(id) => Ok(id),
            CustomerRef::Created => r.customer.ok_or(UnresolvedRef::Customer),
        }
    }
}

impl OrderRef {
    pub fn resolve(self, r: &Resolved) -> Result<OrderId, UnresolvedRef> {
        match self {
            OrderRef::Existing(id) => Ok(id),
            OrderRef::Created => r.order.ok_or(UnresolvedRef::Order),
        }
    }
}

impl LinkRef {
    pub fn resolve(self, r: &Resolved) -> Result<TaskLink, UnresolvedRef> {
        Ok(match self {
            LinkRef::Order(o) => TaskLink::Order(o.resolve(r)?),
            LinkRef::Customer(c) => TaskLink::Customer(c.resolve(r)?),
            LinkRef::None => TaskLink::None,
        })
    }
}

/// `orders/create` before the customer id is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderDraft {
    /// `callgate-<call id>`: one order per call, whichever leg gets there first.
    pub external_id: String,
    pub customer: CustomerRef,
    pub manager_id: Option<ManagerId>,
    pub status: String,
    pub phone: PhoneNumber,
    pub source: UtmSource,
    pub ga_client_id: Option<String>,
}

impl OrderDraft {
    pub fn resolve(&self, r: &Resolved) -> Result<NewOrder, UnresolvedRef> {
        Ok(NewOrder {
            external_id: self.external_id.clone(),
            customer_id: self.customer.resolve(r)?,
            manager_id: self.manager_id,
            status: Some(self.status.clone()),
            order_method: ORDER_METHOD_PHONE.to_owned(),
            phone: self.phone.clone(),
            source: self.source.clone(),
            ga_client_id: self.ga_client_id.clone(),
        })
    }
}

/// `tasks/create` before the link ids are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDraft {
    pub text: String,
    /// The caller's number, the recording link, the call card.
    pub commentary: Option<String>,
    pub datetime: NaiveDateTime,
    pub performer_id: ManagerId,
    /// Closed (done) on creation.
    pub complete: bool,
    pub link: LinkRef,
    pub phone: Option<PhoneNumber>,
}

impl TaskDraft {
    pub fn resolve(&self, r: &Resolved) -> Result<NewTask, UnresolvedRef> {
        Ok(NewTask {
            text: self.text.clone(),
            commentary: self.commentary.clone(),
            datetime: self.datetime,
            performer_id: self.performer_id,
            complete: self.complete,
            link: self.link.resolve(r)?,
            phone: self.phone.clone(),
        })
    }

    /// The edit that brings an existing task up to this draft (S14).
    pub fn update(&self) -> TaskUpdate {
        TaskUpdate {
            text: Some(self.text.clone()),
            commentary: self.commentary.clone(),
            complete: None,
        }
    }
}

/// Why a one-off task is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskPurpose {
    /// Closed task on the manager who talked, with the recording.
    ClosedCall,
    /// Open task on the owner: "your customer talked to T" (S7).
    NotifyOwner,
    /// Open task on the senior manager about an unknown tracking number (S8).
    CheckTracking,
}

/// One thing to do in the CRM. Executed in plan order; each is idempotent under its
/// [`key`](Action::key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the customer of a number the CRM does not know (the worker gathers the facts
    /// and runs the plan under a per-number lock; the `externalId`
    /// `callgate-<e164 digits>` finds a create that crashed before it was recorded).
    EnsureCustomer(NewCustomer),
    CreateOrder(OrderDraft),
    CreateTask {
        purpose: TaskPurpose,
        task: TaskDraft,
    },
    /// Create the caller's call-back task, or update `existing` with the new count and the
    /// latest recording (S5, S6, S14). The worker records `(task id, count, call id, time)`
    /// under `callback:<e164>` afterwards.
    UpsertCallbackTask {
        existing: Option<TaskId>,
        count: u32,
        task: TaskDraft,
    },
    /// Close the call-back task: a later leg of the same call was answered (S14).
    CompleteCallbackTask {
        task_id: TaskId,
        commentary: String,
    },
    /// `telephony/call/event`: the pop-up card (S1).
    PopUp(CallEventNotice),
    /// `telephony/calls/upload` (S12); the CRM dedupes by `externalId`.
    UploadCall(CallRecord),
}

impl Action {
    /// Stable, unique within a plan: the worker stores executed actions under it.
    pub fn key(&self) -> String {
        match self {
            Action::EnsureCustomer(_) => "customer".to_owned(),
            Action::CreateOrder(_) => "order".to_owned(),
            Action::CreateTask {
                purpose: TaskPurpose::ClosedCall,
                task,
            } => format!("task:closed:{}", task.performer_id),
            Action::CreateTask {
                purpose: TaskPurpose::NotifyOwner,
                ..
            } => "task:notify-owner".to_owned(),
            Action::CreateTask {
                purpose: TaskPurpose::CheckTracking,
                ..
            } => "task:check-tracking".to_owned(),
            Action::UpsertCallbackTask { .. } => "task:callback".to_owned(),
            Action::CompleteCallbackTask { .. } => "task:callback:complete".to_owned(),
            Action::PopUp(_) => "popup".to_owned(),
            Action::UploadCall(_) => "upload".to_owned(),
        }
    }
}

/// SPEC §4 scenario ids, recorded in the plan for `rules explain` and the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scenario {
    S1,
    S2,
    S3,
    S4,
    S5,
    S6,
    S7,
    S8,
    S9,
    S10,
    S11,
    S12,
    S13,
    S14,
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The planner's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Site code for creates and the upload.
    pub site: String,
    pub actions: Vec<Action>,
    /// Scenarios that applied, in the order they were recognized.
    pub scenarios: Vec<Scenario>,
    /// callgate's own call log entry; `None` for start/answer events.
    pub log: Option<CallLogEntry>,
}

impl Plan {
    pub fn keys(&self) -> Vec<String> {
        self.actions.iter().map(Action::key).collect()
    }
}

// === The planner ===

/// Plans the CRM actions for one event. Pure: same inputs, same plan.
pub fn plan(
    event: &CallEvent,
    facts: &CrmFacts,
    cfg: &PlannerConfig,
    rule: Option<&RuleActions>,
) -> Plan {
    let mut p = Planner::new(event, facts, cfg, rule);
    p.run();
    p.finish()
}

struct Planner<'a> {
    event: &'a CallEvent,
    facts: &'a CrmFacts,
    cfg: &'a PlannerConfig,
    rule: Option<&'a RuleActions>,
    site: String,
    /// The client number when it may become/link to a customer: a number, not our own.
    client: Option<&'a PhoneNumber>,
    /// The most recently active matching customer.
    customer: Option<&'a CustomerFacts>,
    actions: Vec<Action>,
    scenarios: Vec<Scenario>,
    notes: Vec<String>,
    order_date: Option<NaiveDateTime>,
    upload: bool,
}

impl<'a> Planner<'a> {
    fn new(
        event: &'a CallEvent,
        facts: &'a CrmFacts,
        cfg: &'a PlannerConfig,
        rule: Option<&'a RuleActions>,
    ) -> Self {
        let client = event
            .client
            .as_ref()
            .ok()
            .filter(|n| !cfg.own_numbers.contains(n));
        // Several customers with one number: the most recently active one (SPEC §2).
        let customer = facts
            .customers
            .iter()
            .max_by_key(|c| (c.last_active_at.or(c.created_at), c.id));
        Planner {
            event,
            facts,
            cfg,
            rule,
            site: facts
                .site
                .clone()
                .unwrap_or_else(|| cfg.default_site.clone()),
            client,
            customer: customer.filter(|_| client.is_some()),
            actions: Vec::new(),
            scenarios: Vec::new(),
            notes: Vec::new(),
            order_date: None,
            upload: true,
        }
    }

    fn scenario(&mut self, s: Scenario) {
        if !self.scenarios.contains(&s) {
            self.scenarios.push(s);
        }
    }

    fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    fn run(&mut self) {
        if let Some(rule) = self.rule {
            self.scenario(Scenario::S11);
            self.note(format!("rule {:?}", rule.name));
            if rule.ignore {
                self.note("ignored by the rule");
                return;
            }
        }
        if self.facts.client_is_manager {
            self.scenario(Scenario::S9);
            self.note("internal call between managers");
            return;
        }
        match &self.event.client {
            Err(e) => self.note(format!("caller is not a phone number ({e})")),
            Ok(_) if self.client.is_none() => self.note("the shop's own number"),
            Ok(_) => {}
        }
        if let Some(c) = self.customer.filter(|_| self.facts.customers.len() > 1) {
            self.note(format!(
                "{} customers have this number; used {} (most recently active)",
                self.facts.customers.len(),
                c.id
            ));
        }
        if !self.event.moment.is_finished() {
            self.popup_in_call();
            return;
        }
        match (self.event.direction(), self.event.outcome()) {
            (Direction::Incoming, CallOutcome::Answered) => self.incoming_answered(),
            (Direction::Incoming, CallOutcome::Missed | CallOutcome::Failed) => {
                self.incoming_missed()
            }
            (Direction::Outgoing, CallOutcome::Answered) => self.outgoing_answered(),
            (_, outcome) => self.note(format!("{} call: nothing to do", outcome.as_str())),
        }
        self.check_tracking_number();
        self.upload_call();
    }

    // --- time, texts, references ---

    fn call_time(&self) -> NaiveDateTime {
        self.event.date.map_or(self.facts.now, |d| d.local)
    }

    fn phone_text(&self) -> String {
        match (&self.event.client, &self.event.client_raw) {
            (Ok(n), _) => n.e164().to_owned(),
            (Err(_), Some(raw)) => raw.clone(),
            (Err(_), None) => "unknown caller".to_owned(),
        }
    }

    /// Caller, recording and call card, one per line.
    fn commentary(&self, extra: Option<String>) -> String {
        let mut lines = vec![format!("Phone: {}", self.phone_text())];
        if let Some(line) = extra {
            lines.push(line);
        }
        if let Some(r) = &self.event.recording {
            lines.push(format!("Recording: {}", r.url));
        }
        if let Some(card) = &self.event.call_card {
            lines.push(format!("Call card: {card}"));
        }
        lines.join("\n")
    }

    fn rule_text(&self) -> Option<&'a str> {
        self.rule.and_then(|r| r.task_text.as_deref())
    }

    fn rule_assignee(&self) -> Option<ManagerId> {
        self.rule.and_then(|r| r.assign_to)
    }

    fn wants_order(&self, by_config: bool) -> bool {
        self.rule.and_then(|r| r.create_order).unwrap_or(by_config)
    }

    fn order_status(&self) -> String {
        self.rule
            .and_then(|r| r.order_status.clone())
            .unwrap_or_else(|| self.cfg.default_order_status.clone())
    }

    /// The customer's most recent open order, as a link.
    fn open_order_link(&mut self, c: &CustomerFacts) -> Option<LinkRef> {
        let order = c
            .orders
            .iter()
            .filter(|o| o.open)
            .max_by_key(|o| (o.created_at, o.id))?;
        self.order_date = order.created_at;
        Some(LinkRef::Order(OrderRef::Existing(order.id)))
    }

    /// The link of an existing customer's task: the open order, else the customer (S13).
    fn existing_link(&mut self, c: &CustomerFacts) -> LinkRef {
        match self.open_order_link(c) {
            Some(link) => link,
            None => {
                self.scenario(Scenario::S13);
                LinkRef::Customer(CustomerRef::Existing(c.id))
            }
        }
    }

    // --- creates ---

    fn ensure_customer(&mut self, number: &PhoneNumber, manager: Option<ManagerId>) {
        self.actions.push(Action::EnsureCustomer(NewCustomer {
            external_id: format!(
                "{EXTERNAL_ID_PREFIX}{}",
                number.e164().trim_start_matches('+')
            ),
            phones: vec![number.clone()],
            manager_id: manager,
            source: self.event.utm.clone(),
            ga_client_id: self.event.ga_client_id.clone(),
        }));
    }

    /// Creates the order when wanted and returns where the call's tasks hang.
    fn maybe_order(
        &mut self,
        number: &PhoneNumber,
        customer: CustomerRef,
        manager: Option<ManagerId>,
        wanted: bool,
    ) -> LinkRef {
        if !wanted {
            self.scenario(Scenario::S13);
            return LinkRef::Customer(customer);
        }
        self.order_date = Some(self.call_time());
        self.actions.push(Action::CreateOrder(OrderDraft {
            external_id: format!("{EXTERNAL_ID_PREFIX}{}", self.event.call_id),
            customer,
            manager_id: manager,
            status: self.order_status(),
            phone: number.clone(),
            source: self.event.utm.clone(),
            ga_client_id: self.event.ga_client_id.clone(),
        }));
        LinkRef::Order(OrderRef::Created)
    }

    /// The closed task on whoever talked; when the talker is unknown, on the owner, else
    /// the senior manager, so the talk is never lost.
    fn closed_task(&mut self, link: LinkRef, owner: Option<ManagerId>) {
        let Some(performer) = self
            .facts
            .answered_by
            .or(owner)
            .or(self.cfg.senior_manager_id)
        else {
            self.note("no manager for the closed task: set crm.senior_manager_id");
            return;
        };
        if self.facts.answered_by.is_none() {
            self.note("the answering manager is unknown");
        }
        let phone = self.phone_text();
        let text = match self.rule_text() {
            Some(t) => fill(t, &[("phone", &phone)]),
            None => fill(&self.cfg.texts.closed_call, &[("phone", &phone)]),
        };
        self.actions.push(Action::CreateTask {
            purpose: TaskPurpose::ClosedCall,
            task: TaskDraft {
                text,
                commentary: Some(self.commentary(None)),
                datetime: self.call_time(),
                performer_id: performer,
                complete: true,
                link,
                phone: self.client.cloned(),
            },
        });
    }

    /// S7: another manager talked to the owner's customer. Not when the owner talked on
    /// another leg of this very call (a transfer from the owner, S10).
    fn notify_owner(&mut self, owner: Option<ManagerId>, link: LinkRef) {
        let (Some(owner), Some(talker)) = (owner, self.facts.answered_by) else {
            return;
        };
        if owner == talker || self.facts.other_legs.talkers.contains(&owner) {
            return;
        }
        self.scenario(Scenario::S7);
        let phone = self.phone_text();
        let manager = self
            .facts
            .answered_by_name
            .clone()
            .unwrap_or_else(|| format!("manager #{talker}"));
        self.actions.push(Action::CreateTask {
            purpose: TaskPurpose::NotifyOwner,
            task: TaskDraft {
                text: fill(
                    &self.cfg.texts.notify_owner,
                    &[("phone", &phone), ("manager", &manager)],
                ),
                commentary: Some(self.commentary(None)),
                datetime: self.facts.now,
                performer_id: owner,
                complete: false,
                link,
                phone: self.client.cloned(),
            },
        });
    }

    // --- scenarios ---

    /// S1 (new number), S2 (open order), S3 (all orders closed), S7, S10, S14 (close).
    fn incoming_answered(&mut self) {
        let Some(number) = self.client else { return };
        if self.facts.other_legs.answered {
            self.scenario(Scenario::S10);
        }
        let owner = self.customer.and_then(|c| c.manager_id);
        let link = match self.customer {
            None => {
                self.scenario(Scenario::S1);
                let responsible = self.rule_assignee().or(self.facts.answered_by);
                self.ensure_customer(number, responsible);
                let by_config = self.cfg.create_on_incoming == CreateOnIncoming::CustomerAndOrder;
                self.maybe_order(
                    number,
                    CustomerRef::Created,
                    responsible,
                    self.wants_order(by_config),
                )
            }
            Some(c) => match self.open_order_link(c) {
                Some(link) => {
                    self.scenario(Scenario::S2);
                    link
                }
                None => {
                    self.scenario(Scenario::S3);
                    let responsible = self.rule_assignee().or(owner).or(self.facts.answered_by);
                    let by_config =
                        self.cfg.create_on_incoming == CreateOnIncoming::CustomerAndOrder;
                    self.maybe_order(
                        number,
                        CustomerRef::Existing(c.id),
                        responsible,
                        self.wants_order(by_config),
                    )
                }
            },
        };
        self.closed_task(link, owner);
        self.notify_owner(owner, link);
        self.complete_callback();
    }

    /// S14: an earlier leg of this same call left a call-back task; the call got through.
    fn complete_callback(&mut self) {
        let Some(cb) = &self.facts.open_callback else {
            return;
        };
        if cb.last_call_id != self.event.call_id {
            return;
        }
        self.scenario(Scenario::S14);
        let talker = self
            .facts
            .answered_by_name
            .clone()
            .or(self.facts.answered_by.map(|m| format!("manager #{m}")))
            .unwrap_or_else(|| "a manager".to_owned());
        self.actions.push(Action::CompleteCallbackTask {
            task_id: cb.task_id,
            commentary: self.commentary(Some(format!(
                "Answered by {talker} on another leg of the call"
            ))),
        });
    }

    /// S5 (no owner → senior manager), S6 (owner), S14 (one task per caller and window;
    /// not when another leg was answered). Failed calls (the PBX could not put the client
    /// through) count as missed here: the client still waits for a call back.
    fn incoming_missed(&mut self) {
        if self.facts.other_legs.answered {
            self.scenario(Scenario::S14);
            self.note("a missed leg of an answered call");
            // The answered leg uploads the call; a "no answer" record would contradict it.
            self.upload = false;
            return;
        }
        let Some(number) = self.client else { return };
        let owner = self.customer.and_then(|c| c.manager_id);
        let performer = match owner {
            Some(owner) => {
                self.scenario(Scenario::S6);
                Some(owner)
            }
            None => {
                self.scenario(Scenario::S5);
                self.rule_assignee().or(self.cfg.senior_manager_id)
            }
        };
        let Some(performer) = performer else {
            self.note("no manager for the call-back task: set crm.senior_manager_id");
            return;
        };
        let link = match self.customer {
            Some(c) => self.existing_link(c),
            None => LinkRef::None,
        };
        let window = Duration::minutes(i64::from(self.cfg.callback_window_min));
        let previous = self
            .facts
            .open_callback
            .as_ref()
            .filter(|cb| self.call_time() - cb.last_missed_at <= window);
        let count = match previous {
            // Another unanswered leg of a call already counted is not a new miss.
            Some(cb) if cb.last_call_id == self.event.call_id => cb.count,
            Some(cb) => cb.count.saturating_add(1),
            None => 1,
        };
        if previous.is_some() {
            self.scenario(Scenario::S14);
        }
        let phone = self.phone_text();
        let count_text = count.to_string();
        let vars = [("phone", phone.as_str()), ("count", count_text.as_str())];
        let text = match self.rule_text() {
            Some(t) => fill(t, &vars),
            None => fill(&self.cfg.texts.callback, &vars),
        };
        let last = format!(
            "Missed calls: {count}, last at {}",
            self.call_time().format("%Y-%m-%d %H:%M")
        );
        let task = TaskDraft {
            text,
            commentary: Some(self.commentary(Some(last))),
            datetime: self.facts.now,
            performer_id: performer,
            complete: false,
            link,
            phone: Some(number.clone()),
        };
        self.actions.push(Action::UpsertCallbackTask {
            existing: previous.map(|cb| cb.task_id),
            count,
            task,
        });
    }

    /// S4: a known customer gets the closed task; a new number gets what
    /// `crm.create_on_outgoing` says (nothing by default).
    fn outgoing_answered(&mut self) {
        let Some(number) = self.client else { return };
        self.scenario(Scenario::S4);
        let owner = self.customer.and_then(|c| c.manager_id);
        let link = match self.customer {
            Some(c) => self.existing_link(c),
            None => {
                let (customer, by_config) = match self.cfg.create_on_outgoing {
                    CreateOnOutgoing::Nothing => (false, false),
                    CreateOnOutgoing::Customer => (true, false),
                    CreateOnOutgoing::CustomerAndOrder => (true, true),
                };
                if !customer {
                    self.note("outgoing call to a number not in the CRM: nothing created");
                    return;
                }
                let responsible = self.rule_assignee().or(self.facts.answered_by);
                self.ensure_customer(number, responsible);
                self.maybe_order(
                    number,
                    CustomerRef::Created,
                    responsible,
                    self.wants_order(by_config),
                )
            }
        };
        self.closed_task(link, owner);
        self.notify_owner(owner, link);
    }

    /// S8: an incoming call to a number that is none of ours, whatever else happened. (The
    /// plan asks every time; the worker makes the task once a day per tracking number.)
    fn check_tracking_number(&mut self) {
        let Some(tracking) = &self.event.tracking_number else {
            return;
        };
        if self.cfg.own_numbers.contains(tracking) {
            return;
        }
        self.scenario(Scenario::S8);
        let Some(senior) = self.cfg.senior_manager_id else {
            self.note("unknown tracking number and no crm.senior_manager_id to tell");
            return;
        };
        let text = fill(
            &self.cfg.texts.check_tracking,
            &[("number", tracking.e164())],
        );
        self.actions.push(Action::CreateTask {
            purpose: TaskPurpose::CheckTracking,
            task: TaskDraft {
                text,
                commentary: Some(self.commentary(None)),
                datetime: self.facts.now,
                performer_id: senior,
                complete: false,
                link: LinkRef::None,
                phone: None,
            },
        });
    }

    /// S12: every finished call with a client number, linked by the CRM through the
    /// phone. The `externalId` is the call id; a second talker of the same call (S10) gets
    /// `<call id>:<leg>` so both talks are kept.
    fn upload_call(&mut self) {
        if !self.upload {
            return;
        }
        let Ok(number) = &self.event.client else {
            return;
        };
        self.scenario(Scenario::S12);
        let e = self.event;
        let answered = e.outcome() == CallOutcome::Answered;
        let external_id = match e.leg() {
            Some(leg) if answered && self.facts.other_legs.answered => {
                format!("{}:{leg}", e.call_id)
            }
            _ => e.call_id.clone(),
        };
        self.actions.push(Action::UploadCall(CallRecord {
            date: self.call_time(),
            incoming: e.is_incoming(),
            phone: number.e164().to_owned(),
            user_id: self.facts.answered_by,
            code: None,
            result: e.call_result(),
            duration: e.duration.unwrap_or(0),
            duration_waiting: e.waittime.unwrap_or(0),
            external_id,
            record_url: e.recording.as_ref().map(|r| r.url.clone()),
            source: e.utm.clone(),
            external_phone: e.tracking_number.as_ref().map(|t| t.e164().to_owned()),
            site: Some(self.site.clone()),
            ga_client_id: e.ga_client_id.clone(),
        }));
        if answered && self.cfg.popup_after_call {
            self.popup(CallEventType::Hangup, self.facts.answered_by);
        }
    }

    /// Start/answer events: the pop-up card to the owner (start) or the manager who picked
    /// up (answer), S1.
    fn popup_in_call(&mut self) {
        let user = match self.event.moment {
            EventMoment::Start => self.customer.and_then(|c| c.manager_id),
            _ => self.facts.answered_by,
        };
        let event_type = match self.event.direction() {
            Direction::Incoming => CallEventType::In,
            Direction::Outgoing => CallEventType::Out,
        };
        self.popup(event_type, user);
    }

    fn popup(&mut self, event_type: CallEventType, user: Option<ManagerId>) {
        let (Some(number), Some(user)) = (self.client, user) else {
            return;
        };
        let hangup_status = (event_type == CallEventType::Hangup).then(|| {
            match self.event.call_result() {
                CallResult::Answered => "answered",
                CallResult::Busy => "busy",
                CallResult::Failed | CallResult::NotAllowed => "failed",
                CallResult::NoAnswer | CallResult::Unknown => "no answered",
            }
            .to_owned()
        });
        self.actions.push(Action::PopUp(CallEventNotice {
            phone: number.clone(),
            event_type,
            codes: Vec::new(),
            user_ids: vec![user],
            site: Some(self.site.clone()),
            external_phone: self
                .event
                .tracking_number
                .as_ref()
                .map(|t| t.e164().to_owned()),
            call_external_id: Some(self.event.call_id.clone()),
            hangup_status,
        }));
    }

    fn finish(self) -> Plan {
        let e = self.event;
        let log = e.moment.is_finished().then(|| CallLogEntry {
            call_id: e.call_id.clone(),
            date: self.call_time(),
            client_phone: e.client.as_ref().ok().cloned(),
            client_raw: e.client.as_ref().err().and(e.client_raw.clone()),
            incoming: e.is_incoming(),
            site: Some(self.site.clone()),
            external_number: e
                .tracking_number
                .as_ref()
                .map(|t| t.e164().to_owned())
                .or_else(|| e.is_incoming().then(|| e.dst_raw.clone()).flatten()),
            manager_id: self.facts.answered_by,
            result: e.outcome().as_str().to_owned(),
            disposition_raw: e.disposition.as_ref().map(|d| d.raw.clone()),
            ambiguous_customer: self.customer.is_some() && self.facts.customers.len() > 1,
            order_date: self.order_date.map(|d| d.format("%Y-%m-%d").to_string()),
            note: (!self.notes.is_empty()).then(|| self.notes.join("; ")),
        });
        Plan {
            site: self.site,
            actions: self.actions,
            scenarios: self.scenarios,
            log,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The seed's cast: managers Tatiana and Alina and the senior manager; Alina's and
    //! Tatiana's customers; a new caller. Each scenario test asserts the exact action list.

    use chrono::NaiveDate;
    use serde_json::{Value, json};

    use super::*;
    use crate::domain::{call::testing, manager::Manager};

    const SENIOR: ManagerId = ManagerId(1);
    const TATIANA: ManagerId = ManagerId(7);
    const ALINA: ManagerId = ManagerId(8);
    const TATIANA_STAFF: i64 = 4711;
    const ALINA_STAFF: i64 = 512;

    const CALL_ID: &str = "ua1_-1718037213.2974122";
    const NEW_CALLER: &str = "+380981234567";
    const ALINAS_CUSTOMER: &str = "+380671112233";
    const TATIANAS_CUSTOMER: &str = "+380501112233";
    const SHOP_LINE: &str = "+380441112233";
    const TATIANAS_MOBILE: &str = "+380937654321";
    const UNKNOWN_LINE: &str = "+380442223344";
    const REC: &str = "https://app.ringostat.com/recordings/ua1_1718037213.ogg";
    const GA: &str = "1169999034.1555555510";

    fn n(s: &str) -> PhoneNumber {
        PhoneNumber::from_e164(s).unwrap()
    }

    fn at(h: u32, mi: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2024, 7, 31)
            .unwrap()
            .and_hms_opt(h, mi, 0)
            .unwrap()
    }

    /// The call started at 14:59:35; the worker plans at 15:05.
    fn call_time() -> NaiveDateTime {
        at(14, 59) + Duration::seconds(35)
    }

    fn now() -> NaiveDateTime {
        at(15, 5)
    }

    fn cfg() -> PlannerConfig {
        PlannerConfig {
            senior_manager_id: Some(SENIOR),
            default_site: "shop".to_owned(),
            own_numbers: [SHOP_LINE, TATIANAS_MOBILE].into_iter().map(n).collect(),
            ..PlannerConfig::default()
        }
    }

    /// An after-call webhook: the new caller rang the shop line, Tatiana answered, with a
    /// recording. `over` replaces fields (`null` removes one).
    fn event(over: Value, hint: Option<&str>) -> CallEvent {
        let mut base = json!({
            "uniqueid": CALL_ID,
            "calldate": "2024-07-31 14:59:35",
            "caller": NEW_CALLER.trim_start_matches('+'),
            "dst": SHOP_LINE.trim_start_matches('+'),
            "call_type": "in",
            "disposition": "ANSWERED",
            "billsec": 95,
            "waittime": "5",
            "has_recording": "1",
            "recording": REC,
            "employee_number": TATIANA_STAFF,
            "connected_with": "shop_tatiana",
            "utm_source": "google",
            "utm_medium": "cpc",
            "client_id": GA,
        });
        if let (Value::Object(b), Value::Object(o)) = (&mut base, over) {
            for (k, v) in o {
                if v.is_null() {
                    b.remove(&k);
                } else {
                    b.insert(k, v);
                }
            }
        }
        testing::event(base, hint)
    }

    /// A missed call: nobody answered, no talk, no recording.
    fn missed(caller: &str, over: Value) -> CallEvent {
        let mut e = json!({
            "caller": caller.trim_start_matches('+'),
            "disposition": "NO ANSWER",
            "billsec": 0,
            "waittime": 30,
            "has_recording": "0",
            "employee_number": -1,
            "connected_with": null,
        });
        if let (Value::Object(b), Value::Object(o)) = (&mut e, over) {
            b.extend(o);
        }
        event(e, None)
    }

    fn answered_by(m: ManagerId, name: &str) -> CrmFacts {
        CrmFacts {
            site: Some("shop".to_owned()),
            answered_by: Some(m),
            answered_by_name: Some(name.to_owned()),
            ..CrmFacts::new_number(now())
        }
    }

    fn nobody() -> CrmFacts {
        CrmFacts {
            site: Some("shop".to_owned()),
            ..CrmFacts::new_number(now())
        }
    }

    fn customer(id: u64, owner: ManagerId, orders: Vec<OrderFacts>) -> CustomerFacts {
        CustomerFacts {
            id: CustomerId(id),
            manager_id: Some(owner),
            created_at: Some(at(9, 0) - Duration::days(30)),
            last_active_at: Some(at(9, 0) - Duration::days(7)),
            orders,
        }
    }

    fn order(id: u64, open: bool) -> OrderFacts {
        OrderFacts {
            id: OrderId(id),
            open,
            manager_id: None,
            created_at: Some(at(10, 0) - Duration::days(7)),
        }
    }

    fn with_customer(mut f: CrmFacts, c: CustomerFacts) -> CrmFacts {
        f.customers = vec![c];
        f
    }

    // --- expected actions ---

    fn commentary(phone: &str, extra: Option<&str>, recording: bool) -> Option<String> {
        let mut lines = vec![format!("Phone: {phone}")];
        lines.extend(extra.map(str::to_owned));
        if recording {
            lines.push(format!("Recording: {REC}"));
        }
        Some(lines.join("\n"))
    }

    fn new_customer(phone: &str, manager: ManagerId) -> Action {
        Action::EnsureCustomer(NewCustomer {
            external_id: format!("callgate-{}", phone.trim_start_matches('+')),
            phones: vec![n(phone)],
            manager_id: Some(manager),
            source: UtmSource {
                source: Some("google".to_owned()),
                medium: Some("cpc".to_owned()),
                ..UtmSource::default()
            },
            ga_client_id: Some(GA.to_owned()),
        })
    }

    fn new_order(phone: &str, customer: CustomerRef, manager: ManagerId, status: &str) -> Action {
        Action::CreateOrder(OrderDraft {
            external_id: format!("callgate-{CALL_ID}"),
            customer,
            manager_id: Some(manager),
            status: status.to_owned(),
            phone: n(phone),
            source: UtmSource {
                source: Some("google".to_owned()),
                medium: Some("cpc".to_owned()),
                ..UtmSource::default()
            },
            ga_client_id: Some(GA.to_owned()),
        })
    }

    fn closed_task(phone: &str, performer: ManagerId, link: LinkRef) -> Action {
        closed_task_text(&format!("Call with {phone}"), phone, performer, link)
    }

    fn closed_task_text(text: &str, phone: &str, performer: ManagerId, link: LinkRef) -> Action {
        Action::CreateTask {
            purpose: TaskPurpose::ClosedCall,
            task: TaskDraft {
                text: text.to_owned(),
                commentary: commentary(phone, None, true),
                datetime: call_time(),
                performer_id: performer,
                complete: true,
                link,
                phone: Some(n(phone)),
            },
        }
    }

    fn upload(phone: &str, user: Option<ManagerId>, result: CallResult) -> Action {
        let answered = result == CallResult::Answered;
        Action::UploadCall(CallRecord {
            date: call_time(),
            incoming: true,
            phone: phone.to_owned(),
            user_id: user,
            code: None,
            result,
            duration: if answered { 100 } else { 30 },
            duration_waiting: if answered { 5 } else { 30 },
            external_id: CALL_ID.to_owned(),
            record_url: answered.then(|| REC.to_owned()),
            source: UtmSource {
                source: Some("google".to_owned()),
                medium: Some("cpc".to_owned()),
                ..UtmSource::default()
            },
            external_phone: Some(SHOP_LINE.to_owned()),
            site: Some("shop".to_owned()),
            ga_client_id: Some(GA.to_owned()),
        })
    }

    fn callback(
        phone: &str,
        performer: ManagerId,
        link: LinkRef,
        existing: Option<TaskId>,
        count: u32,
        recording: bool,
    ) -> Action {
        let last = format!("Missed calls: {count}, last at 2024-07-31 14:59");
        Action::UpsertCallbackTask {
            existing,
            count,
            task: TaskDraft {
                text: format!("Call back {phone} (missed calls: {count})"),
                commentary: commentary(phone, Some(&last), recording),
                datetime: now(),
                performer_id: performer,
                complete: false,
                link,
                phone: Some(n(phone)),
            },
        }
    }

    fn assert_keys_unique(p: &Plan) {
        let keys = p.keys();
        let unique: HashSet<_> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len(), "{keys:?}");
    }

    // --- S1–S14 ---

    #[test]
    fn s1_new_caller_answered_by_tatiana_gets_customer_order_and_closed_task() {
        let facts = answered_by(TATIANA, "Tatiana");

        let pickup = event(
            json!({"disposition": null, "billsec": null, "waittime": null}),
            Some("answer"),
        );
        let p = plan(&pickup, &facts, &cfg(), None);
        assert_eq!(
            p.actions,
            vec![Action::PopUp(CallEventNotice {
                phone: n(NEW_CALLER),
                event_type: CallEventType::In,
                codes: vec![],
                user_ids: vec![TATIANA],
                site: Some("shop".to_owned()),
                external_phone: Some(SHOP_LINE.to_owned()),
                call_external_id: Some(CALL_ID.to_owned()),
                hangup_status: None,
            })]
        );
        assert_eq!(p.log, None, "a pick-up is not a call yet");

        let p = plan(&event(json!({}), None), &facts, &cfg(), None);
        assert_eq!(
            p.actions,
            vec![
                new_customer(NEW_CALLER, TATIANA),
                new_order(NEW_CALLER, CustomerRef::Created, TATIANA, "new"),
                closed_task(NEW_CALLER, TATIANA, LinkRef::Order(OrderRef::Created)),
                upload(NEW_CALLER, Some(TATIANA), CallResult::Answered),
            ]
        );
        assert_eq!(p.scenarios, vec![Scenario::S1, Scenario::S12]);
        assert_eq!(p.keys(), ["customer", "order", "task:closed:7", "upload"]);
        let log = p.log.unwrap();
        assert_eq!(
            (
                log.manager_id,
                log.result.as_str(),
                log.order_date.as_deref()
            ),
            (Some(TATIANA), "answered", Some("2024-07-31"))
        );
    }

    #[test]
    fn s2_alinas_customer_with_an_open_order_answered_by_alina_gets_only_a_closed_task() {
        let facts = with_customer(
            answered_by(ALINA, "Alina"),
            customer(201, ALINA, vec![order(300, false), order(301, true)]),
        );
        let e = event(
            json!({"caller": ALINAS_CUSTOMER, "employee_number": ALINA_STAFF, "connected_with": "shop_alina"}),
            None,
        );
        let p = plan(&e, &facts, &cfg(), None);
        assert_eq!(
            p.actions,
            vec![
                closed_task(
                    ALINAS_CUSTOMER,
                    ALINA,
                    LinkRef::Order(OrderRef::Existing(OrderId(301)))
                ),
                upload(ALINAS_CUSTOMER, Some(ALINA), CallResult::Answered),
            ]
        );
        assert_eq!(p.scenarios, vec![Scenario::S2, Scenario::S12]);
    }

    #[test]
    fn s3_alinas_customer_with_all_orders_closed_gets_a_new_order_for_alina() {
        let facts = with_customer(
            answered_by(ALINA, "Alina"),
            customer(201, ALINA, vec![order(300, false)]),
        );
        let e = event(
            json!({"caller": ALINAS_CUSTOMER, "employee_number": ALINA_STAFF}),
            None,
        );
        let p = plan(&e, &facts, &cfg(), None);
        assert_eq!(
            p.actions,
            vec![
                new_order(
                    ALINAS_CUSTOMER,
                    CustomerRef::Existing(CustomerId(201)),
                    ALINA,
                    "new"
                ),
                closed_task(ALINAS_CUSTOMER, ALINA, LinkRef::Order(OrderRef::Created)),
                upload(ALINAS_CUSTOMER, Some(ALINA), CallResult::Answered),
            ]
        );
        assert_eq!(p.scenarios, vec![Scenario::S3, Scenario::S12]);
    }

    #[test]
    fn s3_when_tatiana_answers_the_new_order_still_goes_to_alina_who_worked_with_the_client() {
        let facts = with_customer(
            answered_by(TATIANA, "Tatiana"),
            customer(201, ALINA, vec![]),
        );
        let e = event(json!({"caller": ALINAS_CUSTOMER}), None);
        let p = plan(&e, &facts, &cfg(), None);
        let link = LinkRef::Order(OrderRef::Created);
        assert_eq!(
            p.actions[0],
            new_order(
                ALINAS_CUSTOMER,
                CustomerRef::Existing(CustomerId(201)),
                ALINA,
                "new"
            )
        );
        assert_eq!(p.actions[1], closed_task(ALINAS_CUSTOMER, TATIANA, link));
        assert_eq!(
            p.keys(),
            ["order", "task:closed:7", "task:notify-owner", "upload"]
        );
    }

    #[test]
    fn s4_tatiana_calling_a_conference_contact_not_in_the_crm_creates_nothing_then_a_task_once_known()
     {
        let out = |over: Value| {
            let mut o = json!({"call_type": "out", "caller": "shop_tatiana", "dst": NEW_CALLER});
            if let (Value::Object(b), Value::Object(x)) = (&mut o, over) {
                b.extend(x);
            }
            event(o, None)
        };
        let expected_upload = |user| {
            let Action::UploadCall(mut r) = upload(NEW_CALLER, user, CallResult::Answered) else {
                unreachable!()
            };
            r.incoming = false;
            r.external_phone = None;
            Action::UploadCall(r)
        };

        let p = plan(
            &out(json!({})),
            &answered_by(TATIANA, "Tatiana"),
            &cfg(),
            None,
        );
        assert_eq!(p.actions, vec![expected_upload(Some(TATIANA))]);
        assert_eq!(p.scenarios, vec![Scenario::S4, Scenario::S12]);
        assert!(p.log.unwrap().note.unwrap().contains("nothing created"));

        // She created the customer and the order by hand; the next call gets the task.
        let known = with_customer(
            answered_by(TATIANA, "Tatiana"),
            customer(202, TATIANA, vec![order(310, true)]),
        );
        let p = plan(&out(json!({})), &known, &cfg(), None);
        assert_eq!(
            p.actions,
            vec![
                closed_task(
                    NEW_CALLER,
                    TATIANA,
                    LinkRef::Order(OrderRef::Existing(OrderId(310)))
                ),
                expected_upload(Some(TATIANA)),
            ]
        );
    }

    #[test]
    fn s4_create_on_outgoing_customer_and_order_creates_both_for_tatiana() {
        let cfg = PlannerConfig {
            create_on_outgoing: CreateOnOutgoing::CustomerAndOrder,
            ..cfg()
        };
        let e = event(
            json!({"call_type": "out", "caller": "shop_tatiana", "dst": NEW_CALLER}),
            None,
        );
        let p = plan(&e, &answered_by(TATIANA, "Tatiana"), &cfg, None);
        assert_eq!(p.keys(), ["customer", "order", "task:closed:7", "upload"]);
        assert_eq!(p.actions[0], new_customer(NEW_CALLER, TATIANA));
        assert_eq!(
            p.actions[2],
            closed_task(NEW_CALLER, TATIANA, LinkRef::Order(OrderRef::Created))
        );
        // An unanswered outgoing call creates nothing whatever the setting.
        let e = event(
            json!({"call_type": "out", "dst": NEW_CALLER, "disposition": "NO ANSWER"}),
            None,
        );
        assert_eq!(
            plan(&e, &answered_by(TATIANA, "Tatiana"), &cfg, None).keys(),
            ["upload"]
        );
    }

    #[test]
    fn s5_weekend_missed_call_from_a_new_number_gives_the_senior_manager_a_call_back_task() {
        let p = plan(&missed(NEW_CALLER, json!({})), &nobody(), &cfg(), None);
        assert_eq!(
            p.actions,
            vec![
                callback(NEW_CALLER, SENIOR, LinkRef::None, None, 1, false),
                upload(NEW_CALLER, None, CallResult::NoAnswer),
            ]
        );
        assert_eq!(p.scenarios, vec![Scenario::S5, Scenario::S12]);
        assert_eq!(p.log.unwrap().result, "missed");
    }

    #[test]
    fn s6_voicemail_from_tatianas_customer_gives_tatiana_a_call_back_task_with_the_message() {
        let facts = with_customer(nobody(), customer(203, TATIANA, vec![]));
        let e = missed(
            TATIANAS_CUSTOMER,
            json!({"disposition": "VOICEMAIL", "has_recording": "1", "recording": REC}),
        );
        let p = plan(&e, &facts, &cfg(), None);
        let Action::UploadCall(mut record) = upload(TATIANAS_CUSTOMER, None, CallResult::NoAnswer)
        else {
            unreachable!()
        };
        record.record_url = Some(REC.to_owned());
        assert_eq!(
            p.actions,
            vec![
                callback(
                    TATIANAS_CUSTOMER,
                    TATIANA,
                    LinkRef::Customer(CustomerRef::Existing(CustomerId(203))),
                    None,
                    1,
                    true
                ),
                Action::UploadCall(record),
            ]
        );
        assert_eq!(
            p.scenarios,
            vec![Scenario::S6, Scenario::S13, Scenario::S12]
        );
    }

    #[test]
    fn s7_alinas_customer_answered_by_tatiana_while_alina_travels_notifies_alina() {
        let facts = with_customer(
            answered_by(TATIANA, "Tatiana"),
            customer(201, ALINA, vec![order(301, true)]),
        );
        let p = plan(
            &event(json!({"caller": ALINAS_CUSTOMER}), None),
            &facts,
            &cfg(),
            None,
        );
        let link = LinkRef::Order(OrderRef::Existing(OrderId(301)));
        assert_eq!(
            p.actions,
            vec![
                closed_task(ALINAS_CUSTOMER, TATIANA, link),
                Action::CreateTask {
                    purpose: TaskPurpose::NotifyOwner,
                    task: TaskDraft {
                        text: format!("Your customer {ALINAS_CUSTOMER} talked to Tatiana"),
                        commentary: commentary(ALINAS_CUSTOMER, None, true),
                        datetime: now(),
                        performer_id: ALINA,
                        complete: false,
                        link,
                        phone: Some(n(ALINAS_CUSTOMER)),
                    },
                },
                upload(ALINAS_CUSTOMER, Some(TATIANA), CallResult::Answered),
            ]
        );
        assert_eq!(p.scenarios, vec![Scenario::S2, Scenario::S7, Scenario::S12]);
    }

    #[test]
    fn s8_call_to_a_tracking_number_nobody_configured_asks_the_senior_manager_to_check_it() {
        let e = event(json!({"dst": UNKNOWN_LINE}), None);
        let p = plan(&e, &answered_by(TATIANA, "Tatiana"), &cfg(), None);
        let check = Action::CreateTask {
            purpose: TaskPurpose::CheckTracking,
            task: TaskDraft {
                text: format!(
                    "Check the number {UNKNOWN_LINE}: calls to it map to no site or manager"
                ),
                commentary: commentary(NEW_CALLER, None, true),
                datetime: now(),
                performer_id: SENIOR,
                complete: false,
                link: LinkRef::None,
                phone: None,
            },
        };
        let Action::UploadCall(mut record) =
            upload(NEW_CALLER, Some(TATIANA), CallResult::Answered)
        else {
            unreachable!()
        };
        record.external_phone = Some(UNKNOWN_LINE.to_owned());
        assert_eq!(
            p.actions,
            vec![
                new_customer(NEW_CALLER, TATIANA),
                new_order(NEW_CALLER, CustomerRef::Created, TATIANA, "new"),
                closed_task(NEW_CALLER, TATIANA, LinkRef::Order(OrderRef::Created)),
                check,
                Action::UploadCall(record),
            ]
        );
        assert_eq!(p.scenarios, vec![Scenario::S1, Scenario::S8, Scenario::S12]);
    }

    #[test]
    fn s9_tatiana_calling_alina_internally_is_only_logged() {
        let dir = ManagerDirectory::new(vec![
            Manager {
                id: TATIANA,
                ringostat_staff_id: Some(TATIANA_STAFF),
                sip: vec!["shop_tatiana".to_owned()],
                code: Some("101".to_owned()),
                phone: Some(n(TATIANAS_MOBILE)),
            },
            Manager {
                id: ALINA,
                ringostat_staff_id: Some(ALINA_STAFF),
                sip: vec!["shop_alina".to_owned()],
                code: Some("102".to_owned()),
                phone: None,
            },
        ])
        .unwrap();
        let e = event(
            json!({"caller": "\"Tatiana\" <shop_tatiana>", "dst": "102",
                   "employee_number": ALINA_STAFF, "connected_with": "shop_alina"}),
            None,
        );
        let parties = resolve_parties(&e, &dir);
        assert_eq!(
            parties,
            Parties {
                answered_by: Some(ALINA),
                client_is_manager: true
            }
        );
        let facts = CrmFacts {
            answered_by: parties.answered_by,
            client_is_manager: parties.client_is_manager,
            ..nobody()
        };
        let p = plan(&e, &facts, &cfg(), None);
        assert_eq!(p.actions, vec![]);
        assert_eq!(p.scenarios, vec![Scenario::S9]);
        let log = p.log.unwrap();
        assert_eq!(log.note.as_deref(), Some("internal call between managers"));
        assert_eq!(
            log.client_raw.as_deref(),
            Some("\"Tatiana\" <shop_tatiana>")
        );

        // From her mobile phone, too.
        let mobile = event(json!({"caller": TATIANAS_MOBILE}), None);
        assert!(resolve_parties(&mobile, &dir).client_is_manager);
        // A real customer answered by Alina through connected_with only.
        let customer_call = event(
            json!({"caller": NEW_CALLER, "employee_number": -1, "connected_with": "SHOP_ALINA"}),
            None,
        );
        assert_eq!(
            resolve_parties(&customer_call, &dir),
            Parties {
                answered_by: Some(ALINA),
                client_is_manager: false
            }
        );
    }

    #[test]
    fn s10_call_transferred_from_tatiana_to_alina_records_a_closed_task_for_each() {
        // Leg 1: Tatiana talked to the new caller (S1), then transferred.
        let leg1 = event(json!({}), None);
        let p1 = plan(&leg1, &answered_by(TATIANA, "Tatiana"), &cfg(), None);
        assert_eq!(p1.keys(), ["customer", "order", "task:closed:7", "upload"]);

        // Leg 2: Alina; the worker now finds the customer and order leg 1 made.
        let leg2 = event(
            json!({"employee_number": ALINA_STAFF, "connected_with": "shop_alina"}),
            None,
        );
        assert_ne!(leg1.dedupe_key(), leg2.dedupe_key());
        let mut created = customer(204, TATIANA, vec![order(320, true)]);
        created.last_active_at = Some(now());
        let facts = CrmFacts {
            other_legs: OtherLegs {
                answered: true,
                talkers: vec![TATIANA],
            },
            ..with_customer(answered_by(ALINA, "Alina"), created)
        };
        let p2 = plan(&leg2, &facts, &cfg(), None);
        let Action::UploadCall(mut record) = upload(NEW_CALLER, Some(ALINA), CallResult::Answered)
        else {
            unreachable!()
        };
        record.external_id = format!("{CALL_ID}:staff{ALINA_STAFF}");
        assert_eq!(
            p2.actions,
            vec![
                closed_task(
                    NEW_CALLER,
                    ALINA,
                    LinkRef::Order(OrderRef::Existing(OrderId(320)))
                ),
                Action::UploadCall(record),
            ],
            "no 'your customer talked to Alina' for Tatiana: she handed the call over"
        );
        assert_eq!(
            p2.scenarios,
            vec![Scenario::S10, Scenario::S2, Scenario::S12]
        );
    }

    #[test]
    fn s11_feedback_line_rule_creates_the_order_cancelled_with_its_task_text() {
        let rule = RuleActions {
            name: "feedback line".to_owned(),
            order_status: Some("cancel".to_owned()),
            task_text: Some("Feedback call from {phone}".to_owned()),
            ..RuleActions::default()
        };
        let p = plan(
            &event(json!({}), None),
            &answered_by(TATIANA, "Tatiana"),
            &cfg(),
            Some(&rule),
        );
        assert_eq!(
            p.actions,
            vec![
                new_customer(NEW_CALLER, TATIANA),
                new_order(NEW_CALLER, CustomerRef::Created, TATIANA, "cancel"),
                closed_task_text(
                    &format!("Feedback call from {NEW_CALLER}"),
                    NEW_CALLER,
                    TATIANA,
                    LinkRef::Order(OrderRef::Created)
                ),
                upload(NEW_CALLER, Some(TATIANA), CallResult::Answered),
            ]
        );
        assert_eq!(
            p.scenarios,
            vec![Scenario::S11, Scenario::S1, Scenario::S12]
        );
        assert_eq!(
            p.log.unwrap().note.as_deref(),
            Some("rule \"feedback line\"")
        );
    }

    #[test]
    fn s11_rules_can_skip_the_order_assign_the_customer_or_ignore_the_call() {
        let no_order = RuleActions {
            name: "no order, Alina's line".to_owned(),
            create_order: Some(false),
            assign_to: Some(ALINA),
            ..RuleActions::default()
        };
        let p = plan(
            &event(json!({}), None),
            &answered_by(TATIANA, "Tatiana"),
            &cfg(),
            Some(&no_order),
        );
        assert_eq!(
            p.actions,
            vec![
                new_customer(NEW_CALLER, ALINA),
                closed_task(NEW_CALLER, TATIANA, LinkRef::Customer(CustomerRef::Created)),
                upload(NEW_CALLER, Some(TATIANA), CallResult::Answered),
            ]
        );

        let ignore = RuleActions {
            name: "spam".to_owned(),
            ignore: true,
            ..RuleActions::default()
        };
        let p = plan(
            &event(json!({}), None),
            &answered_by(TATIANA, "Tatiana"),
            &cfg(),
            Some(&ignore),
        );
        assert_eq!(p.actions, vec![]);
        assert_eq!(
            p.log.unwrap().note.as_deref(),
            Some("rule \"spam\"; ignored by the rule")
        );
    }

    #[test]
    fn s12_every_finished_call_is_uploaded_even_when_nothing_else_happens() {
        let odd = event(
            json!({"disposition": "IN PROGRESS", "employee_number": -1,
                               "connected_with": null}),
            None,
        );
        let p = plan(&odd, &nobody(), &cfg(), None);
        let Action::UploadCall(mut record) = upload(NEW_CALLER, None, CallResult::Unknown) else {
            unreachable!()
        };
        (record.duration, record.duration_waiting, record.record_url) =
            (100, 5, Some(REC.to_owned()));
        assert_eq!(p.actions, vec![Action::UploadCall(record)]);
        let log = p.log.unwrap();
        assert_eq!(
            (log.result.as_str(), log.disposition_raw.as_deref()),
            ("unknown", Some("IN PROGRESS"))
        );

        let forbidden = event(
            json!({"call_type": "callback", "disposition": "FAILED FORBIDDEN DESTINATION",
                                     "employee_number": -1, "connected_with": null}),
            None,
        );
        let p = plan(&forbidden, &nobody(), &cfg(), None);
        let Some(Action::UploadCall(r)) = p.actions.last() else {
            panic!("no upload: {:?}", p.actions)
        };
        assert_eq!(r.result, CallResult::NotAllowed);
    }

    #[test]
    fn s13_an_existing_customer_without_an_open_order_gets_the_task_on_the_customer() {
        let rule = RuleActions {
            name: "service line".to_owned(),
            create_order: Some(false),
            ..RuleActions::default()
        };
        let facts = with_customer(
            answered_by(ALINA, "Alina"),
            customer(201, ALINA, vec![order(300, false)]),
        );
        let e = event(
            json!({"caller": ALINAS_CUSTOMER, "employee_number": ALINA_STAFF}),
            None,
        );
        let p = plan(&e, &facts, &cfg(), Some(&rule));
        assert_eq!(
            p.actions,
            vec![
                closed_task(
                    ALINAS_CUSTOMER,
                    ALINA,
                    LinkRef::Customer(CustomerRef::Existing(CustomerId(201)))
                ),
                upload(ALINAS_CUSTOMER, Some(ALINA), CallResult::Answered),
            ]
        );
        assert!(p.scenarios.contains(&Scenario::S13));
    }

    #[test]
    fn s14_the_same_number_missing_again_within_the_window_updates_the_one_call_back_task() {
        let earlier = OpenCallback {
            task_id: TaskId(900),
            count: 1,
            last_missed_at: at(14, 20),
            last_call_id: "ua1_-1718035000.1".to_owned(),
        };
        let facts = CrmFacts {
            open_callback: Some(earlier.clone()),
            ..nobody()
        };
        let again = missed(
            NEW_CALLER,
            json!({"has_recording": "1", "recording": REC,
                                             "disposition": "VOICEMAIL"}),
        );
        let p = plan(&again, &facts, &cfg(), None);
        assert_eq!(
            p.actions[0],
            callback(
                NEW_CALLER,
                SENIOR,
                LinkRef::None,
                Some(TaskId(900)),
                2,
                true
            )
        );
        assert_eq!(p.keys(), ["task:callback", "upload"]);
        assert_eq!(
            p.scenarios,
            vec![Scenario::S5, Scenario::S14, Scenario::S12]
        );

        // Another unanswered leg of that same call: same task, same count.
        let same_call = CrmFacts {
            open_callback: Some(OpenCallback {
                last_call_id: CALL_ID.to_owned(),
                last_missed_at: call_time(),
                ..earlier.clone()
            }),
            ..nobody()
        };
        let p = plan(&missed(NEW_CALLER, json!({})), &same_call, &cfg(), None);
        assert_eq!(
            p.actions[0],
            callback(
                NEW_CALLER,
                SENIOR,
                LinkRef::None,
                Some(TaskId(900)),
                1,
                false
            )
        );

        // Outside the window (last miss at 13:30, window 60 min): a fresh task.
        let stale = CrmFacts {
            open_callback: Some(OpenCallback {
                last_missed_at: at(13, 30),
                ..earlier
            }),
            ..nobody()
        };
        let p = plan(&missed(NEW_CALLER, json!({})), &stale, &cfg(), None);
        assert_eq!(
            p.actions[0],
            callback(NEW_CALLER, SENIOR, LinkRef::None, None, 1, false)
        );
    }

    #[test]
    fn s14_a_ring_group_call_answered_on_any_leg_is_not_missed() {
        // Alina's leg rang out, but Tatiana picked up: Alina's leg changes nothing.
        let facts = CrmFacts {
            other_legs: OtherLegs {
                answered: true,
                talkers: vec![TATIANA],
            },
            ..nobody()
        };
        let p = plan(&missed(NEW_CALLER, json!({})), &facts, &cfg(), None);
        assert_eq!(p.actions, vec![]);
        assert_eq!(
            p.log.unwrap().note.as_deref(),
            Some("a missed leg of an answered call")
        );

        // Alina's leg came first and left a call-back task; Tatiana's answered leg closes it.
        let facts = CrmFacts {
            open_callback: Some(OpenCallback {
                task_id: TaskId(901),
                count: 1,
                last_missed_at: call_time(),
                last_call_id: CALL_ID.to_owned(),
            }),
            ..answered_by(TATIANA, "Tatiana")
        };
        let p = plan(&event(json!({}), None), &facts, &cfg(), None);
        assert_eq!(
            p.keys(),
            [
                "customer",
                "order",
                "task:closed:7",
                "task:callback:complete",
                "upload"
            ]
        );
        assert_eq!(
            p.actions[3],
            Action::CompleteCallbackTask {
                task_id: TaskId(901),
                commentary: commentary(
                    NEW_CALLER,
                    Some("Answered by Tatiana on another leg of the call"),
                    true
                )
                .unwrap(),
            }
        );
    }

    // --- Numbers that never become customers, ambiguity, configuration ---

    #[test]
    fn own_numbers_never_become_customers_in_either_direction() {
        let own_line_calls_in = event(json!({"caller": SHOP_LINE}), None);
        let p = plan(
            &own_line_calls_in,
            &answered_by(TATIANA, "Tatiana"),
            &cfg(),
            None,
        );
        assert_eq!(p.keys(), ["upload"]);
        assert_eq!(
            p.log.unwrap().note.as_deref(),
            Some("the shop's own number")
        );

        let cfg = PlannerConfig {
            create_on_outgoing: CreateOnOutgoing::CustomerAndOrder,
            ..cfg()
        };
        let calling_own_line = event(json!({"call_type": "out", "dst": SHOP_LINE}), None);
        let p = plan(
            &calling_own_line,
            &answered_by(TATIANA, "Tatiana"),
            &cfg,
            None,
        );
        assert_eq!(p.keys(), ["upload"]);
        let own_missed = missed(SHOP_LINE, json!({}));
        assert_eq!(plan(&own_missed, &nobody(), &cfg, None).keys(), ["upload"]);
    }

    #[test]
    fn a_caller_that_is_not_a_number_is_logged_and_creates_nothing() {
        for caller in ["anonymous", "\"shop_jena\" <shop_jena>", ""] {
            let answered = event(json!({"caller": caller}), None);
            let p = plan(&answered, &answered_by(TATIANA, "Tatiana"), &cfg(), None);
            assert_eq!(p.actions, vec![], "{caller}");
            let log = p.log.unwrap();
            assert_eq!(log.client_phone, None);
            assert!(
                log.note
                    .unwrap()
                    .starts_with("caller is not a phone number")
            );
            let p = plan(&missed(caller, json!({})), &nobody(), &cfg(), None);
            assert_eq!(p.actions, vec![], "{caller}");
        }
        // An unknown tracking line is still reported.
        let e = event(json!({"caller": "anonymous", "dst": UNKNOWN_LINE}), None);
        let p = plan(&e, &answered_by(TATIANA, "Tatiana"), &cfg(), None);
        assert_eq!(p.keys(), ["task:check-tracking"]);
    }

    #[test]
    fn several_customers_with_one_number_use_the_most_recently_active_and_flag_it() {
        let mut stale = customer(210, ALINA, vec![order(330, true)]);
        stale.last_active_at = Some(at(9, 0) - Duration::days(200));
        let mut recent = customer(211, TATIANA, vec![order(331, true)]);
        recent.last_active_at = Some(at(9, 0) - Duration::days(1));
        let facts = CrmFacts {
            customers: vec![recent, stale],
            ..answered_by(TATIANA, "Tatiana")
        };
        let p = plan(
            &event(json!({"caller": TATIANAS_CUSTOMER}), None),
            &facts,
            &cfg(),
            None,
        );
        assert_eq!(
            p.actions,
            vec![
                closed_task(
                    TATIANAS_CUSTOMER,
                    TATIANA,
                    LinkRef::Order(OrderRef::Existing(OrderId(331)))
                ),
                upload(TATIANAS_CUSTOMER, Some(TATIANA), CallResult::Answered),
            ]
        );
        let log = p.log.unwrap();
        assert!(log.ambiguous_customer);
        assert_eq!(
            log.note.as_deref(),
            Some("2 customers have this number; used 211 (most recently active)")
        );
    }

    #[test]
    fn create_on_incoming_customer_creates_the_customer_and_hangs_the_task_on_it() {
        let cfg = PlannerConfig {
            create_on_incoming: CreateOnIncoming::Customer,
            ..cfg()
        };
        let p = plan(
            &event(json!({}), None),
            &answered_by(TATIANA, "Tatiana"),
            &cfg,
            None,
        );
        assert_eq!(
            p.actions,
            vec![
                new_customer(NEW_CALLER, TATIANA),
                closed_task(NEW_CALLER, TATIANA, LinkRef::Customer(CustomerRef::Created)),
                upload(NEW_CALLER, Some(TATIANA), CallResult::Answered),
            ]
        );
        assert_eq!(
            p.scenarios,
            vec![Scenario::S1, Scenario::S13, Scenario::S12]
        );
    }

    #[test]
    fn an_answered_call_with_an_unknown_manager_gives_the_closed_task_to_the_owner() {
        let facts = with_customer(nobody(), customer(201, ALINA, vec![order(301, true)]));
        let e = event(
            json!({"caller": ALINAS_CUSTOMER, "employee_number": 999}),
            None,
        );
        let p = plan(&e, &facts, &cfg(), None);
        assert_eq!(p.keys(), ["task:closed:8", "upload"]);
        assert!(
            p.log
                .unwrap()
                .note
                .unwrap()
                .contains("answering manager is unknown")
        );
    }

    #[test]
    fn drafts_resolve_with_the_ids_earlier_actions_produced() {
        let p = plan(
            &event(json!({}), None),
            &answered_by(TATIANA, "Tatiana"),
            &cfg(),
            None,
        );
        assert_keys_unique(&p);
        let Action::CreateOrder(order) = &p.actions[1] else {
            panic!("{:?}", p.actions)
        };
        assert_eq!(
            order.resolve(&Resolved::default()),
            Err(UnresolvedRef::Customer)
        );
        let mut got = Resolved {
            customer: Some(CustomerId(5)),
            order: None,
        };
        let new_order = order.resolve(&got).unwrap();
        assert_eq!(
            (new_order.customer_id, new_order.order_method.as_str()),
            (CustomerId(5), "phone")
        );
        let Action::CreateTask { task, .. } = &p.actions[2] else {
            panic!("{:?}", p.actions)
        };
        assert_eq!(task.resolve(&got), Err(UnresolvedRef::Order));
        got.order = Some(OrderId(6));
        assert_eq!(
            task.resolve(&got).unwrap().link,
            TaskLink::Order(OrderId(6))
        );
    }

    #[test]
    fn start_pops_up_for_the_owner_and_popup_after_call_sends_a_hangup() {
        let facts = with_customer(nobody(), customer(201, ALINA, vec![order(301, true)]));
        let ringing = event(json!({"caller": ALINAS_CUSTOMER}), Some("start"));
        let p = plan(&ringing, &facts, &cfg(), None);
        let [Action::PopUp(notice)] = p.actions.as_slice() else {
            panic!("{:?}", p.actions)
        };
        assert_eq!(
            (notice.event_type, notice.user_ids.as_slice()),
            (CallEventType::In, &[ALINA][..])
        );
        assert_eq!(
            plan(&ringing, &nobody(), &cfg(), None).actions,
            vec![],
            "no owner, no pop-up"
        );

        let cfg = PlannerConfig {
            popup_after_call: true,
            ..cfg()
        };
        let p = plan(
            &event(json!({}), None),
            &answered_by(TATIANA, "Tatiana"),
            &cfg,
            None,
        );
        assert_eq!(
            p.keys(),
            ["customer", "order", "task:closed:7", "upload", "popup"]
        );
        let Some(Action::PopUp(notice)) = p.actions.last() else {
            panic!("{:?}", p.actions)
        };
        assert_eq!(
            (notice.event_type, notice.hangup_status.as_deref()),
            (CallEventType::Hangup, Some("answered"))
        );
    }

    #[test]
    fn task_texts_come_from_the_configured_templates() {
        let cfg = PlannerConfig {
            texts: TaskTexts {
                callback: "Передзвонити {phone} ({count})".to_owned(),
                ..TaskTexts::default()
            },
            ..cfg()
        };
        let p = plan(&missed(NEW_CALLER, json!({})), &nobody(), &cfg, None);
        let Action::UpsertCallbackTask { task, .. } = &p.actions[0] else {
            panic!("{:?}", p.actions)
        };
        assert_eq!(task.text, format!("Передзвонити {NEW_CALLER} (1)"));
    }
}
