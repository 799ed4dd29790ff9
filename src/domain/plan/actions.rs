//! What a plan asks of the CRM ([`Action`]), the references between actions and how the
//! worker resolves them ([`Resolved`]), and the plan itself ([`Plan`]).

use std::fmt;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use super::ORDER_METHOD_PHONE;
use crate::domain::{
    call_log::CallLogEntry,
    crm_model::{
        CallEventNotice, CallRecord, CustomerId, NewCustomer, NewOrder, NewTask, OrderId, TaskId,
        TaskLink, TaskMark, TaskUpdate, UtmSource,
    },
    manager::ManagerId,
    phone_number::PhoneNumber,
};

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
    /// The task to create, its commentary ending with `mark` (the call and action it
    /// belongs to).
    pub fn resolve(&self, r: &Resolved, mark: &TaskMark) -> Result<NewTask, UnresolvedRef> {
        Ok(NewTask {
            text: self.text.clone(),
            commentary: Some(mark.append_to(self.commentary.as_deref())),
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
