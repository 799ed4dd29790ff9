//! The CRM vocabulary the domain speaks: ids, UTM tags, call records and results, and the
//! create/update commands the planner emits (SPEC §4). The shapes follow retailCRM API v5
//! (PROTOCOLS §2), but nothing here talks to a CRM: the `Crm` port in `crate::crm` takes
//! and returns these types, and its adapters map them onto the wire.

use std::fmt;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use super::{manager::ManagerId, phone_number::PhoneNumber};

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// A CRM customer id.
    CustomerId
);
id_type!(
    /// A CRM order id.
    OrderId
);
id_type!(
    /// A CRM task id.
    TaskId
);

/// UTM tags of a call, in retailCRM's `source` shape.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UtmSource {
    pub source: Option<String>,
    pub medium: Option<String>,
    pub campaign: Option<String>,
    pub keyword: Option<String>,
    pub content: Option<String>,
}

impl UtmSource {
    pub fn is_empty(&self) -> bool {
        self.source.is_none()
            && self.medium.is_none()
            && self.campaign.is_none()
            && self.keyword.is_none()
            && self.content.is_none()
    }
}

/// `customers/create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCustomer {
    /// Dedupe key: a retry after a crash finds the customer by it instead of creating a
    /// second one.
    pub external_id: String,
    pub phones: Vec<PhoneNumber>,
    pub manager_id: Option<ManagerId>,
    pub source: UtmSource,
    /// Google Analytics client id, bare (`1169999034.1555555510`).
    pub ga_client_id: Option<String>,
}

/// `orders/create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOrder {
    /// Dedupe key, as for customers.
    pub external_id: String,
    pub customer_id: CustomerId,
    pub manager_id: Option<ManagerId>,
    /// Status code; `None` lets the CRM use its default.
    pub status: Option<String>,
    /// Always `phone` for orders made from calls.
    pub order_method: String,
    pub phone: PhoneNumber,
    pub source: UtmSource,
    pub ga_client_id: Option<String>,
}

/// What a task hangs on. A task always has one: an order when there is one, else the
/// customer (S13), else nothing but the phone (unknown caller with no customer allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskLink {
    Order(OrderId),
    Customer(CustomerId),
    None,
}

/// `tasks/create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTask {
    pub text: String,
    pub commentary: Option<String>,
    /// Sent as `Y-m-d H:i`.
    pub datetime: NaiveDateTime,
    pub performer_id: ManagerId,
    pub complete: bool,
    pub link: TaskLink,
    pub phone: Option<PhoneNumber>,
}

/// `tasks/{id}/edit`: the fields callgate changes on its call-back task (S14); `None` leaves
/// a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskUpdate {
    pub text: Option<String>,
    pub commentary: Option<String>,
    /// `Some(true)` closes the task.
    pub complete: Option<bool>,
}

/// `telephony/call/event` type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallEventType {
    In,
    Out,
    Hangup,
}

/// `telephony/call/event` (the pop-up card).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallEventNotice {
    pub phone: PhoneNumber,
    pub event_type: CallEventType,
    pub codes: Vec<String>,
    pub user_ids: Vec<ManagerId>,
    pub site: Option<String>,
    pub external_phone: Option<String>,
    pub call_external_id: Option<String>,
    /// For `hangup`: `answered|busy|cancel|failed|no answered`.
    pub hangup_status: Option<String>,
}

/// `telephony/calls/upload` result vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallResult {
    #[serde(rename = "answered")]
    Answered,
    #[serde(rename = "busy")]
    Busy,
    #[serde(rename = "failed")]
    Failed,
    #[serde(rename = "no answer")]
    NoAnswer,
    #[serde(rename = "not allowed")]
    NotAllowed,
    #[serde(rename = "unknown")]
    Unknown,
}

impl CallResult {
    pub fn as_str(self) -> &'static str {
        match self {
            CallResult::Answered => "answered",
            CallResult::Busy => "busy",
            CallResult::Failed => "failed",
            CallResult::NoAnswer => "no answer",
            CallResult::NotAllowed => "not allowed",
            CallResult::Unknown => "unknown",
        }
    }
}

/// One call-history record for `telephony/calls/upload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Sent as `Y-m-d H:i:s`.
    pub date: NaiveDateTime,
    /// `in` or `out`.
    pub incoming: bool,
    pub phone: String,
    pub user_id: Option<ManagerId>,
    pub code: Option<String>,
    pub result: CallResult,
    pub duration: u32,
    pub duration_waiting: u32,
    /// PBX call id: the CRM's own dedupe key for uploaded calls.
    pub external_id: String,
    pub record_url: Option<String>,
    pub source: UtmSource,
    pub external_phone: Option<String>,
    pub site: Option<String>,
    pub ga_client_id: Option<String>,
}
