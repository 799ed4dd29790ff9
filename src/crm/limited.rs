//! A [`Crm`] decorator that every CRM request goes through: the two `governor` limiters of
//! SPEC §6 (general and telephony methods, per API key), a pause after a 503/429 so the
//! whole process slows down instead of hammering a rate-limited CRM, and metrics (request
//! latency and outcome by method, limiter waits).
//!
//! The two budgets are independent: a telephony request (a pop-up, a call upload) waits
//! only for the telephony limiter and the telephony pause, never behind general work or a
//! general 503, and the reverse.
//!
//! The limiters allow no burst: requests are spaced evenly at the configured rate, so no
//! one-second window ever sees more than the limit.

use std::{
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::{
    CallEventNotice, CallRecord, Crm, CrmCustomer, CrmError, CrmOrder, CrmUser, CustomerId,
    NewCustomer, NewOrder, NewTask, OrderId, ResponsibleManager, StatusGroups, TaskId, TaskUpdate,
    UploadOutcome,
};
use crate::{
    domain::phone_number::PhoneNumber,
    metrics::{CrmLabels, LimiterLabel, MethodLabel, Metrics},
};

/// Pause after a rate-limited answer that carried no `Retry-After`.
pub const DEFAULT_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(1);
/// Longest pause a `Retry-After` may impose.
pub const MAX_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    General,
    Telephony,
}

pub struct LimitedCrm {
    inner: Arc<dyn Crm>,
    general: Option<DefaultDirectRateLimiter>,
    telephony: Option<DefaultDirectRateLimiter>,
    /// Pause after a 503/429, per class.
    paused_general: Mutex<Option<Instant>>,
    paused_telephony: Mutex<Option<Instant>>,
    metrics: Arc<Metrics>,
}

fn even_quota(rps: u32) -> Option<Quota> {
    let rps = NonZeroU32::new(rps)?;
    Quota::with_period(Duration::from_secs(1) / rps.get()).map(|q| q.allow_burst(NonZeroU32::MIN))
}

impl LimitedCrm {
    /// `rps = 0` means unlimited (the sandbox CRM).
    pub fn new(
        inner: Arc<dyn Crm>,
        general_rps: u32,
        telephony_rps: u32,
        metrics: Arc<Metrics>,
    ) -> Self {
        LimitedCrm {
            inner,
            general: even_quota(general_rps).map(RateLimiter::direct),
            telephony: even_quota(telephony_rps).map(RateLimiter::direct),
            paused_general: Mutex::new(None),
            paused_telephony: Mutex::new(None),
            metrics,
        }
    }

    fn pause_of(&self, class: Class) -> &Mutex<Option<Instant>> {
        match class {
            Class::General => &self.paused_general,
            Class::Telephony => &self.paused_telephony,
        }
    }

    async fn admit(&self, class: Class) {
        let started = Instant::now();
        loop {
            let until = *self.pause_of(class).lock().expect("pause lock poisoned");
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t.into()).await,
                _ => break,
            }
        }
        let (limiter, label) = match class {
            Class::General => (&self.general, "general"),
            Class::Telephony => (&self.telephony, "telephony"),
        };
        if let Some(limiter) = limiter {
            limiter.until_ready().await;
        }
        self.metrics
            .limiter_wait
            .get_or_create(&LimiterLabel { limiter: label })
            .observe(started.elapsed().as_secs_f64());
    }

    async fn call<T, F>(&self, method: &'static str, class: Class, f: F) -> Result<T, CrmError>
    where
        F: std::future::Future<Output = Result<T, CrmError>>,
    {
        self.admit(class).await;
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
        if let Err(CrmError::RateLimited { retry_after }) = &result {
            let pause = retry_after
                .unwrap_or(DEFAULT_RATE_LIMIT_PAUSE)
                .min(MAX_RATE_LIMIT_PAUSE);
            let mut paused = self.pause_of(class).lock().expect("pause lock poisoned");
            let until = Instant::now() + pause;
            if paused.is_none_or(|p| p < until) {
                *paused = Some(until);
            }
            tracing::warn!(method, pause = ?pause, "CRM rate limit hit; pausing CRM requests.");
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
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;
    use crate::{
        crm::retailcrm::{RetailCrm, RetailCrmConfig},
        domain::phone_number::PhoneNormalizer,
        testing::fake_retailcrm::{FakeCrmConfig, FakeRetailCrm, Fault, FaultRule},
    };

    #[tokio::test]
    async fn a_saturated_general_budget_does_not_delay_a_pop_up() {
        let fake = FakeRetailCrm::start(FakeCrmConfig {
            rate_limit_rps: None,
            telephony_rate_limit_rps: None,
            ..FakeCrmConfig::default()
        })
        .await;
        // The CRM rate-limits the next general request: the general budget pauses too.
        fake.add_fault_rule(
            FaultRule::new(Fault::Status503)
                .on_path("/api/v5/reference/statuses")
                .times(1),
        );
        let inner = RetailCrm::new(
            RetailCrmConfig {
                base_url: fake.base_url().parse().expect("URL"),
                api_key: SecretString::from(fake.api_key().to_owned()),
                timeout: Duration::from_secs(5),
                site: Some("shop1".to_owned()),
            },
            PhoneNormalizer::new("UA").expect("region"),
        )
        .expect("adapter");
        let crm = Arc::new(LimitedCrm::new(
            Arc::new(inner),
            1,
            40,
            Arc::new(Metrics::default()),
        ));
        assert!(matches!(
            crm.status_groups().await,
            Err(CrmError::RateLimited { .. })
        ));
        // Five more general requests queue behind the 1 s pause and the 1 rps limiter.
        let general: Vec<_> = (0..5)
            .map(|_| {
                let crm = crm.clone();
                tokio::spawn(async move { crm.status_groups().await })
            })
            .collect();
        let started = Instant::now();
        let notice = CallEventNotice {
            phone: PhoneNumber::from_e164("+380981234567").expect("number"),
            event_type: crate::domain::crm_model::CallEventType::In,
            codes: Vec::new(),
            user_ids: vec![crate::domain::manager::ManagerId(1)],
            site: Some("shop1".to_owned()),
            external_phone: None,
            call_external_id: Some("c1".to_owned()),
            hangup_status: None,
        };
        crm.call_event(&notice).await.expect("pop-up sent");
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "the pop-up waited behind general work: {took:?}"
        );
        assert_eq!(fake.call_events().len(), 1);
        for g in general {
            g.abort();
        }
    }

    #[test]
    fn even_quota_allows_no_burst() {
        let limiter = RateLimiter::direct(even_quota(10).expect("quota"));
        assert!(limiter.check().is_ok());
        assert!(
            limiter.check().is_err(),
            "a second request at once must wait"
        );
        assert!(even_quota(0).is_none(), "0 means unlimited");
    }
}
