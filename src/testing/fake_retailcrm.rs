//! A strict, stateful fake of retailCRM API v5, served over real HTTP.
//!
//! [`FakeRetailCrm::start`] binds `127.0.0.1:0`, spawns an axum server and returns a handle
//! that seeds data, inspects what callgate did, scripts faults and reads rate statistics.
//! The handle is cheap to clone; the server stops when the last clone is dropped.
//!
//! # What is faithful (PROTOCOLS.md §2)
//! - Transport (§2.1): the key is read from `X-API-KEY`, else an `apiKey` query or form
//!   parameter. POST bodies must be `application/x-www-form-urlencoded`, with nested
//!   structures as a JSON string in one field (`customer=`, `order=`, `task=`, `event=`,
//!   `calls=`, `integrationModule=`). Any other body (JSON in particular) is not parsed, so
//!   the field is missing: 400 `Parameter 'task' is missing`.
//! - Envelope (§2.2): `{"success":true,…}`; `*/create` answers **201**, reads and edits 200;
//!   `tasks/{id}/edit` answers `{"success":true}` without `id`; empty maps are `[]`
//!   (`customFields`, `info`). Errors are `{"success":false,"errorMsg":…,"errors":…}`:
//!   validation errors carry an **object** keyed by field; [`Fault::ErrorsArray`] produces
//!   the **array** shape with an empty `errorMsg`.
//! - Error strings and statuses (§2.2): 403 `Wrong "apiKey" value.`, 403 `Access denied.`,
//!   400 `Parameter '<name>' is missing`, 400 `Errors in the entity format`,
//!   400 `Errors in the input parameters`, 404 `Not found`, 404 `API method not found`,
//!   404 `Not found map` (orders edit), 503 `Rate limit exceeded`.
//! - Rate limits (§2.3): per API key, 10 rps in general and 40 rps for `/telephony/*`, over
//!   a sliding one-second window; over the limit → 503 `Rate limit exceeded`.
//! - Formats and vocabularies (§2.1, §2.6, §2.8): task `datetime` is exactly `Y-m-d H:i`,
//!   call `date` exactly `Y-m-d H:i:s`; calls/upload `result` in
//!   `answered|busy|failed|no answer|not allowed|unknown`, at most 50 calls, duplicates by
//!   `externalId` reported in `duplicateCalls` and not stored twice; call/event `type` in
//!   `in|out|hangup`, `hangupStatus` in `answered|busy|cancel|failed|no answered`; user status
//!   `free|busy|dinner|break`; `limit` in `20|50|100|250`; filter booleans `1|0|true|false`.
//! - Read shapes differ from write shapes where retailCRM's do (§2.8): tasks read back with
//!   `performer` + `performerType`, never `performerId`; users carry no extension `code`
//!   (§2.7); `manager.code` in `telephony/manager` comes from the telephony module's
//!   `additionalCodes` (§2.4), else from the code seeded on the [`FakeUser`].
//! - Integration modules (§2.4): upsert, 201 on create / 200 on edit, `info: []` or
//!   `notExistUsersIds`/`notExistSiteCodes`; `code` must start with `integrationCode`.
//! - Status groups (§2.8): maps keyed by code; default groups `new`, `approval`,
//!   `assembling`, `delivery`, `complete`, `cancel` (`process` false for new/complete/cancel).
//!
//! # What is assumed (UNCONFIRMED upstream; callgate must not rely on it)
//! - `"apiKey" is missing.` is answered with **400** (PROTOCOLS §2.2 leaves the status open;
//!   the PHP factory test builds it with 400).
//! - Validation error keys are plain field names (`datetime`, `performerId`, `customer`),
//!   and `calls[3][result]` for a call in a batch; the messages are ours.
//! - Phone matching in `telephony/manager?phone=` and `customers?filter[name]=` is the
//!   strictest plausible rule (PROTOCOLS §2.6, §2.8): the query's digits must be a substring
//!   of a stored number's digits, as stored (`filter[name]` needs at least 3 digits, else it
//!   searches first/last name and email as text). A search for `380981234567` does not find
//!   a stored `0981234567`; the national significant number `981234567` finds every typed
//!   form, and also `0981234567` inside a longer number: callers must check the answer.
//!   In `telephony/manager` the first (lowest id) matching customer wins. Without
//!   `ignoreStatus=1` a manager whose status is not `free` is left out. No match answers
//!   `{"success":true,"links":{…}}` with neither `manager` nor `customer` (§2.6, §4 item 6).
//!   `customer` is only present with `details=1`.
//! - `customers` lists in id order (so `page` walks are stable while nothing is deleted).
//! - `customers/history` (§2.10): see `handlers/history.rs` for the record shapes. Changes
//!   made through the API and by hand ([`FakeRetailCrm::edit_customer_by_hand`],
//!   [`FakeRetailCrm::delete_customer_by_hand`], [`FakeRetailCrm::merge_customers_by_hand`],
//!   seeding with [`FakeRetailCrm::add_customer`]) all leave records.
//! - `orders/history`: the same walk and rules; orders created or edited through the API and
//!   by hand ([`FakeRetailCrm::add_order`], [`FakeRetailCrm::set_order_status_by_hand`],
//!   [`FakeRetailCrm::set_order_manager_by_hand`], [`FakeRetailCrm::delete_order_by_hand`])
//!   leave records; shapes in `handlers/history.rs`.
//! - `orders` lists in id order, as `customers` does.
//! - `orders/create` without `customer` creates a customer from the order's
//!   `firstName`/`lastName`/`phone`/`email`; `status` defaults to `new`.
//! - calls/upload: a batch with any invalid call is refused as a whole (400);
//!   `processedCallsCount` counts the calls stored (duplicates excluded);
//!   `duplicateCalls` is always present unless [`FakeCrmConfig::omit_empty_duplicate_calls`].
//! - Unknown top-level entity fields are accepted and ignored, and recorded in
//!   [`FakeRetailCrm::unknown_fields`].
//! - Only requests that pass authentication count against the rate limit; the limit is
//!   checked before routing, so a 404 still counts. Requests answered by an injected fault
//!   are not counted.
//! - A known path with the wrong HTTP method answers 404 `API method not found`.
//! - With [`FakeCrmConfig::require_telephony_module`], telephony methods without an active
//!   module with `integrations.telephony` answer 400 `Telephony not enabled` (the status is
//!   ours; the Python mocks send it with 200).
//!
//! # Faults
//! Faults are checked first, before authentication: they stand for the network, a proxy or
//! the account being broken. [`Fault::Hang`] parks the request until
//! [`FakeRetailCrm::clear_faults`] or [`FakeRetailCrm::set_fault`] is called, the fake is
//! dropped, or [`FakeCrmConfig::max_hang`] passes; then the request proceeds normally (auth,
//! rate limit, routing). A client that gives up earlier simply drops the connection, and the
//! request is never processed. [`Fault::AnswerLost`] processes the request first and then
//! holds its answer the same way (the write is applied, the client never learns it).
//!
//! # Locks
//! State sits behind one `std::sync::Mutex`, never held across an `.await`. A poisoned lock
//! means a handler panicked, which is a bug in the fake: [`FakeRetailCrm`] methods then panic
//! too (`expect`), the only panics outside tests.

mod handlers;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::to_bytes,
    extract::{Request, State as AxumState},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::watch};
use tokio_util::sync::{CancellationToken, DropGuard};

/// Largest request body the fake reads; larger bodies get 413.
const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Path prefix of the versioned API.
pub const API_V5_PREFIX: &str = "/api/v5/";

/// Message of a poisoned-lock panic (see the module docs, "Locks").
const POISONED: &str = "fake retailCRM state lock poisoned: a handler panicked";

// === Configuration ===

/// Settings of a [`FakeRetailCrm`]. `Default` gives a single store `shop1`, key
/// `fake-api-key`, 10/40 rps.
#[derive(Debug, Clone)]
pub struct FakeCrmConfig {
    /// The only valid API key.
    pub api_key: String,
    /// Requests per second per key for non-telephony methods; `None` = unlimited.
    pub rate_limit_rps: Option<usize>,
    /// Requests per second per key for `/api/v5/telephony/*`; `None` = unlimited.
    pub telephony_rate_limit_rps: Option<usize>,
    /// Store (site) codes the key can access. With more than one, `site` becomes required
    /// on create methods (PROTOCOLS §2.1).
    pub sites: Vec<String>,
    /// Base of the `links` in `telephony/manager` answers.
    pub account_url: String,
    /// Telephony methods require a registered, active telephony module.
    pub require_telephony_module: bool,
    /// Leave `duplicateCalls` out of calls/upload answers when it is empty (the PHP fixture's
    /// shape).
    pub omit_empty_duplicate_calls: bool,
    /// Upper bound of a [`Fault::Hang`], so a forgotten hang cannot leak a task forever.
    pub max_hang: Duration,
}

impl Default for FakeCrmConfig {
    fn default() -> Self {
        Self {
            api_key: "fake-api-key".to_owned(),
            rate_limit_rps: Some(10),
            telephony_rate_limit_rps: Some(40),
            sites: vec!["shop1".to_owned()],
            account_url: "https://fake.retailcrm.ru".to_owned(),
            require_telephony_module: false,
            omit_empty_duplicate_calls: false,
            max_hang: Duration::from_secs(300),
        }
    }
}

// === Seeding and inspection types ===

/// A CRM user (manager) to seed with [`FakeRetailCrm::add_user`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeUser {
    pub id: u64,
    pub first_name: String,
    pub last_name: Option<String>,
    pub email: Option<String>,
    /// `free|busy|dinner|break`.
    pub status: String,
    pub active: bool,
    pub is_manager: bool,
    pub online: bool,
    /// Extension reported as `manager.code` by `telephony/manager` unless the telephony
    /// module's `additionalCodes` names one. Never shown on `users` (PROTOCOLS §2.7).
    pub code: Option<String>,
}

impl FakeUser {
    /// An active, online, free manager.
    pub fn manager(id: u64, first_name: &str, code: Option<&str>) -> Self {
        Self {
            id,
            first_name: first_name.to_owned(),
            last_name: None,
            email: Some(format!("user{id}@example.com")),
            status: "free".to_owned(),
            active: true,
            is_manager: true,
            online: true,
            code: code.map(str::to_owned),
        }
    }
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Full path, e.g. `/api/v5/tasks/create`.
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Form fields; empty unless the body was `application/x-www-form-urlencoded`.
    pub form: Vec<(String, String)>,
    pub content_type: Option<String>,
    /// Raw body (kept so a test can see what a rejected JSON body held).
    pub body: String,
    pub at: Instant,
    /// Status answered; `None` while the request is still in flight (e.g. hung).
    pub status: Option<u16>,
}

/// An entity field the fake does not know, accepted and ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownField {
    /// API path, e.g. `/api/v5/customers/create`.
    pub path: String,
    /// Form field holding the entity (`customer`, `order`, `task`, `event`, `calls`, …).
    pub entity: String,
    pub field: String,
}

/// Which rate-limit bucket a path falls in (PROTOCOLS §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateClass {
    General,
    /// Paths under `/api/v5/telephony/`.
    Telephony,
}

impl RateClass {
    fn of(path: &str) -> Self {
        if path.starts_with("/api/v5/telephony/") {
            RateClass::Telephony
        } else {
            RateClass::General
        }
    }
}

/// Rate statistics for load tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateStats {
    /// Most requests accepted in any one-second window, general class.
    pub max_general_per_sec: usize,
    /// Most requests accepted in any one-second window, telephony class.
    pub max_telephony_per_sec: usize,
    /// 503 `Rate limit exceeded` answers given, general class.
    pub rejected_general: usize,
    /// 503 `Rate limit exceeded` answers given, telephony class.
    pub rejected_telephony: usize,
}

// === Faults ===

/// A scripted failure. See [`FaultRule`] for where and how long it applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Accept the request and do not answer until the faults change (see module docs).
    Hang,
    /// Wait, then process the request normally.
    Delay(Duration),
    /// Process the request (its effect is applied) but hold the answer like [`Fault::Hang`]:
    /// an answer lost on its way back, a write the client cannot know was applied.
    AnswerLost,
    /// 500 `{"success":false,"errorMsg":"Internal Server Error"}`.
    Status500,
    /// 503 `{"success":false,"errorMsg":"Rate limit exceeded"}`, like the real limiter.
    Status503,
    /// 403 `{"success":false,"errorMsg":"Access denied."}` (key lacks the method).
    AccessDenied403,
    /// An nginx-style HTML page with this status (a wrong account/URL, PROTOCOLS §2.2).
    Html { status: u16 },
    /// 400 `Errors in the entity format` with an `errors` object.
    ValidationError,
    /// 400 with `errorMsg: ""` and `errors: ["Injected error"]` (the array shape).
    ErrorsArray,
    /// Any status and raw body.
    Custom { status: u16, body: String },
}

/// A fault plus where and for how long it applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    pub fault: Fault,
    /// Only paths starting with this (e.g. `/api/v5/tasks/create`, `/api/v5/telephony/`);
    /// `None` = every path.
    pub path_prefix: Option<String>,
    /// Apply to this many matching requests, then disappear; `None` = until cleared.
    pub remaining: Option<usize>,
}

impl FaultRule {
    /// Every path, until cleared.
    pub fn new(fault: Fault) -> Self {
        Self {
            fault,
            path_prefix: None,
            remaining: None,
        }
    }

    /// Restrict to paths starting with `prefix`.
    pub fn on_path(mut self, prefix: &str) -> Self {
        self.path_prefix = Some(prefix.to_owned());
        self
    }

    /// Apply to the next `n` matching requests only.
    pub fn times(mut self, n: usize) -> Self {
        self.remaining = Some(n);
        self
    }
}

// === State ===

/// Everything the fake knows. Entities are kept as JSON in their **read** shape.
#[derive(Debug)]
struct CrmState {
    cfg: FakeCrmConfig,
    users: BTreeMap<u64, FakeUser>,
    customers: BTreeMap<u64, Value>,
    /// `customers/history` records, oldest first.
    history: Vec<Value>,
    next_history_id: u64,
    /// `orders/history` records, oldest first.
    order_history: Vec<Value>,
    next_order_history_id: u64,
    orders: BTreeMap<u64, Value>,
    tasks: BTreeMap<u64, Value>,
    calls: Vec<Value>,
    call_events: Vec<Value>,
    modules: BTreeMap<String, Value>,
    /// `(group code, status codes)`, in order.
    status_groups: Vec<(String, Vec<String>)>,
    order_methods: Vec<String>,
    next_customer_id: u64,
    next_order_id: u64,
    next_task_id: u64,
    requests: Vec<RecordedRequest>,
    unknown_fields: Vec<UnknownField>,
    faults: Vec<FaultRule>,
    windows: HashMap<RateClass, VecDeque<Instant>>,
    stats: RateStats,
    /// `(page, customer id)`: once that page of the unfiltered `customers` list has been
    /// answered, the customer is deleted by hand ([`FakeRetailCrm::delete_customer_after_page`]).
    deletions_after_page: Vec<(usize, u64)>,
}

fn default_status_groups() -> Vec<(String, Vec<String>)> {
    let groups: [(&str, &[&str]); 6] = [
        ("new", &["new"]),
        (
            "approval",
            &[
                "availability-confirmed",
                "offer-analog",
                "client-confirmed",
                "prepayed",
            ],
        ),
        (
            "assembling",
            &["send-to-assembling", "assembling", "assembling-complete"],
        ),
        ("delivery", &["send-to-delivery", "delivering", "redirect"]),
        ("complete", &["complete"]),
        (
            "cancel",
            &[
                "no-call",
                "no-product",
                "already-buyed",
                "delyvery-did-not-suit",
                "prices-did-not-suit",
                "cancel-other",
            ],
        ),
    ];
    groups
        .iter()
        .map(|(g, s)| ((*g).to_owned(), s.iter().map(|c| (*c).to_owned()).collect()))
        .collect()
}

impl CrmState {
    fn new(cfg: FakeCrmConfig) -> Self {
        Self {
            cfg,
            users: BTreeMap::new(),
            customers: BTreeMap::new(),
            history: Vec::new(),
            next_history_id: 1,
            order_history: Vec::new(),
            next_order_history_id: 1,
            orders: BTreeMap::new(),
            tasks: BTreeMap::new(),
            calls: Vec::new(),
            call_events: Vec::new(),
            modules: BTreeMap::new(),
            status_groups: default_status_groups(),
            order_methods: [
                "phone",
                "shopping-cart",
                "one-click",
                "landing-page",
                "offline",
                "app",
                "live-chat",
                "messenger",
            ]
            .iter()
            .map(|m| (*m).to_owned())
            .collect(),
            next_customer_id: 1,
            next_order_id: 1,
            next_task_id: 1,
            requests: Vec::new(),
            unknown_fields: Vec::new(),
            faults: Vec::new(),
            windows: HashMap::new(),
            stats: RateStats::default(),
            deletions_after_page: Vec::new(),
        }
    }

    /// Takes the first fault rule matching `path`, counting it down.
    fn take_fault(&mut self, path: &str) -> Option<Fault> {
        let idx = self.faults.iter().position(|r| {
            r.path_prefix.as_deref().is_none_or(|p| path.starts_with(p)) && r.remaining != Some(0)
        })?;
        let rule = &mut self.faults[idx];
        let fault = rule.fault.clone();
        if let Some(n) = rule.remaining.as_mut() {
            *n -= 1;
            if *n == 0 {
                self.faults.remove(idx);
            }
        }
        Some(fault)
    }

    /// Sliding one-second window: admits the request (and records the window size) or
    /// counts a rejection.
    fn admit(&mut self, class: RateClass, now: Instant) -> bool {
        let limit = match class {
            RateClass::General => self.cfg.rate_limit_rps,
            RateClass::Telephony => self.cfg.telephony_rate_limit_rps,
        };
        let window = self.windows.entry(class).or_default();
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            window.pop_front();
        }
        if limit.is_some_and(|l| window.len() >= l) {
            match class {
                RateClass::General => self.stats.rejected_general += 1,
                RateClass::Telephony => self.stats.rejected_telephony += 1,
            }
            return false;
        }
        window.push_back(now);
        // The busiest window always ends at an accepted request, so this is exact.
        let len = window.len();
        let max = match class {
            RateClass::General => &mut self.stats.max_general_per_sec,
            RateClass::Telephony => &mut self.stats.max_telephony_per_sec,
        };
        *max = (*max).max(len);
        true
    }

    fn status_group_of(&self, status: &str) -> Option<&str> {
        self.status_groups
            .iter()
            .find(|(_, s)| s.iter().any(|c| c == status))
            .map(|(g, _)| g.as_str())
    }
}

/// State shared by the handle and the server.
#[derive(Debug)]
struct Shared {
    state: Mutex<CrmState>,
    /// Bumped by `set_fault`/`clear_faults`; hung requests wait for it.
    fault_generation: watch::Sender<u64>,
    shutdown: CancellationToken,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, CrmState> {
        self.state.lock().expect(POISONED)
    }

    fn faults_changed(&self) {
        self.fault_generation.send_modify(|g| *g += 1);
    }
}

// === The handle ===

/// A running fake retailCRM. Clones share the server and its state.
#[derive(Debug, Clone)]
pub struct FakeRetailCrm {
    shared: Arc<Shared>,
    addr: SocketAddr,
    api_key: String,
    /// Stops the server when the last clone is dropped.
    _stop: Arc<DropGuard>,
}

impl FakeRetailCrm {
    /// Binds `127.0.0.1:0` and serves the fake on a spawned task.
    ///
    /// # Panics
    /// When no loopback port can be bound (a test-environment failure).
    pub async fn start(cfg: FakeCrmConfig) -> FakeRetailCrm {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake retailCRM: cannot bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("fake retailCRM: bound socket has no local address");
        let api_key = cfg.api_key.clone();
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared {
            state: Mutex::new(CrmState::new(cfg)),
            fault_generation: watch::Sender::new(0),
            shutdown: shutdown.clone(),
        });
        let app = Router::new()
            .fallback(serve_request)
            .with_state(Arc::clone(&shared));
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = result {
                tracing::warn!(error = %e, "Fake retailCRM server stopped with an error.");
            }
        });
        FakeRetailCrm {
            shared,
            addr,
            api_key,
            _stop: Arc::new(shutdown.drop_guard()),
        }
    }

    /// `http://127.0.0.1:PORT`; callgate appends `/api/v5/…`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The valid API key.
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    fn lock(&self) -> MutexGuard<'_, CrmState> {
        self.shared.lock()
    }

    // --- seeding ---

    /// Adds or replaces a user.
    pub fn add_user(&self, user: FakeUser) {
        self.lock().users.insert(user.id, user);
    }

    /// Sets a user's status (`free|busy|dinner|break`) as if changed in the CRM UI.
    /// Returns false for an unknown user.
    pub fn set_user_status(&self, user_id: u64, status: &str) -> bool {
        match self.lock().users.get_mut(&user_id) {
            Some(u) => {
                u.status = status.to_owned();
                true
            }
            None => false,
        }
    }

    /// Adds a customer with these phones (stored verbatim) and responsible manager, in the
    /// first store. No validation: seeding may create what the API would refuse.
    pub fn add_customer(&self, phones: &[&str], manager_id: Option<u64>) -> u64 {
        let mut entity = json!({
            "phones": phones.iter().map(|p| json!({"number": p})).collect::<Vec<_>>(),
        });
        if let Some(m) = manager_id {
            entity["managerId"] = json!(m);
        }
        self.add_customer_entity(entity)
    }

    /// Adds a customer from a JSON object in the write shape (`firstName`, `phones`,
    /// `managerId`, `externalId`, `site`, …); server fields are filled in. Returns the id.
    pub fn add_customer_entity(&self, entity: Value) -> u64 {
        let mut st = self.lock();
        let site = entity
            .get("site")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| st.cfg.sites.first().cloned())
            .unwrap_or_default();
        handlers::insert_customer(
            &mut st,
            entity,
            &site,
            handlers::Actor::User(handlers::HAND_USER_ID),
        )
    }

    /// Edits a customer as a user would in the CRM's UI (write shape: `managerId`,
    /// `phones`, `firstName`, …), recording history. `false` for an unknown customer.
    pub fn edit_customer_by_hand(&self, id: u64, patch: Value) -> bool {
        let Value::Object(patch) = patch else {
            return false;
        };
        let mut st = self.lock();
        handlers::edit_customer(
            &mut st,
            id,
            patch,
            handlers::Actor::User(handlers::HAND_USER_ID),
        )
    }

    /// Reassigns a customer to another manager (or none) by hand.
    pub fn set_customer_manager_by_hand(&self, id: u64, manager_id: Option<u64>) -> bool {
        self.edit_customer_by_hand(id, json!({"managerId": manager_id}))
    }

    /// Replaces a customer's phones (stored verbatim) by hand.
    pub fn set_customer_phones_by_hand(&self, id: u64, phones: &[&str]) -> bool {
        let phones: Vec<Value> = phones.iter().map(|p| json!({"number": p})).collect();
        self.edit_customer_by_hand(id, json!({"phones": phones}))
    }

    /// Deletes a customer by hand. `false` for an unknown customer.
    pub fn delete_customer_by_hand(&self, id: u64) -> bool {
        let mut st = self.lock();
        handlers::delete_customer(
            &mut st,
            id,
            None,
            handlers::Actor::User(handlers::HAND_USER_ID),
        )
    }

    /// Moves every history record recorded so far `by` into the past: customers seeded now
    /// look created long ago (before an import's history window), as in a real account.
    pub fn backdate_history(&self, by: std::time::Duration) {
        const FORMAT: &str = "%Y-%m-%d %H:%M:%S";
        let by = chrono::Duration::from_std(by).unwrap_or_default();
        for record in &mut self.lock().history {
            let earlier = record["createdAt"]
                .as_str()
                .and_then(|c| chrono::NaiveDateTime::parse_from_str(c, FORMAT).ok())
                .map(|c| (c - by).format(FORMAT).to_string());
            if let Some(earlier) = earlier {
                record["createdAt"] = json!(earlier);
            }
        }
    }

    /// Deletes customer `id` by hand right after the unfiltered `customers` list's page `page`
    /// has been answered: a deletion in the middle of a paged read, which shifts the later
    /// pages by one (offset paging, as the real CRM's `page`).
    pub fn delete_customer_after_page(&self, page: usize, id: u64) {
        self.lock().deletions_after_page.push((page, id));
    }

    /// Merges customer `from` into `into` by hand: `into` gains the numbers of `from`, and
    /// `from` is deleted with `combinedTo`. `false` when either is unknown or they are one.
    pub fn merge_customers_by_hand(&self, from: u64, into: u64) -> bool {
        let mut st = self.lock();
        handlers::delete_customer(
            &mut st,
            from,
            Some(into),
            handlers::Actor::User(handlers::HAND_USER_ID),
        )
    }

    /// Sets a user's `active` flag (a deactivated employee) as if changed in the CRM UI.
    pub fn set_user_active(&self, user_id: u64, active: bool) -> bool {
        match self.lock().users.get_mut(&user_id) {
            Some(u) => {
                u.active = active;
                true
            }
            None => false,
        }
    }

    /// `customers/history` records so far, oldest first.
    pub fn history(&self) -> Vec<Value> {
        self.lock().history.clone()
    }

    /// Adds an order for an existing customer. No validation. Returns the id.
    pub fn add_order(&self, customer_id: u64, status: &str, manager_id: Option<u64>) -> u64 {
        let mut st = self.lock();
        let mut entity = json!({"status": status, "orderMethod": "phone"});
        if let Some(m) = manager_id {
            entity["managerId"] = json!(m);
        }
        let site = st.cfg.sites.first().cloned().unwrap_or_default();
        handlers::insert_order(
            &mut st,
            entity,
            Some(customer_id),
            &site,
            handlers::Actor::User(handlers::HAND_USER_ID),
        )
    }

    /// Changes an order's status by hand (as in the CRM's UI), recording `orders/history`.
    /// `false` for an unknown order.
    pub fn set_order_status_by_hand(&self, id: u64, status: &str) -> bool {
        self.edit_order_by_hand(id, "status", json!(status))
    }

    /// Reassigns an order to another manager (or none) by hand.
    pub fn set_order_manager_by_hand(&self, id: u64, manager_id: Option<u64>) -> bool {
        self.edit_order_by_hand(id, "managerId", json!(manager_id))
    }

    fn edit_order_by_hand(&self, id: u64, key: &str, value: Value) -> bool {
        let mut st = self.lock();
        let Some(before) = st.orders.get(&id).cloned() else {
            return false;
        };
        let mut after = before.clone();
        after[key] = value;
        st.orders.insert(id, after.clone());
        handlers::order_edited_by_hand(&mut st, &before, &after);
        true
    }

    /// Deletes an order by hand, recording `orders/history`. `false` for an unknown order.
    pub fn delete_order_by_hand(&self, id: u64) -> bool {
        let mut st = self.lock();
        let Some(before) = st.orders.remove(&id) else {
            return false;
        };
        handlers::order_deleted_by_hand(&mut st, &before);
        true
    }

    /// `orders/history` records so far, oldest first.
    pub fn order_history(&self) -> Vec<Value> {
        self.lock().order_history.clone()
    }

    /// Replaces the status groups: `(group code, [status codes])`, in order.
    pub fn set_status_groups(&self, groups: &[(&str, &[&str])]) {
        self.lock().status_groups = groups
            .iter()
            .map(|(g, s)| ((*g).to_owned(), s.iter().map(|c| (*c).to_owned()).collect()))
            .collect();
    }

    /// Changes the rate limits at run time (`None` = unlimited).
    pub fn set_rate_limits(&self, general: Option<usize>, telephony: Option<usize>) {
        let mut st = self.lock();
        st.cfg.rate_limit_rps = general;
        st.cfg.telephony_rate_limit_rps = telephony;
    }

    // --- inspection ---

    /// Customers in their read shape (what `customers/{id}` answers), by id.
    pub fn customers(&self) -> Vec<Value> {
        self.lock().customers.values().cloned().collect()
    }

    /// Orders in their read shape, by id.
    pub fn orders(&self) -> Vec<Value> {
        self.lock().orders.values().cloned().collect()
    }

    /// Tasks in their read shape (`performer`, not `performerId`), by id.
    pub fn tasks(&self) -> Vec<Value> {
        self.lock().tasks.values().cloned().collect()
    }

    /// Uploaded calls as posted, in arrival order, duplicates excluded.
    pub fn calls(&self) -> Vec<Value> {
        self.lock().calls.clone()
    }

    /// `telephony/call/event` payloads as posted, in arrival order.
    pub fn call_events(&self) -> Vec<Value> {
        self.lock().call_events.clone()
    }

    /// A registered integration module, as last posted.
    pub fn integration_module(&self, code: &str) -> Option<Value> {
        self.lock().modules.get(code).cloned()
    }

    /// A user as currently stored (status changes included).
    pub fn user(&self, id: u64) -> Option<FakeUser> {
        self.lock().users.get(&id).cloned()
    }

    /// Every request received, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// How many requests matched `"METHOD /path"` exactly, e.g.
    /// `request_count("POST /api/v5/tasks/create")`.
    pub fn request_count(&self, method_path: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| {
                method_path
                    .split_once(' ')
                    .is_some_and(|(m, p)| r.method == m && r.path == p)
            })
            .count()
    }

    /// Entity fields the fake did not know and ignored.
    pub fn unknown_fields(&self) -> Vec<UnknownField> {
        self.lock().unknown_fields.clone()
    }

    /// Busiest one-second windows and rejections so far.
    pub fn rate_stats(&self) -> RateStats {
        self.lock().stats
    }

    /// Most requests accepted in any one-second window for `class`.
    pub fn max_rate_observed(&self, class: RateClass) -> usize {
        let stats = self.rate_stats();
        match class {
            RateClass::General => stats.max_general_per_sec,
            RateClass::Telephony => stats.max_telephony_per_sec,
        }
    }

    /// Total 503 `Rate limit exceeded` answers given (both classes).
    pub fn rate_limited_count(&self) -> usize {
        let stats = self.rate_stats();
        stats.rejected_general + stats.rejected_telephony
    }

    // --- faults ---

    /// Applies `fault` to every request until [`clear_faults`](Self::clear_faults).
    /// Replaces any other faults.
    pub fn set_fault(&self, fault: Fault) {
        self.lock().faults = vec![FaultRule::new(fault)];
        self.shared.faults_changed();
    }

    /// Adds a rule after the existing ones (the first matching rule wins). Requests
    /// already hung stay hung.
    pub fn add_fault_rule(&self, rule: FaultRule) {
        self.lock().faults.push(rule);
    }

    /// Removes every fault and releases hung requests.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
        self.shared.faults_changed();
    }
}

// === Request pipeline ===

/// A parsed request handed to the endpoint handlers.
#[derive(Debug)]
pub(crate) struct ApiRequest {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    form: Vec<(String, String)>,
}

/// An error answer in retailCRM's envelope.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    msg: String,
    errors: Option<Value>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"success": false, "errorMsg": self.msg});
        if let Some(errors) = self.errors {
            body["errors"] = errors;
        }
        (self.status, axum::Json(body)).into_response()
    }
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

fn fault_response(fault: &Fault) -> Response {
    let json_err = |status: StatusCode, msg: &str, errors: Option<Value>| {
        ApiError {
            status,
            msg: msg.to_owned(),
            errors,
        }
        .into_response()
    };
    match fault {
        // Hang, Delay and AnswerLost are handled around the request's processing.
        Fault::Hang | Fault::Delay(_) | Fault::AnswerLost => StatusCode::OK.into_response(),
        Fault::Status500 => json_err(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            None,
        ),
        Fault::Status503 => json_err(StatusCode::SERVICE_UNAVAILABLE, "Rate limit exceeded", None),
        Fault::AccessDenied403 => json_err(StatusCode::FORBIDDEN, "Access denied.", None),
        Fault::ValidationError => json_err(
            StatusCode::BAD_REQUEST,
            "Errors in the entity format",
            Some(json!({"fault": "Injected validation error"})),
        ),
        Fault::ErrorsArray => {
            json_err(StatusCode::BAD_REQUEST, "", Some(json!(["Injected error"])))
        }
        Fault::Html { status } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::NOT_FOUND);
            let page = format!(
                "<html>\r\n<head><title>{status}</title></head>\r\n<body>\r\n<center><h1>{status}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
            );
            (status, [(header::CONTENT_TYPE, "text/html")], page).into_response()
        }
        Fault::Custom { status, body } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, body.clone()).into_response()
        }
    }
}

/// Parks a request until the fault list changes, the fake stops, or `max` passes.
async fn hang(shared: &Shared, mut generation: watch::Receiver<u64>, max: Duration) {
    tokio::select! {
        _ = generation.changed() => {}
        () = shared.shutdown.cancelled() => {}
        () = tokio::time::sleep(max) => {}
    }
}

/// The single entry point: record → fault → auth → rate limit → route.
async fn serve_request(AxumState(shared): AxumState<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let method = parts.method.as_str().to_owned();
    let path = parts.uri.path().to_owned();
    let query: Vec<(String, String)> =
        serde_urlencoded::from_str(parts.uri.query().unwrap_or("")).unwrap_or_default();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = match to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    let body_text = String::from_utf8_lossy(&bytes).into_owned();
    let form: Vec<(String, String)> = if is_form(&parts.headers) {
        serde_urlencoded::from_bytes(&bytes).unwrap_or_default()
    } else {
        Vec::new()
    };

    // Record, and look for a fault, under one lock so a concurrent clear is not missed.
    let (index, fault, generation, max_hang) = {
        let mut st = shared.lock();
        let index = st.requests.len();
        st.requests.push(RecordedRequest {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            form: form.clone(),
            content_type,
            body: body_text,
            at: Instant::now(),
            status: None,
        });
        let fault = st.take_fault(&path);
        (
            index,
            fault,
            shared.fault_generation.subscribe(),
            st.cfg.max_hang,
        )
    };

    let response = match fault {
        Some(Fault::Hang) => {
            hang(&shared, generation, max_hang).await;
            process(&shared, method, path, query, form, &parts.headers)
        }
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            process(&shared, method, path, query, form, &parts.headers)
        }
        Some(Fault::AnswerLost) => {
            let response = process(&shared, method, path, query, form, &parts.headers);
            hang(&shared, generation, max_hang).await;
            response
        }
        Some(other) => fault_response(&other),
        None => process(&shared, method, path, query, form, &parts.headers),
    };

    if let Some(r) = shared.lock().requests.get_mut(index) {
        r.status = Some(response.status().as_u16());
    }
    response
}

/// Auth, rate limit and routing (synchronous: the lock is never held across an await).
fn process(
    shared: &Shared,
    method: String,
    path: String,
    query: Vec<(String, String)>,
    form: Vec<(String, String)>,
    headers: &HeaderMap,
) -> Response {
    let presented = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            query
                .iter()
                .chain(form.iter())
                .find(|(k, _)| k == "apiKey")
                .map(|(_, v)| v.clone())
        });
    let mut st = shared.lock();
    let Some(key) = presented else {
        // Status UNCONFIRMED (PROTOCOLS §2.2); 400 as in the PHP client's factory test.
        return ApiError {
            status: StatusCode::BAD_REQUEST,
            msg: "\"apiKey\" is missing.".to_owned(),
            errors: None,
        }
        .into_response();
    };
    if key != st.cfg.api_key {
        return ApiError {
            status: StatusCode::FORBIDDEN,
            msg: "Wrong \"apiKey\" value.".to_owned(),
            errors: None,
        }
        .into_response();
    }
    if !st.admit(RateClass::of(&path), Instant::now()) {
        return ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            msg: "Rate limit exceeded".to_owned(),
            errors: None,
        }
        .into_response();
    }
    let req = ApiRequest {
        method,
        path,
        query,
        form,
    };
    match handlers::route(&mut st, &req) {
        Ok((status, body)) => (status, axum::Json(body)).into_response(),
        Err(e) => e.into_response(),
    }
}
