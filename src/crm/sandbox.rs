//! The sandbox CRM: an embedded CRM kept in callgate's own store, for trying callgate with
//! no CRM account, for demos and for load tests (SPEC §4). Its records are plain JSON under
//! the `sandbox:` key space, readable through the admin API.
//!
//! It behaves like retailCRM where callgate can tell: customers are found by normalized
//! phone, `externalId`s are unique, a repeated call `externalId` is reported as a duplicate,
//! closed status groups decide whether an order is open. Users are the configured managers,
//! all `free` until told otherwise.
//!
//! It keeps a customer history too (`sandbox:history:`), so the owner mirror follows the
//! sandbox exactly as it follows retailCRM (SPEC §3.1): every customer added by hand or
//! created by the worker leaves a `created` record. Sandbox customers are never edited or
//! deleted, so that is the only kind of record. Orders are never edited or deleted either:
//! their history (`orders/history`, for the orders mirror) is one `created` record per
//! order, whose record id is the order id (ids grow in creation order).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Local;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::{
    CallEventNotice, CallRecord, Crm, CrmCustomer, CrmError, CrmOrder, CrmUser, CustomerId,
    CustomerSnapshot, CustomersPage, HistoryChange, HistoryCursor, HistoryPage, HistoryRecord,
    NewCustomer, NewOrder, NewTask, OrderHistoryChange, OrderHistoryRecord, OrderId, OrderSnapshot,
    OrdersPage, ResponsibleManager, StatusGroups, TaskId, TaskLink, TaskMark, TaskUpdate,
    UploadOutcome, UtmSource,
};
use crate::{
    domain::{
        manager::{ManagerDirectory, ManagerId},
        phone_number::PhoneNumber,
    },
    store::{KeyValueExt, Store, StoreError, keys},
};

const CUSTOMER: &str = "customer:";
const ORDER: &str = "order:";
const TASK: &str = "task:";
const CALL: &str = "call:";
const EVENT: &str = "event:";
const PHONE_INDEX: &str = "phone:";
const CUSTOMER_ORDERS: &str = "customer-orders:";
const EXTERNAL: &str = "ext:";
const HISTORY: &str = "history:";
/// Most records one listing returns.
const SCAN_LIMIT: usize = 10_000;

/// A sandbox customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxCustomer {
    pub id: CustomerId,
    pub external_id: Option<String>,
    pub site: String,
    pub manager_id: Option<ManagerId>,
    pub phones: Vec<String>,
    pub source: UtmSource,
    pub ga_client_id: Option<String>,
    pub created_at: String,
}

/// A sandbox history record: a customer was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxHistoryRecord {
    pub id: u64,
    pub created_at: String,
    pub customer: SandboxCustomer,
}

/// A sandbox order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxOrder {
    pub id: OrderId,
    pub external_id: Option<String>,
    pub site: String,
    pub customer_id: CustomerId,
    pub manager_id: Option<ManagerId>,
    pub status: String,
    pub order_method: String,
    pub source: UtmSource,
    pub created_at: String,
}

/// A sandbox task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxTask {
    pub id: TaskId,
    pub site: Option<String>,
    pub text: String,
    pub commentary: Option<String>,
    pub datetime: String,
    pub performer_id: ManagerId,
    pub complete: bool,
    pub link: TaskLink,
    pub phone: Option<String>,
}

fn now_string() -> String {
    Local::now()
        .naive_local()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// Page `page` (from 1) of `all` at `limit` a page, with the total count and page count.
fn page_of<T>(all: Vec<T>, page: u32, limit: u32) -> (Vec<T>, Option<u64>, Option<u32>) {
    let total = all.len() as u64;
    let limit = limit.max(1);
    let skip = (page.max(1) as usize - 1).saturating_mul(limit as usize);
    let items = all.into_iter().skip(skip).take(limit as usize).collect();
    (
        items,
        Some(total),
        Some(total.div_ceil(u64::from(limit)) as u32),
    )
}

fn storage(e: StoreError) -> CrmError {
    CrmError::Storage(e)
}

fn rejected(message: &str, field: &str, problem: &str) -> CrmError {
    CrmError::Rejected {
        status: 400,
        message: message.to_owned(),
        errors: vec![format!("{field}: {problem}")],
    }
}

/// The default status reference: retailCRM's fixture account groups.
fn default_status_groups() -> StatusGroups {
    [
        ("new", "new"),
        ("availability-confirmed", "approval"),
        ("client-confirmed", "approval"),
        ("assembling", "assembling"),
        ("send-to-delivery", "delivery"),
        ("delivering", "delivery"),
        ("complete", "complete"),
        ("cancel-other", "cancel"),
        ("cancel", "cancel"),
        ("no-call", "cancel"),
    ]
    .into_iter()
    .map(|(s, g)| (s.to_owned(), g.to_owned()))
    .collect()
}

pub struct SandboxCrm {
    store: Arc<dyn Store>,
    directory: Arc<ManagerDirectory>,
    statuses: StatusGroups,
}

impl SandboxCrm {
    pub fn new(store: Arc<dyn Store>, directory: Arc<ManagerDirectory>) -> Self {
        SandboxCrm {
            store,
            directory,
            statuses: default_status_groups(),
        }
    }

    fn key(kind: &str, rest: impl std::fmt::Display) -> String {
        keys::sandbox(kind, rest)
    }

    async fn put<T: Serialize + Sync>(&self, key: &str, value: &T) -> Result<(), CrmError> {
        self.store.set_json(key, value, None).await.map_err(storage)
    }

    async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CrmError> {
        self.store.get_json(key).await.map_err(storage)
    }

    async fn list<T: DeserializeOwned + Send>(&self, kind: &str) -> Result<Vec<T>, CrmError> {
        self.list_up_to(kind, SCAN_LIMIT).await
    }

    /// Every record of `kind`, in id order (the mirror's import and history reads).
    async fn list_all<T: DeserializeOwned + Send>(&self, kind: &str) -> Result<Vec<T>, CrmError> {
        self.list_up_to(kind, usize::MAX).await
    }

    async fn list_up_to<T: DeserializeOwned + Send>(
        &self,
        kind: &str,
        limit: usize,
    ) -> Result<Vec<T>, CrmError> {
        let rows = self
            .store
            .scan_json(&Self::key(kind, ""), limit)
            .await
            .map_err(storage)?;
        Ok(rows.into_iter().map(|(_, v)| v).collect())
    }

    /// Claims a unique `externalId` for `kind`, or says who has it.
    async fn claim_external(&self, kind: &str, ext: &str, id: u64) -> Result<(), CrmError> {
        let key = Self::key(EXTERNAL, format!("{kind}:{ext}"));
        let set = self
            .store
            .set_raw_if_absent(&key, id.to_string().as_bytes(), None)
            .await
            .map_err(storage)?;
        if set {
            Ok(())
        } else {
            Err(rejected(
                "Errors in the entity format",
                "externalId",
                "already exists",
            ))
        }
    }

    async fn by_external(&self, kind: &str, ext: &str) -> Result<Option<u64>, CrmError> {
        let key = Self::key(EXTERNAL, format!("{kind}:{ext}"));
        Ok(self
            .store
            .get_raw(&key)
            .await
            .map_err(storage)?
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse().ok()))
    }

    /// Adds a customer by hand, as a shop employee would type it (any phone format; the
    /// numbers are indexed by their E.164 form). Used by the admin API and tests.
    pub async fn add_customer(
        &self,
        site: &str,
        phones: &[(String, PhoneNumber)],
        manager_id: Option<ManagerId>,
    ) -> Result<CustomerId, CrmError> {
        let id = CustomerId(
            self.store
                .next_id("sandbox-customer")
                .await
                .map_err(storage)?,
        );
        let customer = SandboxCustomer {
            id,
            external_id: None,
            site: site.to_owned(),
            manager_id,
            phones: phones.iter().map(|(raw, _)| raw.clone()).collect(),
            source: UtmSource::default(),
            ga_client_id: None,
            created_at: now_string(),
        };
        self.insert_customer(&customer, phones.iter().map(|(_, p)| p))
            .await?;
        Ok(id)
    }

    async fn insert_customer<'a>(
        &self,
        customer: &SandboxCustomer,
        phones: impl Iterator<Item = &'a PhoneNumber>,
    ) -> Result<(), CrmError> {
        self.put(
            &Self::key(CUSTOMER, format!("{:020}", customer.id.0)),
            customer,
        )
        .await?;
        for phone in phones {
            let key = Self::key(
                PHONE_INDEX,
                format!("{}:{:020}", phone.e164(), customer.id.0),
            );
            self.store.set_raw(&key, &[], None).await.map_err(storage)?;
        }
        let id = self
            .store
            .next_id("sandbox-history")
            .await
            .map_err(storage)?;
        let record = SandboxHistoryRecord {
            id,
            created_at: customer.created_at.clone(),
            customer: customer.clone(),
        };
        self.put(&Self::key(HISTORY, format!("{id:020}")), &record)
            .await
    }

    fn to_snapshot(c: SandboxCustomer) -> CustomerSnapshot {
        CustomerSnapshot {
            id: c.id,
            manager: c.manager_id,
            phones: c.phones,
            created_at: Some(c.created_at),
        }
    }

    /// Adds an order by hand (admin API and tests).
    pub async fn add_order(
        &self,
        site: &str,
        customer_id: CustomerId,
        status: &str,
        manager_id: Option<ManagerId>,
    ) -> Result<OrderId, CrmError> {
        let id = OrderId(self.store.next_id("sandbox-order").await.map_err(storage)?);
        let order = SandboxOrder {
            id,
            external_id: None,
            site: site.to_owned(),
            customer_id,
            manager_id,
            status: status.to_owned(),
            order_method: "phone".to_owned(),
            source: UtmSource::default(),
            created_at: now_string(),
        };
        self.insert_order(&order).await?;
        Ok(id)
    }

    async fn insert_order(&self, order: &SandboxOrder) -> Result<(), CrmError> {
        if !self.statuses.contains_key(&order.status) {
            return Err(rejected(
                "Errors in the entity format",
                "status",
                "unknown status code",
            ));
        }
        self.put(&Self::key(ORDER, format!("{:020}", order.id.0)), order)
            .await?;
        let link = Self::key(
            CUSTOMER_ORDERS,
            format!("{:020}:{:020}", order.customer_id.0, order.id.0),
        );
        self.store.set_raw(&link, &[], None).await.map_err(storage)
    }

    pub async fn customers(&self) -> Result<Vec<SandboxCustomer>, CrmError> {
        self.list(CUSTOMER).await
    }
    pub async fn orders(&self) -> Result<Vec<SandboxOrder>, CrmError> {
        self.list(ORDER).await
    }
    pub async fn tasks(&self) -> Result<Vec<SandboxTask>, CrmError> {
        self.list(TASK).await
    }
    pub async fn calls(&self) -> Result<Vec<CallRecord>, CrmError> {
        self.list(CALL).await
    }
    pub async fn call_events(&self) -> Result<Vec<CallEventNotice>, CrmError> {
        self.list(EVENT).await
    }

    fn to_crm_customer(c: SandboxCustomer) -> CrmCustomer {
        CrmCustomer {
            id: c.id,
            external_id: c.external_id,
            manager_id: c.manager_id,
            phones: c.phones,
            created_at: Some(c.created_at),
        }
    }

    fn to_crm_order(o: SandboxOrder) -> CrmOrder {
        CrmOrder {
            id: o.id,
            external_id: o.external_id,
            status: o.status,
            manager_id: o.manager_id,
            customer_id: Some(o.customer_id),
            created_at: Some(o.created_at),
        }
    }

    fn to_order_snapshot(o: SandboxOrder) -> OrderSnapshot {
        OrderSnapshot {
            id: o.id,
            customer: Some(o.customer_id),
            status: o.status,
            manager: o.manager_id,
            created_at: Some(o.created_at),
        }
    }

    fn check_user(&self, id: ManagerId, field: &str) -> Result<(), CrmError> {
        if self.directory.get(id).is_some() {
            Ok(())
        } else {
            Err(rejected(
                "Errors in the entity format",
                field,
                "user not found",
            ))
        }
    }
}

#[async_trait]
impl Crm for SandboxCrm {
    async fn responsible_manager(
        &self,
        phone: &PhoneNumber,
    ) -> Result<ResponsibleManager, CrmError> {
        let found = self.find_customers_by_phone(phone).await?;
        Ok(match found.into_iter().next() {
            Some(c) => ResponsibleManager {
                manager_id: c.manager_id,
                manager_code: c
                    .manager_id
                    .and_then(|m| self.directory.get(m))
                    .and_then(|m| m.code.clone()),
                customer_id: Some(c.id),
            },
            None => ResponsibleManager::default(),
        })
    }

    async fn list_users(&self) -> Result<Vec<CrmUser>, CrmError> {
        Ok(self
            .directory
            .all()
            .iter()
            .map(|m| CrmUser {
                id: m.id,
                active: true,
                is_manager: true,
                status: None,
                online: None,
                first_name: None,
                last_name: None,
            })
            .collect())
    }

    async fn find_customers_by_phone(
        &self,
        phone: &PhoneNumber,
    ) -> Result<Vec<CrmCustomer>, CrmError> {
        let prefix = Self::key(PHONE_INDEX, format!("{}:", phone.e164()));
        let rows = self
            .store
            .scan_prefix(&prefix, SCAN_LIMIT)
            .await
            .map_err(storage)?;
        let mut found = Vec::with_capacity(rows.len());
        for (key, _) in rows {
            let id = &key[prefix.len()..];
            if let Some(c) = self
                .get::<SandboxCustomer>(&Self::key(CUSTOMER, id))
                .await?
            {
                found.push(Self::to_crm_customer(c));
            }
        }
        // Newest first; ids grow with time, so they break ties within one second.
        found.sort_by(|a, b| (&b.created_at, b.id).cmp(&(&a.created_at, a.id)));
        Ok(found)
    }

    async fn customer_by_external_id(
        &self,
        external_id: &str,
        _site: &str,
    ) -> Result<Option<CrmCustomer>, CrmError> {
        let Some(id) = self.by_external("customer", external_id).await? else {
            return Ok(None);
        };
        Ok(self
            .get::<SandboxCustomer>(&Self::key(CUSTOMER, format!("{id:020}")))
            .await?
            .map(Self::to_crm_customer))
    }

    async fn create_customer(
        &self,
        site: &str,
        customer: &NewCustomer,
    ) -> Result<CustomerId, CrmError> {
        if customer.phones.is_empty() {
            return Err(rejected(
                "Errors in the entity format",
                "phones",
                "at least one phone is required",
            ));
        }
        if let Some(m) = customer.manager_id {
            self.check_user(m, "managerId")?;
        }
        let id = CustomerId(
            self.store
                .next_id("sandbox-customer")
                .await
                .map_err(storage)?,
        );
        self.claim_external("customer", &customer.external_id, id.0)
            .await?;
        let record = SandboxCustomer {
            id,
            external_id: Some(customer.external_id.clone()),
            site: site.to_owned(),
            manager_id: customer.manager_id,
            phones: customer
                .phones
                .iter()
                .map(|p| p.e164().to_owned())
                .collect(),
            source: customer.source.clone(),
            ga_client_id: customer.ga_client_id.clone(),
            created_at: now_string(),
        };
        self.insert_customer(&record, customer.phones.iter())
            .await?;
        Ok(id)
    }

    async fn customer_orders(&self, customer: CustomerId) -> Result<Vec<CrmOrder>, CrmError> {
        let prefix = Self::key(CUSTOMER_ORDERS, format!("{:020}:", customer.0));
        let rows = self
            .store
            .scan_prefix(&prefix, SCAN_LIMIT)
            .await
            .map_err(storage)?;
        let mut orders = Vec::with_capacity(rows.len());
        for (key, _) in rows {
            let id = &key[prefix.len()..];
            if let Some(o) = self.get::<SandboxOrder>(&Self::key(ORDER, id)).await? {
                orders.push(Self::to_crm_order(o));
            }
        }
        orders.sort_by_key(|o| std::cmp::Reverse(o.id));
        Ok(orders)
    }

    async fn order_by_external_id(
        &self,
        external_id: &str,
        _site: &str,
    ) -> Result<Option<CrmOrder>, CrmError> {
        let Some(id) = self.by_external("order", external_id).await? else {
            return Ok(None);
        };
        Ok(self
            .get::<SandboxOrder>(&Self::key(ORDER, format!("{id:020}")))
            .await?
            .map(Self::to_crm_order))
    }

    async fn create_order(&self, site: &str, order: &NewOrder) -> Result<OrderId, CrmError> {
        if let Some(m) = order.manager_id {
            self.check_user(m, "managerId")?;
        }
        if self
            .get::<SandboxCustomer>(&Self::key(CUSTOMER, format!("{:020}", order.customer_id.0)))
            .await?
            .is_none()
        {
            return Err(rejected(
                "Errors in the entity format",
                "customer",
                "customer not found",
            ));
        }
        let status = order.status.clone().unwrap_or_else(|| "new".to_owned());
        if !self.statuses.contains_key(&status) {
            return Err(rejected(
                "Errors in the entity format",
                "status",
                "unknown status code",
            ));
        }
        let id = OrderId(self.store.next_id("sandbox-order").await.map_err(storage)?);
        self.claim_external("order", &order.external_id, id.0)
            .await?;
        let record = SandboxOrder {
            id,
            external_id: Some(order.external_id.clone()),
            site: site.to_owned(),
            customer_id: order.customer_id,
            manager_id: order.manager_id,
            status,
            order_method: order.order_method.clone(),
            source: order.source.clone(),
            created_at: now_string(),
        };
        self.insert_order(&record).await?;
        Ok(id)
    }

    async fn task_by_mark(
        &self,
        performer: ManagerId,
        mark: &TaskMark,
    ) -> Result<Option<TaskId>, CrmError> {
        Ok(self
            .tasks()
            .await?
            .into_iter()
            .find(|t| {
                t.performer_id == performer
                    && t.commentary.as_deref().is_some_and(|c| mark.is_in(c))
            })
            .map(|t| t.id))
    }

    async fn create_task(&self, site: Option<&str>, task: &NewTask) -> Result<TaskId, CrmError> {
        self.check_user(task.performer_id, "performerId")?;
        if task.text.trim().is_empty() {
            return Err(rejected("Errors in the entity format", "text", "required"));
        }
        let id = TaskId(self.store.next_id("sandbox-task").await.map_err(storage)?);
        let record = SandboxTask {
            id,
            site: site.map(str::to_owned),
            text: task.text.clone(),
            commentary: task.commentary.clone(),
            datetime: task.datetime.format("%Y-%m-%d %H:%M").to_string(),
            performer_id: task.performer_id,
            complete: task.complete,
            link: task.link,
            phone: task.phone.as_ref().map(|p| p.e164().to_owned()),
        };
        self.put(&Self::key(TASK, format!("{:020}", id.0)), &record)
            .await?;
        Ok(id)
    }

    async fn edit_task(&self, id: TaskId, update: &TaskUpdate) -> Result<(), CrmError> {
        let key = Self::key(TASK, format!("{:020}", id.0));
        let Some(mut task) = self.get::<SandboxTask>(&key).await? else {
            return Err(CrmError::Rejected {
                status: 404,
                message: "Not found".to_owned(),
                errors: vec![],
            });
        };
        if let Some(text) = &update.text {
            task.text = text.clone();
        }
        if let Some(commentary) = &update.commentary {
            task.commentary = Some(commentary.clone());
        }
        if let Some(complete) = update.complete {
            task.complete = complete;
        }
        self.put(&key, &task).await
    }

    async fn call_event(&self, event: &CallEventNotice) -> Result<(), CrmError> {
        let seq = self.store.next_id("sandbox-event").await.map_err(storage)?;
        self.put(&Self::key(EVENT, format!("{seq:020}")), event)
            .await
    }

    async fn upload_calls(&self, calls: &[CallRecord]) -> Result<UploadOutcome, CrmError> {
        let mut outcome = UploadOutcome::default();
        for call in calls {
            let key = Self::key(CALL, &call.external_id);
            if self
                .store
                .set_json_if_absent(&key, call, None)
                .await
                .map_err(storage)?
            {
                outcome.processed += 1;
            } else {
                outcome.duplicates.push(call.external_id.clone());
            }
        }
        Ok(outcome)
    }

    async fn status_groups(&self) -> Result<StatusGroups, CrmError> {
        Ok(self.statuses.clone())
    }

    async fn customers_page(&self, page: u32, limit: u32) -> Result<CustomersPage, CrmError> {
        let all = self.list_all::<SandboxCustomer>(CUSTOMER).await?;
        let (customers, total_count, total_pages) = page_of(all, page, limit);
        Ok(CustomersPage {
            customers: customers.into_iter().map(Self::to_snapshot).collect(),
            total_count,
            total_pages,
        })
    }

    async fn orders_page(&self, page: u32, limit: u32) -> Result<OrdersPage, CrmError> {
        let all = self.list_all::<SandboxOrder>(ORDER).await?;
        let (orders, total_count, total_pages) = page_of(all, page, limit);
        Ok(OrdersPage {
            orders: orders.into_iter().map(Self::to_order_snapshot).collect(),
            total_count,
            total_pages,
        })
    }

    async fn order_by_id(&self, id: OrderId) -> Result<Option<OrderSnapshot>, CrmError> {
        Ok(self
            .get::<SandboxOrder>(&Self::key(ORDER, format!("{:020}", id.0)))
            .await?
            .map(Self::to_order_snapshot))
    }

    async fn orders_history(
        &self,
        cursor: &HistoryCursor,
        limit: u32,
    ) -> Result<HistoryPage<OrderHistoryRecord>, CrmError> {
        let all = self.list_all::<SandboxOrder>(ORDER).await?;
        let records: Vec<OrderHistoryRecord> = all
            .into_iter()
            .filter(|o| cursor.admits(o.id.0, &o.created_at))
            .take(limit as usize)
            .map(|o| OrderHistoryRecord {
                id: o.id.0,
                order: o.id,
                change: OrderHistoryChange::Created(Self::to_order_snapshot(o)),
            })
            .collect();
        Ok(HistoryPage::of(records, |r| r.id, Some(now_string())))
    }

    async fn customer_by_id(&self, id: CustomerId) -> Result<Option<CustomerSnapshot>, CrmError> {
        Ok(self
            .get::<SandboxCustomer>(&Self::key(CUSTOMER, format!("{:020}", id.0)))
            .await?
            .map(Self::to_snapshot))
    }

    async fn customers_history(
        &self,
        cursor: &HistoryCursor,
        limit: u32,
    ) -> Result<HistoryPage, CrmError> {
        let all = self.list_all::<SandboxHistoryRecord>(HISTORY).await?;
        let records: Vec<HistoryRecord> = all
            .into_iter()
            .filter(|r| cursor.admits(r.id, &r.created_at))
            .take(limit as usize)
            .map(|r| HistoryRecord {
                id: r.id,
                created_at: Some(r.created_at),
                customer: r.customer.id,
                change: HistoryChange::Created(Self::to_snapshot(r.customer)),
            })
            .collect();
        Ok(HistoryPage::of(records, |r| r.id, Some(now_string())))
    }
}

/// Sandbox records grouped for the admin API.
#[derive(Debug, Serialize)]
pub struct SandboxSnapshot {
    pub customers: Vec<SandboxCustomer>,
    pub orders: Vec<SandboxOrder>,
    pub tasks: Vec<SandboxTask>,
    pub calls: Vec<CallRecord>,
    pub call_events: Vec<CallEventNotice>,
}

impl SandboxCrm {
    pub async fn snapshot(&self) -> Result<SandboxSnapshot, CrmError> {
        Ok(SandboxSnapshot {
            customers: self.customers().await?,
            orders: self.orders().await?,
            tasks: self.tasks().await?,
            calls: self.calls().await?,
            call_events: self.call_events().await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use crate::{domain::manager::Manager, store::embedded::EmbeddedStore};

    #[tokio::test]
    async fn task_by_mark_finds_the_performers_marked_task_only() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(&dir.path().join("sandbox.redb")).unwrap());
        let manager = |id| Manager {
            id: ManagerId(id),
            ringostat_staff_id: None,
            sip: Vec::new(),
            code: None,
            phone: None,
        };
        let directory = ManagerDirectory::new(vec![manager(1), manager(2)]).unwrap();
        let crm = SandboxCrm::new(store, Arc::new(directory));
        let mark = TaskMark::new("ev:call-1", "task:notify-owner");
        let task = |performer, commentary: Option<String>| NewTask {
            text: "Call back".into(),
            commentary,
            datetime: NaiveDate::from_ymd_opt(2024, 5, 1)
                .unwrap()
                .and_hms_opt(14, 30, 0)
                .unwrap(),
            performer_id: ManagerId(performer),
            complete: false,
            link: TaskLink::None,
            phone: None,
        };
        crm.create_task(None, &task(1, None)).await.unwrap();
        crm.create_task(None, &task(2, Some(mark.append_to(None))))
            .await
            .unwrap();
        assert_eq!(crm.task_by_mark(ManagerId(1), &mark).await.unwrap(), None);
        let id = crm
            .create_task(None, &task(1, Some(mark.append_to(Some("Missed call")))))
            .await
            .unwrap();
        assert_eq!(
            crm.task_by_mark(ManagerId(1), &mark).await.unwrap(),
            Some(id)
        );
    }
}
