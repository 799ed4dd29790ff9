//! A [`Crm`] decorator that every CRM call goes through: metrics (request latency and outcome
//! by method) and, for an adapter that makes no HTTP requests of its own (the sandbox CRM),
//! the [`budget`](super::budget) per call. The retailCRM adapter takes its tokens per HTTP
//! request itself ([`super::retailcrm::RetailCrm::with_gate`]), so that a paged read takes
//! one token per page.

use std::{sync::Arc, time::Instant};

use async_trait::async_trait;

use super::{
    CallEventNotice, CallRecord, Crm, CrmCustomer, CrmError, CrmOrder, CrmUser, CustomerId,
    CustomerSnapshot, CustomersPage, HistoryCursor, HistoryPage, NewCustomer, NewOrder, NewTask,
    OrderHistoryRecord, OrderId, OrderSnapshot, OrdersPage, ResponsibleManager, StatusGroups,
    TaskId, TaskMark, TaskUpdate, UploadOutcome,
    budget::{Class, Gate},
};
use crate::{
    domain::{manager::ManagerId, phone_number::PhoneNumber},
    metrics::{CrmLabels, MethodLabel, Metrics},
};

pub struct LimitedCrm {
    inner: Arc<dyn Crm>,
    /// Per-call accounting; `None` when `inner` takes its tokens per HTTP request.
    per_call: Option<Gate>,
    metrics: Arc<Metrics>,
}

impl LimitedCrm {
    pub fn new(inner: Arc<dyn Crm>, per_call: Option<Gate>, metrics: Arc<Metrics>) -> Self {
        LimitedCrm {
            inner,
            per_call,
            metrics,
        }
    }

    async fn call<T, F>(&self, method: &'static str, class: Class, f: F) -> Result<T, CrmError>
    where
        F: std::future::Future<Output = Result<T, CrmError>>,
    {
        if let Some(gate) = &self.per_call {
            gate.admit(class).await;
        }
        let started = Instant::now();
        let result = f.await;
        self.metrics
            .crm_latency
            .get_or_create(&MethodLabel { method })
            .observe(started.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        self.metrics
            .crm_requests
            .get_or_create(&CrmLabels { method, outcome })
            .inc();
        if let Some(gate) = &self.per_call {
            gate.observe(method, class, &result);
        }
        result
    }
}

#[async_trait]
impl Crm for LimitedCrm {
    async fn responsible_manager(
        &self,
        phone: &PhoneNumber,
    ) -> Result<ResponsibleManager, CrmError> {
        self.call(
            "telephony/manager",
            Class::Telephony,
            self.inner.responsible_manager(phone),
        )
        .await
    }
    async fn list_users(&self) -> Result<Vec<CrmUser>, CrmError> {
        self.call("users", Class::General, self.inner.list_users())
            .await
    }
    async fn find_customers_by_phone(
        &self,
        phone: &PhoneNumber,
    ) -> Result<Vec<CrmCustomer>, CrmError> {
        self.call(
            "customers",
            Class::General,
            self.inner.find_customers_by_phone(phone),
        )
        .await
    }
    async fn customer_by_external_id(
        &self,
        external_id: &str,
        site: &str,
    ) -> Result<Option<CrmCustomer>, CrmError> {
        self.call(
            "customers/get",
            Class::General,
            self.inner.customer_by_external_id(external_id, site),
        )
        .await
    }
    async fn create_customer(
        &self,
        site: &str,
        customer: &NewCustomer,
    ) -> Result<CustomerId, CrmError> {
        self.call(
            "customers/create",
            Class::General,
            self.inner.create_customer(site, customer),
        )
        .await
    }
    async fn customer_orders(&self, customer: CustomerId) -> Result<Vec<CrmOrder>, CrmError> {
        self.call(
            "orders",
            Class::General,
            self.inner.customer_orders(customer),
        )
        .await
    }
    async fn order_by_external_id(
        &self,
        external_id: &str,
        site: &str,
    ) -> Result<Option<CrmOrder>, CrmError> {
        self.call(
            "orders/get",
            Class::General,
            self.inner.order_by_external_id(external_id, site),
        )
        .await
    }
    async fn create_order(&self, site: &str, order: &NewOrder) -> Result<OrderId, CrmError> {
        self.call(
            "orders/create",
            Class::General,
            self.inner.create_order(site, order),
        )
        .await
    }
    async fn task_by_mark(
        &self,
        performer: ManagerId,
        mark: &TaskMark,
    ) -> Result<Option<TaskId>, CrmError> {
        self.call(
            "tasks",
            Class::General,
            self.inner.task_by_mark(performer, mark),
        )
        .await
    }
    async fn create_task(&self, site: Option<&str>, task: &NewTask) -> Result<TaskId, CrmError> {
        self.call(
            "tasks/create",
            Class::General,
            self.inner.create_task(site, task),
        )
        .await
    }
    async fn edit_task(&self, id: TaskId, update: &TaskUpdate) -> Result<(), CrmError> {
        self.call(
            "tasks/edit",
            Class::General,
            self.inner.edit_task(id, update),
        )
        .await
    }
    async fn call_event(&self, event: &CallEventNotice) -> Result<(), CrmError> {
        self.call(
            "telephony/call/event",
            Class::Telephony,
            self.inner.call_event(event),
        )
        .await
    }
    async fn upload_calls(&self, calls: &[CallRecord]) -> Result<UploadOutcome, CrmError> {
        self.call(
            "telephony/calls/upload",
            Class::Telephony,
            self.inner.upload_calls(calls),
        )
        .await
    }
    async fn status_groups(&self) -> Result<StatusGroups, CrmError> {
        self.call(
            "reference/statuses",
            Class::General,
            self.inner.status_groups(),
        )
        .await
    }
    async fn customers_page(&self, page: u32, limit: u32) -> Result<CustomersPage, CrmError> {
        self.call(
            "customers",
            Class::General,
            self.inner.customers_page(page, limit),
        )
        .await
    }
    async fn customer_by_id(&self, id: CustomerId) -> Result<Option<CustomerSnapshot>, CrmError> {
        self.call(
            "customers/get",
            Class::General,
            self.inner.customer_by_id(id),
        )
        .await
    }
    async fn customers_history(
        &self,
        cursor: &HistoryCursor,
        limit: u32,
    ) -> Result<HistoryPage, CrmError> {
        self.call(
            "customers/history",
            Class::General,
            self.inner.customers_history(cursor, limit),
        )
        .await
    }
    async fn orders_page(&self, page: u32, limit: u32) -> Result<OrdersPage, CrmError> {
        self.call(
            "orders",
            Class::General,
            self.inner.orders_page(page, limit),
        )
        .await
    }
    async fn order_by_id(&self, id: OrderId) -> Result<Option<OrderSnapshot>, CrmError> {
        self.call("orders/get", Class::General, self.inner.order_by_id(id))
            .await
    }
    async fn orders_history(
        &self,
        cursor: &HistoryCursor,
        limit: u32,
    ) -> Result<HistoryPage<OrderHistoryRecord>, CrmError> {
        self.call(
            "orders/history",
            Class::General,
            self.inner.orders_history(cursor, limit),
        )
        .await
    }
}
