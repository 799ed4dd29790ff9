//! The CRM port: everything callgate asks of or tells the CRM, behind one trait.
//!
//! Two adapters implement it: [`retailcrm::RetailCrm`] (retailCRM API v5 over HTTP) and
//! [`sandbox::SandboxCrm`] (an embedded CRM kept in callgate's own store, for demos, trials
//! and load tests). Errors are classified once, here at the edge: [`CrmError::is_retryable`]
//! decides between "retry with backoff" and "dead-letter with the CRM's reason"
//! (SPEC §6: cancel only bad content, retry the rest).
//!
//! The vocabulary the port speaks (ids, UTM tags, call records and results, the create and
//! update commands the planner emits) belongs to the domain, [`crate::domain::crm_model`];
//! it is re-exported here so adapters and the edge name it `crate::crm::…`. What only the
//! port reads back (customers, orders, users as the CRM returns them) stays here.

pub mod budget;
pub mod limited;
pub mod retailcrm;
pub mod sandbox;

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use crate::domain::crm_model::{
    CallEventNotice, CallEventType, CallRecord, CallResult, CustomerId, NewCustomer, NewOrder,
    NewTask, OrderId, TaskId, TaskLink, TaskMark, TaskUpdate, UtmSource,
};

pub use crate::domain::mirror::{CustomerSnapshot, HistoryChange, HistoryCursor, HistoryRecord};
pub use crate::domain::orders_mirror::{OrderHistoryChange, OrderHistoryRecord, OrderSnapshot};
use crate::domain::{
    manager::{ManagerId, ManagerStatus},
    phone_number::PhoneNumber,
};

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

/// One page of `GET customers` (every customer, in the CRM's order).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CustomersPage {
    pub customers: Vec<CustomerSnapshot>,
    /// `pagination.totalCount`.
    pub total_count: Option<u64>,
    /// `pagination.totalPageCount`.
    pub total_pages: Option<u32>,
}

/// One page of `GET orders` (every order, in the CRM's order).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OrdersPage {
    pub orders: Vec<OrderSnapshot>,
    /// `pagination.totalCount`.
    pub total_count: Option<u64>,
    /// `pagination.totalPageCount`.
    pub total_pages: Option<u32>,
}

/// One read of `GET customers/history` (or, with `R = OrderHistoryRecord`, of
/// `GET orders/history`: the same walk, PROTOCOLS §2.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage<R = HistoryRecord> {
    /// Oldest first. Records that name no customer (order) are left out (but count in
    /// `last_id`).
    pub records: Vec<R>,
    /// The greatest record id of the answer, also of records left out.
    pub last_id: Option<u64>,
    /// Records the answer held (a full page means more may follow).
    pub received: usize,
    /// `generatedAt`: the CRM's clock when it answered (`Y-m-d H:i:s`).
    pub generated_at: Option<String>,
}

impl<R> HistoryPage<R> {
    /// A whole answer of `records` (oldest first; `id` gives a record's id), answered at
    /// the CRM's time `generated_at`.
    pub fn of(records: Vec<R>, id: fn(&R) -> u64, generated_at: Option<String>) -> Self {
        HistoryPage {
            last_id: records.iter().map(id).max(),
            received: records.len(),
            records,
            generated_at,
        }
    }
}

impl<R> Default for HistoryPage<R> {
    fn default() -> Self {
        HistoryPage {
            records: Vec::new(),
            last_id: None,
            received: 0,
            generated_at: None,
        }
    }
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
    Storage(#[source] crate::store::StoreError),
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
    /// `GET telephony/manager?phone=<national significant number>&details=1&ignoreStatus=1`:
    /// who owns this caller. The answer's customer counts only when one of its stored phones
    /// normalizes to `phone`; otherwise the customers are searched (as
    /// [`Crm::find_customers_by_phone`]) and the most recent true match is taken.
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

    /// The id of a task of `performer` whose commentary carries `mark` (a line of its own),
    /// to resume a `tasks/create` whose outcome is unknown. `GET tasks?filter[performers][]=`
    /// (the one documented filter that narrows it; the mark is compared locally), all pages up
    /// to the adapter's bound.
    async fn task_by_mark(
        &self,
        performer: ManagerId,
        mark: &TaskMark,
    ) -> Result<Option<TaskId>, CrmError>;

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

    /// `GET customers?limit=…&page=…`: one page of every customer (the first import).
    async fn customers_page(&self, page: u32, limit: u32) -> Result<CustomersPage, CrmError>;

    /// `GET customers/{id}?by=id`; `None` when the CRM has no such customer (any more).
    async fn customer_by_id(&self, id: CustomerId) -> Result<Option<CustomerSnapshot>, CrmError>;

    /// `GET customers/history` from `cursor` (`filter[sinceId]` or `filter[startDate]`,
    /// never with `page`), at most `limit` records, oldest first.
    async fn customers_history(
        &self,
        cursor: &HistoryCursor,
        limit: u32,
    ) -> Result<HistoryPage, CrmError>;

    /// `GET orders?limit=…&page=…`: one page of every order (the orders mirror's import).
    async fn orders_page(&self, page: u32, limit: u32) -> Result<OrdersPage, CrmError>;

    /// `GET orders/{id}?by=id`; `None` when the CRM has no such order (any more).
    async fn order_by_id(&self, id: OrderId) -> Result<Option<OrderSnapshot>, CrmError>;

    /// `GET orders/history` from `cursor`, as [`Crm::customers_history`].
    async fn orders_history(
        &self,
        cursor: &HistoryCursor,
        limit: u32,
    ) -> Result<HistoryPage<OrderHistoryRecord>, CrmError>;
}
