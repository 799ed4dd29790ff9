//! The CRM port: everything callgate asks of or tells the CRM, behind one trait.
//!
//! Two adapters implement it: [`retailcrm::RetailCrm`] (retailCRM API v5 over HTTP) and
//! [`sandbox::SandboxCrm`] (an embedded CRM kept in callgate's own store, for demos, trials
//! and load tests). Errors are classified once, here at the edge: [`CrmError::is_retryable`]
//! decides between "retry with backoff" and "dead-letter with the CRM's reason"
//! (SPEC §6: cancel only bad content, retry the rest).

pub mod budget;
pub mod limited;
pub mod retailcrm;
pub mod sandbox;

use std::{collections::HashMap, fmt, time::Duration};

use async_trait::async_trait;
use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use crate::domain::{
    manager::{ManagerId, ManagerStatus},
    phone_number::PhoneNumber,
};

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

/// What `telephony/manager` answers for a caller: the responsible manager (if any) and the
/// customer (if any).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResponsibleManager {
    pub manager_id: Option<ManagerId>,
    /// The manager's extension code, as the CRM knows it.
    pub manager_code: Option<String>,
    pub customer_id: Option<CustomerId>,
}

/// A CRM user (`GET users`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrmUser {
    pub id: ManagerId,
    pub active: bool,
    pub is_manager: bool,
    pub status: Option<ManagerStatus>,
    pub online: Option<bool>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

/// A CRM customer as read back from the CRM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrmCustomer {
    pub id: CustomerId,
    pub external_id: Option<String>,
    pub manager_id: Option<ManagerId>,
    /// Phones exactly as stored in the CRM (any format a human typed).
    pub phones: Vec<String>,
    /// `createdAt` (`Y-m-d H:i:s`), used to pick the most recent of several matches.
    pub created_at: Option<String>,
}

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

/// An order as read back from the CRM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrmOrder {
    pub id: OrderId,
    pub external_id: Option<String>,
    pub status: String,
    pub manager_id: Option<ManagerId>,
    pub customer_id: Option<CustomerId>,
    pub created_at: Option<String>,
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

/// `telephony/calls/upload` answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UploadOutcome {
    pub processed: u32,
    /// `externalId`s the CRM already had (a repeat is success, not failure).
    pub duplicates: Vec<String>,
}

/// Order status code → status group code (`reference/statuses`).
pub type StatusGroups = HashMap<String, String>;

/// Why a CRM request failed, classified once at the edge.
#[derive(Debug, thiserror::Error)]
pub enum CrmError {
    /// Connection refused, reset, DNS, TLS: the request may not have reached the CRM.
    #[error("CRM request failed")]
    Transport(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// No answer within the configured timeout.
    #[error("CRM did not answer within {0:?}")]
    Timeout(Duration),
    /// 503 / 429: the CRM's rate limit.
    #[error("CRM rate limited the request")]
    RateLimited { retry_after: Option<Duration> },
    /// `success:false` or a 4xx with the envelope: the CRM refused the request.
    #[error("CRM refused the request ({status}): {message}")]
    Rejected {
        status: u16,
        message: String,
        /// The `errors` object or array, flattened to `field: text` strings.
        errors: Vec<String>,
    },
    /// 5xx other than 503.
    #[error("CRM answered {status}")]
    Server { status: u16, body: String },
    /// An HTML page or no JSON at all: wrong URL or the account does not exist.
    #[error("CRM answered {status} with a body that is not the API's JSON: {snippet}")]
    NotApi { status: u16, snippet: String },
    /// The sandbox store behind the sandbox CRM failed.
    #[error("sandbox CRM storage failed: {0}")]
    Storage(String),
}

impl CrmError {
    /// Bad content (validation, unknown entity, partial batch failure) is not retried: the
    /// same request would fail the same way. Everything else is retried, including 403
    /// "Access denied" and a wrong URL, which an operator fixes in the CRM's settings.
    pub fn is_retryable(&self) -> bool {
        match self {
            // "API method not found" is a wrong URL or API version: an operator fixes it.
            CrmError::Rejected {
                status: 404,
                message,
                ..
            } => message.to_ascii_lowercase().contains("method"),
            CrmError::Rejected { status, .. } => !matches!(status, 400 | 422 | 460),
            _ => true,
        }
    }

    /// The CRM's own words, for dead letters.
    pub fn reason(&self) -> String {
        match self {
            CrmError::Rejected {
                status,
                message,
                errors,
            } if !errors.is_empty() => format!("{status} {message} ({})", errors.join("; ")),
            other => other.to_string(),
        }
    }

    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            CrmError::Transport(_) => "transport",
            CrmError::Timeout(_) => "timeout",
            CrmError::RateLimited { .. } => "rate_limited",
            CrmError::Rejected { .. } => "rejected",
            CrmError::Server { .. } => "server",
            CrmError::NotApi { .. } => "not_api",
            CrmError::Storage(_) => "storage",
        }
    }
}

/// The CRM port. Object-safe, used as `Arc<dyn Crm>`.
#[async_trait]
pub trait Crm: Send + Sync {
    /// `GET telephony/manager?phone=…&details=1&ignoreStatus=1`: who owns this caller.
    async fn responsible_manager(
        &self,
        phone: &PhoneNumber,
    ) -> Result<ResponsibleManager, CrmError>;

    /// `GET users`: every user with status and presence (all pages).
    async fn list_users(&self) -> Result<Vec<CrmUser>, CrmError>;

    /// Customers whose stored phone normalizes to `phone` (searched by `filter[name]`, then
    /// compared locally), most recently created first.
    async fn find_customers_by_phone(
        &self,
        phone: &PhoneNumber,
    ) -> Result<Vec<CrmCustomer>, CrmError>;

    /// A customer by its callgate-given `externalId`, to resume an interrupted create.
    async fn customer_by_external_id(
        &self,
        external_id: &str,
        site: &str,
    ) -> Result<Option<CrmCustomer>, CrmError>;

    /// `customers/create`.
    async fn create_customer(
        &self,
        site: &str,
        customer: &NewCustomer,
    ) -> Result<CustomerId, CrmError>;

    /// Orders of one customer (all statuses), newest first.
    async fn customer_orders(&self, customer: CustomerId) -> Result<Vec<CrmOrder>, CrmError>;

    /// An order by its callgate-given `externalId`, to resume an interrupted create.
    async fn order_by_external_id(
        &self,
        external_id: &str,
        site: &str,
    ) -> Result<Option<CrmOrder>, CrmError>;

    /// `orders/create`.
    async fn create_order(&self, site: &str, order: &NewOrder) -> Result<OrderId, CrmError>;

    /// `tasks/create`.
    async fn create_task(&self, site: Option<&str>, task: &NewTask) -> Result<TaskId, CrmError>;

    /// `tasks/{id}/edit`.
    async fn edit_task(&self, id: TaskId, update: &TaskUpdate) -> Result<(), CrmError>;

    /// `telephony/call/event`.
    async fn call_event(&self, event: &CallEventNotice) -> Result<(), CrmError>;

    /// `telephony/calls/upload` (at most 50 per request; adapters split larger batches).
    async fn upload_calls(&self, calls: &[CallRecord]) -> Result<UploadOutcome, CrmError>;

    /// `reference/statuses`: status code → group code.
    async fn status_groups(&self) -> Result<StatusGroups, CrmError>;
}
