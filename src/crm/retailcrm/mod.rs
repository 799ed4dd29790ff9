//! retailCRM API v5 adapter of the [`Crm`] port (PROTOCOLS §2).
//!
//! Design:
//! - One pooled [`reqwest::Client`] per adapter. `X-API-KEY` is a default header marked
//!   sensitive, so it is on every request and never in logs or `Debug` output.
//! - Reads are `GET` with bracketed query parameters; writes are
//!   `application/x-www-form-urlencoded` with the entity as a JSON string in one field
//!   (`customer=…`, `order=…`, `task=…`, `event=…`, `calls=…`, `integrationModule=…`).
//! - Every answer goes through [`classify`] exactly once, which turns it into either the
//!   JSON body of a `success:true` answer or a [`CrmError`]. Callers never look at HTTP
//!   statuses themselves (except `register_module`, which reports 201 vs 200).
//! - Redirects are not followed: a `POST` turned into a `GET` by a 301 would silently lose
//!   the write, and a moved account is an operator's fix ([`CrmError::NotApi`]).
//! - Wire DTOs live in the private `dto` module. Reads accept the API's known variations
//!   (ids as numeric strings, empty maps as `[]`).
//!
//! Nothing here retries: [`CrmError::is_retryable`] tells the caller's worker what to do.
//! Phone numbers appear in spans and events only through `PhoneNumber`'s masking
//! `Display`.

mod dto;

use std::{fmt, time::Duration};

use async_trait::async_trait;
use chrono::NaiveDateTime;
use reqwest::{
    StatusCode,
    header::{HeaderMap, HeaderValue, RETRY_AFTER},
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use url::Url;

use self::dto::{
    CallDto, CallEventDto, Created, CustomerAnswer, CustomerDto, CustomersPage, HistoryAnswer,
    HistoryDto, IdRef, ManagerAnswer, ModuleEditAnswer, NewCustomerDto, NewOrderDto, NewPhoneDto,
    OrderAnswer, OrderDto, OrdersPage, Pagination, SourceDto, StatusesAnswer, TaskDto, TasksPage,
    UploadAnswer, UsersPage,
};
use super::{
    CallEventNotice, CallEventType, CallRecord, Crm, CrmCustomer, CrmError, CrmOrder, CrmUser,
    CustomerId, CustomerSnapshot, CustomersPage as CustomersPageOut, HistoryChange, HistoryCursor,
    HistoryPage, HistoryRecord, NewCustomer, NewOrder, NewTask, OrderHistoryChange,
    OrderHistoryRecord, OrderId, OrderSnapshot, OrdersPage as OrdersPageOut, ResponsibleManager,
    StatusGroups, TaskId, TaskLink, TaskMark, TaskUpdate, UploadOutcome,
    budget::{Class, Gate},
};
use crate::domain::{
    manager::ManagerId,
    phone_number::{PhoneNormalizer, PhoneNumber},
};

/// Page size for list methods (one of the API's allowed 20/50/100/250).
const PAGE_LIMIT: u32 = 100;
/// Hard stop for list walks, so a CRM that keeps reporting more pages cannot loop us.
const MAX_PAGES: u32 = 200;
/// Pages of a phone search. It runs in the pre-call lookup, and a number shared by more
/// than 500 customers is not one callgate can route by anyway.
const MAX_SEARCH_PAGES: u32 = 5;
/// `telephony/calls/upload` takes at most this many calls per request.
pub const CALLS_UPLOAD_CHUNK: usize = 50;
/// How much of a non-API body is kept in errors.
const SNIPPET_CHARS: usize = 200;
/// `datetime` of tasks.
const TASK_DATETIME_FORMAT: &str = "%Y-%m-%d %H:%M";
/// `date` of uploaded calls and every other date-time of the API.
const DATETIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// How to reach one retailCRM account.
#[derive(Debug, Clone)]
pub struct RetailCrmConfig {
    /// The account URL, such as `https://shop.retailcrm.ru`; the adapter appends
    /// `/api/v5/` (a URL already ending in `/api/v5` is accepted as is).
    pub base_url: Url,
    /// API key, sent as `X-API-KEY`. `SecretString`'s `Debug` redacts it.
    pub api_key: SecretString,
    /// Whole-request timeout (connect, send, read the body).
    pub timeout: Duration,
    /// Default store code, used where a method's own site is empty or absent
    /// (`create_task`, `call_event`, `upload_calls`, and empty `site` arguments).
    pub site: Option<String>,
}

/// The adapter could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum RetailCrmBuildError {
    /// The base URL cannot carry a path (`mailto:`, `data:` and the like).
    #[error("retailCRM base URL {0} cannot carry the API path")]
    BaseUrl(String),
    /// The key holds characters an HTTP header cannot carry.
    #[error("retailCRM API key is not a valid HTTP header value")]
    ApiKey,
    /// reqwest could not build its client (TLS backend).
    #[error("failed to build the HTTP client for retailCRM")]
    Client(#[source] reqwest::Error),
}

/// Outcome of [`RetailCrm::register_module`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModuleRegistration {
    /// 201: the module was new. 200: an existing module was edited.
    pub created: bool,
    /// `additionalCodes` users the CRM does not know (`info.notExistUsersIds`).
    pub unknown_user_ids: Vec<ManagerId>,
    /// `externalPhones` stores the CRM does not know (`info.notExistSiteCodes`).
    pub unknown_site_codes: Vec<String>,
}

/// The telephony integration module callgate registers (`integrationModule=`,
/// PROTOCOLS §2.4). Serialized as is, in the API's camelCase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IntegrationModule {
    /// Must start with `integration_code` (equal is always valid).
    pub code: String,
    pub integration_code: String,
    pub active: bool,
    pub name: String,
    /// SVG logo URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logo: Option<String>,
    /// Identifies the account when retailCRM calls `makeCallUrl`.
    pub client_id: String,
    pub base_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_url: Option<String>,
    pub integrations: ModuleIntegrations,
}

/// `integrations` of a module; callgate only has telephony.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleIntegrations {
    pub telephony: TelephonyIntegration,
}

/// `integrations.telephony` (PHP `TelephonyConfiguration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TelephonyIntegration {
    pub make_call_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_user_status_url: Option<String>,
    /// `false`: settings are editable only through the API.
    pub allow_edit: bool,
    pub input_event_supported: bool,
    pub output_event_supported: bool,
    pub hangup_event_supported: bool,
    pub additional_codes: Vec<AdditionalCode>,
    pub external_phones: Vec<ExternalPhone>,
}

/// User ↔ extension code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdditionalCode {
    pub user_id: ManagerId,
    pub code: String,
}

/// Store ↔ tracking/external number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalPhone {
    pub site_code: String,
    pub external_phone: String,
}

/// The retailCRM API v5 adapter.
#[derive(Clone)]
pub struct RetailCrm {
    /// The CRM budget every HTTP request takes a token from (none: unlimited).
    gate: Option<Gate>,
    http: reqwest::Client,
    /// `…/api/v5/`, always ending in `/`.
    api: Url,
    timeout: Duration,
    site: Option<String>,
    normalizer: PhoneNormalizer,
}

impl fmt::Debug for RetailCrm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key lives only inside the client's default headers; never print it.
        f.debug_struct("RetailCrm")
            .field("api", &self.api.as_str())
            .field("timeout", &self.timeout)
            .field("site", &self.site)
            .finish_non_exhaustive()
    }
}

/// A `success:true` answer.
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Answer {
    /// The body as a typed DTO. A success body of the wrong shape is not the API we know.
    fn parse<T: DeserializeOwned>(self) -> Result<T, CrmError> {
        let status = self.status.as_u16();
        serde_json::from_value(self.body).map_err(|e| CrmError::NotApi {
            status,
            snippet: format!("unexpected response shape: {e}"),
        })
    }
}

impl RetailCrm {
    /// Builds the adapter and its pooled HTTP client.
    pub fn new(
        cfg: RetailCrmConfig,
        normalizer: PhoneNormalizer,
    ) -> Result<Self, RetailCrmBuildError> {
        let api = api_base(&cfg.base_url)?;
        let mut key = HeaderValue::from_str(cfg.api_key.expose_secret())
            .map_err(|_| RetailCrmBuildError::ApiKey)?;
        key.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert("X-API-KEY", key);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("callgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(RetailCrmBuildError::Client)?;
        Ok(RetailCrm {
            gate: None,
            http,
            api,
            timeout: cfg.timeout,
            site: cfg.site.filter(|s| !s.is_empty()),
            normalizer,
        })
    }

    /// `POST integration-modules/{code}/edit`: creates or updates the telephony module.
    /// Unknown users and stores come back in a *successful* answer; they are reported in
    /// [`ModuleRegistration`] and logged, not turned into an error.
    #[tracing::instrument(skip_all, fields(method = "integration-modules/edit"))]
    pub async fn register_module(
        &self,
        module: &IntegrationModule,
    ) -> Result<ModuleRegistration, CrmError> {
        let json = to_json(module)?;
        let answer = self
            .post_form(
                &["integration-modules", &module.code, "edit"],
                &[("integrationModule", json)],
            )
            .await?;
        let created = answer.status == StatusCode::CREATED;
        let info = answer.parse::<ModuleEditAnswer>()?.info.unwrap_or_default();
        let outcome = ModuleRegistration {
            created,
            unknown_user_ids: info
                .not_exist_users_ids
                .into_iter()
                .map(ManagerId)
                .collect(),
            unknown_site_codes: info.not_exist_site_codes,
        };
        if !outcome.unknown_user_ids.is_empty() || !outcome.unknown_site_codes.is_empty() {
            tracing::warn!(
                unknown_user_ids = ?outcome.unknown_user_ids,
                unknown_site_codes = ?outcome.unknown_site_codes,
                "retailCRM accepted the telephony module but does not know some of its users or stores."
            );
        }
        Ok(outcome)
    }

    /// The same adapter (one HTTP client) taking a token from `gate` before every HTTP
    /// request, each page of a paged read included.
    pub fn with_gate(&self, gate: Gate) -> RetailCrm {
        RetailCrm {
            gate: Some(gate),
            ..self.clone()
        }
    }

    /// `GET integration-modules/{code}`: the module as retailCRM holds it, `None` when there
    /// is none (404).
    #[tracing::instrument(skip_all, fields(method = "integration-modules/get"))]
    pub async fn get_module(&self, code: &str) -> Result<Option<Value>, CrmError> {
        match self.get(&["integration-modules", code], &[]).await {
            Ok(answer) => Ok(answer.body.get("integrationModule").cloned()),
            Err(CrmError::Rejected { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The store code to send: the given one when not empty, else the configured default.
    fn site_or_default<'a>(&'a self, given: Option<&'a str>) -> Option<&'a str> {
        given.filter(|s| !s.is_empty()).or(self.site.as_deref())
    }

    /// `api` + path segments, each percent-encoded (external ids may hold anything).
    fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.api.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            // `api` ends in `/`: drop the empty last segment before appending.
            path.pop_if_empty().extend(segments);
        }
        url
    }

    async fn get(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Answer, CrmError> {
        let req = self.http.get(self.endpoint(segments)).query(query);
        self.send(segments, req).await
    }

    async fn post_form(
        &self,
        segments: &[&str],
        form: &[(&str, String)],
    ) -> Result<Answer, CrmError> {
        let req = self.http.post(self.endpoint(segments)).form(form);
        self.send(segments, req).await
    }

    /// Sends one request (after taking its token) and classifies the answer.
    async fn send(
        &self,
        segments: &[&str],
        req: reqwest::RequestBuilder,
    ) -> Result<Answer, CrmError> {
        let first = segments.first().copied().unwrap_or("");
        if let Some(gate) = &self.gate {
            gate.admit(Class::of_path(first)).await;
        }
        let result = self.exchange(req).await;
        if let Some(gate) = &self.gate {
            gate.observe(first, Class::of_path(first), &result);
        }
        result
    }

    async fn exchange(&self, req: reqwest::RequestBuilder) -> Result<Answer, CrmError> {
        let resp = req.send().await.map_err(|e| self.transport_error(e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| self.transport_error(e))?;
        let result = classify(status, &headers, &body);
        match &result {
            Ok(_) => tracing::debug!(status = status.as_u16(), "retailCRM answered."),
            Err(e) => tracing::debug!(
                status = status.as_u16(),
                kind = e.kind(),
                error = %e,
                "retailCRM refused or failed the request."
            ),
        }
        result.map(|body| Answer { status, body })
    }

    fn transport_error(&self, e: reqwest::Error) -> CrmError {
        if e.is_timeout() {
            CrmError::Timeout(self.timeout)
        } else {
            // reqwest's Display includes the URL, which carries no secret (the key is a
            // header); strip it anyway so query strings with phone digits stay out of logs.
            CrmError::Transport(Box::new(e.without_url()))
        }
    }

    /// Walks every page of a list method, `limit=100&page=n` until `totalPageCount`.
    async fn all_pages<P, T>(
        &self,
        segments: &[&str],
        filter: &[(&str, String)],
        max_pages: u32,
        split: impl Fn(P) -> (Vec<T>, Option<Pagination>),
    ) -> Result<Vec<T>, CrmError>
    where
        P: DeserializeOwned,
    {
        let mut out = Vec::new();
        let mut page = 1u32;
        loop {
            let mut query = filter.to_vec();
            query.push(("limit", PAGE_LIMIT.to_string()));
            query.push(("page", page.to_string()));
            let (items, pagination) = split(self.get(segments, &query).await?.parse::<P>()?);
            let got = items.len();
            out.extend(items);
            let total = pagination.as_ref().and_then(|p| p.total_page_count);
            let current = pagination.and_then(|p| p.current_page).unwrap_or(page);
            let more = matches!(total, Some(total) if current < total);
            if !more || got == 0 {
                break;
            }
            if page >= max_pages {
                tracing::warn!(
                    pages = page,
                    "retailCRM list is longer than callgate walks; the rest is ignored."
                );
                break;
            }
            page = current + 1;
        }
        Ok(out)
    }

    /// Whether a stored phone normalizes to `phone`. The local comparison is what makes
    /// `filter[name]`'s unknown matching rules (substring? name? email?) safe.
    fn same_phone(&self, raw: &str, phone: &PhoneNumber) -> bool {
        self.normalizer
            .parse(raw)
            .is_ok_and(|parsed| parsed.number == *phone)
    }
}

#[async_trait]
impl Crm for RetailCrm {
    #[tracing::instrument(skip_all, fields(method = "telephony/manager", phone = %phone))]
    async fn responsible_manager(
        &self,
        phone: &PhoneNumber,
    ) -> Result<ResponsibleManager, CrmError> {
        // The national significant number: the CRM's phone search may match the query's
        // digits as a substring of the number as stored (PROTOCOLS §2.6), and only the NSN is
        // in every typed form (`0981234567`, `(098) 123-45-67`, `+38 098 …`); the
        // international digits miss a number stored nationally. A substring can also hit a
        // longer number, so the answer's customer is checked locally.
        let query = [
            ("phone", national_significant_number(phone)),
            ("details", "1".to_owned()),
            ("ignoreStatus", "1".to_owned()),
        ];
        let answer = match self.get(&["telephony", "manager"], &query).await {
            Ok(a) => a.parse::<ManagerAnswer>()?,
            Err(e) if is_not_found(&e) => return Ok(ResponsibleManager::default()),
            Err(e) => return Err(e),
        };
        let (manager_id, manager_code) = match answer.manager {
            Some(m) => (m.id.map(ManagerId), m.code),
            None => (None, None),
        };
        let customer = answer.customer.filter(|c| c.id.is_some());
        if customer.is_none() && manager_id.is_none() {
            return Ok(ResponsibleManager::default());
        }
        let verified = customer.as_ref().is_some_and(|c| {
            c.phones
                .iter()
                .filter_map(|p| p.number.as_deref())
                .any(|raw| self.same_phone(raw, phone))
        });
        if verified {
            return Ok(ResponsibleManager {
                manager_id,
                manager_code,
                customer_id: customer.and_then(|c| c.id).map(CustomerId),
            });
        }
        // The CRM's pick is another number containing these digits (or it came without the
        // customer's phones): search the customers and keep only true matches, the most
        // recently created first (SPEC §2).
        tracing::debug!(
            "telephony/manager answered a customer of another number; searching customers."
        );
        let found = self.find_customers_by_phone(phone).await?;
        Ok(match found.into_iter().next() {
            Some(c) => ResponsibleManager {
                manager_id: c.manager_id,
                manager_code: None,
                customer_id: Some(c.id),
            },
            None => ResponsibleManager::default(),
        })
    }

    #[tracing::instrument(skip_all, fields(method = "users"))]
    async fn list_users(&self) -> Result<Vec<CrmUser>, CrmError> {
        let users = self
            .all_pages(&["users"], &[], MAX_PAGES, |p: UsersPage| {
                (p.users, p.pagination)
            })
            .await?;
        Ok(users
            .into_iter()
            .map(|u| CrmUser {
                id: ManagerId(u.id),
                // Booleans are always present in the fixtures; a missing one fails closed.
                active: u.active.unwrap_or(false),
                is_manager: u.is_manager.unwrap_or(false),
                status: u.status.and_then(|s| s.parse().ok()),
                online: u.online,
                first_name: u.first_name,
                last_name: u.last_name,
            })
            .collect())
    }

    #[tracing::instrument(skip_all, fields(method = "customers", phone = %phone))]
    async fn find_customers_by_phone(
        &self,
        phone: &PhoneNumber,
    ) -> Result<Vec<CrmCustomer>, CrmError> {
        let filter = [("filter[name]", national_significant_number(phone))];
        let found = self
            .all_pages(
                &["customers"],
                &filter,
                MAX_SEARCH_PAGES,
                |p: CustomersPage| (p.customers, p.pagination),
            )
            .await?;
        let searched = found.len();
        let mut matches: Vec<CrmCustomer> = found
            .into_iter()
            .filter(|c| {
                c.phones
                    .iter()
                    .filter_map(|p| p.number.as_deref())
                    .any(|raw| self.same_phone(raw, phone))
            })
            .map(customer_from_dto)
            .collect();
        // `Y-m-d H:i:s` sorts chronologically as text; newest first, unknown dates last,
        // then the higher (newer) id first.
        matches.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        tracing::debug!(
            searched,
            matched = matches.len(),
            "Compared customer phones locally."
        );
        Ok(matches)
    }

    #[tracing::instrument(skip_all, fields(method = "customers/get"))]
    async fn customer_by_external_id(
        &self,
        external_id: &str,
        site: &str,
    ) -> Result<Option<CrmCustomer>, CrmError> {
        if external_id.is_empty() {
            // An empty segment would address the list method `customers/`.
            return Ok(None);
        }
        let query = by_external_id(self.site_or_default(Some(site)));
        match self.get(&["customers", external_id], &query).await {
            Ok(a) => Ok(a.parse::<CustomerAnswer>()?.customer.map(customer_from_dto)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    #[tracing::instrument(skip_all, fields(method = "customers/create"))]
    async fn create_customer(
        &self,
        site: &str,
        customer: &NewCustomer,
    ) -> Result<CustomerId, CrmError> {
        let ga = customer.ga_client_id.as_deref().filter(|s| !s.is_empty());
        let dto = NewCustomerDto {
            external_id: &customer.external_id,
            phones: customer
                .phones
                .iter()
                .map(|p| NewPhoneDto { number: p.e164() })
                .collect(),
            manager_id: customer.manager_id.map(|m| m.0),
            source: SourceDto::from_utm(&customer.source),
            first_client_id: ga,
            last_client_id: ga,
        };
        let mut form = vec![("customer", to_json(&dto)?)];
        push_site(&mut form, self.site_or_default(Some(site)));
        let created: Created = self
            .post_form(&["customers", "create"], &form)
            .await?
            .parse()?;
        Ok(CustomerId(created.id))
    }

    #[tracing::instrument(skip_all, fields(method = "orders", customer = %customer))]
    async fn customer_orders(&self, customer: CustomerId) -> Result<Vec<CrmOrder>, CrmError> {
        let filter = [("filter[customerId]", customer.0.to_string())];
        let mut orders: Vec<CrmOrder> = self
            .all_pages(&["orders"], &filter, MAX_PAGES, |p: OrdersPage| {
                (p.orders, p.pagination)
            })
            .await?
            .into_iter()
            .map(order_from_dto)
            .collect();
        orders.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        Ok(orders)
    }

    #[tracing::instrument(skip_all, fields(method = "orders/get"))]
    async fn order_by_external_id(
        &self,
        external_id: &str,
        site: &str,
    ) -> Result<Option<CrmOrder>, CrmError> {
        if external_id.is_empty() {
            return Ok(None);
        }
        let query = by_external_id(self.site_or_default(Some(site)));
        match self.get(&["orders", external_id], &query).await {
            Ok(a) => Ok(a.parse::<OrderAnswer>()?.order.map(order_from_dto)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    #[tracing::instrument(skip_all, fields(method = "orders/create"))]
    async fn create_order(&self, site: &str, order: &NewOrder) -> Result<OrderId, CrmError> {
        let dto = NewOrderDto {
            external_id: &order.external_id,
            order_method: &order.order_method,
            status: order.status.as_deref().filter(|s| !s.is_empty()),
            manager_id: order.manager_id.map(|m| m.0),
            customer: IdRef {
                id: order.customer_id.0,
            },
            phone: order.phone.e164(),
            source: SourceDto::from_utm(&order.source),
            client_id: order.ga_client_id.as_deref().filter(|s| !s.is_empty()),
        };
        let mut form = vec![("order", to_json(&dto)?)];
        push_site(&mut form, self.site_or_default(Some(site)));
        let created: Created = self
            .post_form(&["orders", "create"], &form)
            .await?
            .parse()?;
        Ok(OrderId(created.id))
    }

    #[tracing::instrument(skip_all, fields(method = "tasks", performer = %performer))]
    async fn task_by_mark(
        &self,
        performer: ManagerId,
        mark: &TaskMark,
    ) -> Result<Option<TaskId>, CrmError> {
        // `filter[performers][]` is the documented filter (PROTOCOLS §2.8); how `text`,
        // `customer` or the date filters match is unknown, so the mark is compared here.
        let filter = [("filter[performers][]", performer.0.to_string())];
        let tasks = self
            .all_pages(&["tasks"], &filter, MAX_PAGES, |p: TasksPage| {
                (p.tasks, p.pagination)
            })
            .await?;
        Ok(tasks
            .into_iter()
            .find(|t| t.commentary.as_deref().is_some_and(|c| mark.is_in(c)))
            .map(|t| TaskId(t.id)))
    }

    #[tracing::instrument(skip_all, fields(method = "tasks/create"))]
    async fn create_task(&self, site: Option<&str>, task: &NewTask) -> Result<TaskId, CrmError> {
        let (order, customer) = match task.link {
            TaskLink::Order(id) => (Some(IdRef { id: id.0 }), None),
            TaskLink::Customer(id) => (None, Some(IdRef { id: id.0 })),
            TaskLink::None => (None, None),
        };
        let dto = TaskDto {
            text: Some(&task.text),
            commentary: task.commentary.as_deref(),
            datetime: Some(format_task_datetime(task.datetime)),
            performer_id: Some(task.performer_id.0),
            complete: Some(task.complete),
            order,
            customer,
            phone: task.phone.as_ref().map(PhoneNumber::e164),
        };
        let mut form = vec![("task", to_json(&dto)?)];
        push_site(&mut form, self.site_or_default(site));
        let created: Created = self.post_form(&["tasks", "create"], &form).await?.parse()?;
        Ok(TaskId(created.id))
    }

    #[tracing::instrument(skip_all, fields(method = "tasks/edit", task = %id))]
    async fn edit_task(&self, id: TaskId, update: &TaskUpdate) -> Result<(), CrmError> {
        let dto = TaskDto {
            text: update.text.as_deref(),
            commentary: update.commentary.as_deref(),
            complete: update.complete,
            ..TaskDto::default()
        };
        // The answer is `{"success":true}`, without `id`.
        self.post_form(
            &["tasks", &id.0.to_string(), "edit"],
            &[("task", to_json(&dto)?)],
        )
        .await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(method = "telephony/call/event", phone = %event.phone))]
    async fn call_event(&self, event: &CallEventNotice) -> Result<(), CrmError> {
        let dto = CallEventDto {
            phone: event.phone.e164(),
            event_type: match event.event_type {
                CallEventType::In => "in",
                CallEventType::Out => "out",
                CallEventType::Hangup => "hangup",
            },
            codes: &event.codes,
            user_ids: event.user_ids.iter().map(|u| u.0).collect(),
            site: self.site_or_default(event.site.as_deref()),
            hangup_status: event.hangup_status.as_deref(),
            external_phone: event.external_phone.as_deref(),
            call_external_id: event.call_external_id.as_deref(),
        };
        // `notExistCodes`/`notExistUsers` may come back; they are optional and unused.
        self.post_form(
            &["telephony", "call", "event"],
            &[("event", to_json(&dto)?)],
        )
        .await?;
        Ok(())
    }

    /// Chunks of at most [`CALLS_UPLOAD_CHUNK`]. A failed chunk fails the whole call after
    /// the earlier chunks were stored; re-uploading is safe because the CRM dedupes by
    /// `externalId` and reports repeats in `duplicateCalls`.
    #[tracing::instrument(skip_all, fields(method = "telephony/calls/upload", calls = calls.len()))]
    async fn upload_calls(&self, calls: &[CallRecord]) -> Result<UploadOutcome, CrmError> {
        let mut outcome = UploadOutcome::default();
        for chunk in calls.chunks(CALLS_UPLOAD_CHUNK) {
            let dtos: Vec<CallDto<'_>> = chunk.iter().map(|c| self.call_dto(c)).collect();
            let answer: UploadAnswer = self
                .post_form(
                    &["telephony", "calls", "upload"],
                    &[("calls", to_json(&dtos)?)],
                )
                .await?
                .parse()?;
            let duplicates: Vec<String> = answer
                .duplicate_calls
                .unwrap_or_default()
                .into_iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect();
            // An answer without the count means "all of them", minus reported repeats.
            let processed = answer.processed_calls_count.unwrap_or_else(|| {
                u32::try_from(chunk.len().saturating_sub(duplicates.len())).unwrap_or(u32::MAX)
            });
            outcome.processed = outcome.processed.saturating_add(processed);
            outcome.duplicates.extend(duplicates);
        }
        Ok(outcome)
    }

    #[tracing::instrument(skip_all, fields(method = "reference/statuses"))]
    async fn status_groups(&self) -> Result<StatusGroups, CrmError> {
        let answer: StatusesAnswer = self.get(&["reference", "statuses"], &[]).await?.parse()?;
        Ok(answer
            .statuses
            .into_iter()
            .filter_map(|(key, s)| Some((s.code.unwrap_or(key), s.group?)))
            .collect())
    }

    #[tracing::instrument(skip_all, fields(method = "customers", page))]
    async fn customers_page(&self, page: u32, limit: u32) -> Result<CustomersPageOut, CrmError> {
        let query = [("limit", limit.to_string()), ("page", page.to_string())];
        let answer = self
            .get(&["customers"], &query)
            .await?
            .parse::<CustomersPage>()?;
        Ok(CustomersPageOut {
            customers: answer
                .customers
                .into_iter()
                .map(snapshot_from_dto)
                .collect(),
            total_count: answer.pagination.as_ref().and_then(|p| p.total_count),
            total_pages: answer.pagination.and_then(|p| p.total_page_count),
        })
    }

    #[tracing::instrument(skip_all, fields(method = "customers/get"))]
    async fn customer_by_id(&self, id: CustomerId) -> Result<Option<CustomerSnapshot>, CrmError> {
        let query = [("by", "id".to_owned())];
        match self.get(&["customers", &id.to_string()], &query).await {
            Ok(a) => Ok(a.parse::<CustomerAnswer>()?.customer.map(snapshot_from_dto)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    #[tracing::instrument(skip_all, fields(method = "customers/history"))]
    async fn customers_history(
        &self,
        cursor: &HistoryCursor,
        limit: u32,
    ) -> Result<HistoryPage, CrmError> {
        self.history("customers", cursor, limit, history_record_from_dto)
            .await
    }

    #[tracing::instrument(skip_all, fields(method = "orders", page))]
    async fn orders_page(&self, page: u32, limit: u32) -> Result<OrdersPageOut, CrmError> {
        let query = [("limit", limit.to_string()), ("page", page.to_string())];
        let answer = self.get(&["orders"], &query).await?.parse::<OrdersPage>()?;
        Ok(OrdersPageOut {
            orders: answer
                .orders
                .into_iter()
                .map(order_snapshot_from_dto)
                .collect(),
            total_count: answer.pagination.as_ref().and_then(|p| p.total_count),
            total_pages: answer.pagination.and_then(|p| p.total_page_count),
        })
    }

    #[tracing::instrument(skip_all, fields(method = "orders/get"))]
    async fn order_by_id(&self, id: OrderId) -> Result<Option<OrderSnapshot>, CrmError> {
        let query = [("by", "id".to_owned())];
        match self.get(&["orders", &id.to_string()], &query).await {
            Ok(a) => Ok(a.parse::<OrderAnswer>()?.order.map(order_snapshot_from_dto)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    #[tracing::instrument(skip_all, fields(method = "orders/history"))]
    async fn orders_history(
        &self,
        cursor: &HistoryCursor,
        limit: u32,
    ) -> Result<HistoryPage<OrderHistoryRecord>, CrmError> {
        self.history("orders", cursor, limit, order_history_record_from_dto)
            .await
    }
}

impl RetailCrm {
    /// `GET <entity>/history` from `cursor`: one walk for customers and orders.
    async fn history<R>(
        &self,
        entity: &str,
        cursor: &HistoryCursor,
        limit: u32,
        record: fn(HistoryDto) -> Option<R>,
    ) -> Result<HistoryPage<R>, CrmError> {
        // Never `page` with `filter[sinceId]`: retailCRM refuses it with 400 (§2.10).
        let filter = match cursor {
            HistoryCursor::AfterId(id) => ("filter[sinceId]", id.to_string()),
            HistoryCursor::Since(at) => ("filter[startDate]", at.clone()),
        };
        let query = [filter, ("limit", limit.to_string())];
        let answer = self
            .get(&[entity, "history"], &query)
            .await?
            .parse::<HistoryAnswer>()?;
        let received = answer.history.len();
        let last_id = answer.history.iter().map(|r| r.id).max();
        let records = answer.history.into_iter().filter_map(record).collect();
        Ok(HistoryPage {
            records,
            last_id,
            received,
            generated_at: answer.generated_at,
        })
    }
}

impl RetailCrm {
    fn call_dto<'a>(&'a self, c: &'a CallRecord) -> CallDto<'a> {
        CallDto {
            date: c.date.format(DATETIME_FORMAT).to_string(),
            call_type: if c.incoming { "in" } else { "out" },
            phone: &c.phone,
            code: c.code.as_deref().filter(|s| !s.is_empty()),
            user_id: c.user_id.map(|u| u.0),
            result: c.result.as_str(),
            duration: c.duration,
            duration_waiting: c.duration_waiting,
            external_id: &c.external_id,
            record_url: c.record_url.as_deref().filter(|s| !s.is_empty()),
            source: SourceDto::from_utm(&c.source),
            external_phone: c.external_phone.as_deref().filter(|s| !s.is_empty()),
            site: self.site_or_default(c.site.as_deref()),
            client_id: c.ga_client_id.as_deref().filter(|s| !s.is_empty()),
        }
    }
}

/// Classifies one HTTP answer, exactly once (PROTOCOLS §2.2, §2.3):
///
/// | answer | result |
/// |---|---|
/// | 503, 429 | [`CrmError::RateLimited`] with `Retry-After` |
/// | body starting with `<` (HTML) | [`CrmError::NotApi`] |
/// | other 5xx | [`CrmError::Server`] |
/// | 2xx with `success:true` | `Ok(body)` |
/// | 2xx/4xx with `success:false`, or any 4xx with JSON | [`CrmError::Rejected`] |
/// | anything else (3xx, no JSON, no `success`) | [`CrmError::NotApi`] |
fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<Value, CrmError> {
    let code = status.as_u16();
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        return Err(CrmError::RateLimited {
            retry_after: retry_after(headers),
        });
    }
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim_start();
    if trimmed.starts_with('<') {
        return Err(CrmError::NotApi {
            status: code,
            snippet: snippet(trimmed),
        });
    }
    if status.is_server_error() {
        return Err(CrmError::Server {
            status: code,
            body: snippet(trimmed),
        });
    }
    if status.is_redirection() {
        let location = headers
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .unwrap_or("?");
        return Err(CrmError::NotApi {
            status: code,
            snippet: format!("redirected to {location}; check the account URL"),
        });
    }
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        return Err(CrmError::NotApi {
            status: code,
            snippet: snippet(trimmed),
        });
    };
    let success = dto::success_flag(&json);
    if status.is_success() && success == Some(true) {
        return Ok(json);
    }
    if success == Some(false) || status.is_client_error() {
        let errors = dto::flatten_errors(json.get("errors"));
        let message = json
            .get("errorMsg")
            .and_then(Value::as_str)
            .filter(|m| !m.trim().is_empty())
            .map(str::to_owned)
            // An array of errors with an empty `errorMsg`: the first error is the message,
            // as in the PHP client.
            .or_else(|| errors.first().cloned())
            .unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("request refused")
                    .to_owned()
            });
        return Err(CrmError::Rejected {
            status: code,
            message,
            errors,
        });
    }
    Err(CrmError::NotApi {
        status: code,
        snippet: snippet(trimmed),
    })
}

/// `Retry-After` as delay-seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.signed_duration_since(chrono::Utc::now());
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

fn snippet(text: &str) -> String {
    let mut s: String = text.chars().take(SNIPPET_CHARS).collect();
    if text.chars().nth(SNIPPET_CHARS).is_some() {
        s.push('…');
    }
    s
}

/// A 404 "Not found" (or `success:false` "Not found" on 200) means "no such entity".
/// `API method not found` / `Method not found` are a wrong URL, not an empty result.
fn is_not_found(e: &CrmError) -> bool {
    match e {
        CrmError::Rejected {
            status, message, ..
        } => {
            let m = message.to_ascii_lowercase();
            !m.contains("method") && (*status == 404 || m.starts_with("not found"))
        }
        _ => false,
    }
}

/// `…/api/v5/` from the account URL.
fn api_base(base: &Url) -> Result<Url, RetailCrmBuildError> {
    if base.cannot_be_a_base() {
        return Err(RetailCrmBuildError::BaseUrl(base.to_string()));
    }
    let mut api = base.clone();
    api.set_query(None);
    api.set_fragment(None);
    let path = api.path().trim_end_matches('/').to_owned();
    let path = if path.ends_with("/api/v5") {
        format!("{path}/")
    } else {
        format!("{path}/api/v5/")
    };
    api.set_path(&path);
    Ok(api)
}

fn by_external_id(site: Option<&str>) -> Vec<(&'static str, String)> {
    let mut q = vec![("by", "externalId".to_owned())];
    if let Some(site) = site {
        q.push(("site", site.to_owned()));
    }
    q
}

fn push_site(form: &mut Vec<(&str, String)>, site: Option<&str>) {
    if let Some(site) = site {
        form.push(("site", site.to_owned()));
    }
}

/// JSON for a form field. Our DTOs always serialize; the error arm is for completeness.
fn to_json<T: Serialize + ?Sized>(v: &T) -> Result<String, CrmError> {
    serde_json::to_string(v).map_err(|e| CrmError::Transport(Box::new(e)))
}

/// `Y-m-d H:i` for tasks.
fn format_task_datetime(dt: NaiveDateTime) -> String {
    dt.format(TASK_DATETIME_FORMAT).to_string()
}

/// The national significant number (`+380981234567` → `981234567`): the part every
/// human-typed form of the number contains (`0981234567`, `+38 098 …`, `80981234567`).
/// Falls back to all the digits when libphonenumber does not know the country code.
fn national_significant_number(phone: &PhoneNumber) -> String {
    match phone.e164().parse::<rlibphonenumber::PhoneNumber>() {
        Ok(n) => n.get_national_significant_number(),
        Err(_) => phone.e164().trim_start_matches('+').to_owned(),
    }
}

fn snapshot_from_dto(c: CustomerDto) -> CustomerSnapshot {
    CustomerSnapshot {
        id: CustomerId(c.id),
        manager: c.manager_id.map(ManagerId),
        phones: c.phones.into_iter().filter_map(|p| p.number).collect(),
        created_at: c.created_at,
    }
}

/// An id given as a number or a numeric string.
fn json_id(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A phone value of a `phones` record: the number itself (a string, or a number).
fn json_phone(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        // Some accounts may send `{"number": …}`; accept it too.
        Value::Object(o) => o.get("number").and_then(json_phone),
        _ => None,
    }
}

/// The domain's view of a history record; `None` when it names no customer.
fn history_record_from_dto(r: HistoryDto) -> Option<HistoryRecord> {
    let customer = CustomerId(json_id(&r.customer["id"])?);
    let change = if r.created == Some(true) {
        let dto = serde_json::from_value::<CustomerDto>(r.customer).ok()?;
        HistoryChange::Created(snapshot_from_dto(dto))
    } else if r.deleted == Some(true) {
        HistoryChange::Deleted {
            combined_to: json_id(&r.combined_to["id"]).map(CustomerId),
        }
    } else {
        match r.field.as_deref() {
            Some("manager") => HistoryChange::Manager(json_id(&r.new_value["id"]).map(ManagerId)),
            Some("phones") => HistoryChange::Phone {
                old: json_phone(&r.old_value),
                new: json_phone(&r.new_value),
            },
            _ => HistoryChange::Other,
        }
    };
    Some(HistoryRecord {
        id: r.id,
        created_at: r.created_at,
        customer,
        change,
    })
}

/// The domain's view of an `orders/history` record; `None` when it names no order.
/// [UNCONFIRMED] shapes, by analogy with `customers/history` (PROTOCOLS §2.10): the record
/// carries `order` (whole on `created`, else a reference with `id`); `status` changes carry
/// `{"code": …}` (a bare code is accepted too); `manager` changes `{"id": …}` or `null`.
fn order_history_record_from_dto(r: HistoryDto) -> Option<OrderHistoryRecord> {
    let order = OrderId(json_id(&r.order["id"])?);
    let change = if r.created == Some(true) {
        let dto = serde_json::from_value::<OrderDto>(r.order).ok()?;
        OrderHistoryChange::Created(order_snapshot_from_dto(dto))
    } else if r.deleted == Some(true) {
        OrderHistoryChange::Deleted {
            combined_to: json_id(&r.combined_to["id"]).map(OrderId),
        }
    } else {
        match r.field.as_deref() {
            Some("status") => match &r.new_value {
                Value::String(code) => OrderHistoryChange::Status(code.clone()),
                v => match v["code"].as_str() {
                    Some(code) => OrderHistoryChange::Status(code.to_owned()),
                    // A status change we cannot read: have the order read again.
                    None => OrderHistoryChange::Unreadable,
                },
            },
            Some("manager") => {
                OrderHistoryChange::Manager(json_id(&r.new_value["id"]).map(ManagerId))
            }
            Some("customer" | "contact") => OrderHistoryChange::Customer,
            _ => OrderHistoryChange::Other,
        }
    };
    Some(OrderHistoryRecord {
        id: r.id,
        order,
        change,
    })
}

fn order_snapshot_from_dto(o: OrderDto) -> OrderSnapshot {
    OrderSnapshot {
        id: OrderId(o.id),
        customer: o.customer.and_then(|c| c.id).map(CustomerId),
        status: o.status.unwrap_or_default(),
        manager: o.manager_id.map(ManagerId),
        created_at: o.created_at,
    }
}

fn customer_from_dto(c: CustomerDto) -> CrmCustomer {
    CrmCustomer {
        id: CustomerId(c.id),
        external_id: c.external_id,
        manager_id: c.manager_id.map(ManagerId),
        phones: c.phones.into_iter().filter_map(|p| p.number).collect(),
        created_at: c.created_at,
    }
}

fn order_from_dto(o: OrderDto) -> CrmOrder {
    CrmOrder {
        id: OrderId(o.id),
        external_id: o.external_id,
        status: o.status.unwrap_or_default(),
        manager_id: o.manager_id.map(ManagerId),
        customer_id: o.customer.and_then(|c| c.id).map(CustomerId),
        created_at: o.created_at,
    }
}

#[cfg(test)]
mod tests;
