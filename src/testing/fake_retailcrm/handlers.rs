//! Endpoint logic of the fake retailCRM: routing, strict validation and the read shapes.
//!
//! Every handler runs synchronously under the state lock and answers `(status, body)` or an
//! [`ApiError`] in retailCRM's envelope. See the parent module docs for what is faithful
//! and what is assumed.

use axum::http::StatusCode;
use chrono::NaiveDateTime;
use serde_json::{Map, Value, json};

use super::{API_V5_PREFIX, ApiError, ApiRequest, CrmState, FakeUser, UnknownField};

mod history;
use history::Entity;
pub(super) use history::{Actor, HAND_USER_ID};

type Answer = Result<(StatusCode, Value), ApiError>;

/// `limit` values retailCRM accepts (PROTOCOLS §2.1).
const ALLOWED_LIMITS: [usize; 4] = [20, 50, 100, 250];
/// `telephony/calls/upload` batch cap (PROTOCOLS §2.6).
const MAX_CALLS_PER_UPLOAD: usize = 50;
const CALL_RESULTS: [&str; 6] = [
    "answered",
    "busy",
    "failed",
    "no answer",
    "not allowed",
    "unknown",
];
const HANGUP_STATUSES: [&str; 5] = ["answered", "busy", "cancel", "failed", "no answered"];
const USER_STATUSES: [&str; 4] = ["free", "busy", "dinner", "break"];
const NOT_VALID: &str = "This value is not valid.";
const NOT_BLANK: &str = "This value should not be blank.";
/// `createdAt` of seeded users (users are not created through the API).
const USER_CREATED_AT: &str = "2024-01-01 00:00:00";

const CUSTOMER_FIELDS: &[&str] = &[
    "externalId",
    "firstName",
    "lastName",
    "patronymic",
    "email",
    "phones",
    "managerId",
    "source",
    "customFields",
    "tags",
    "browserId",
    "type",
    "site",
    "address",
    "birthday",
    "sex",
    "vip",
    "bad",
    "commentary",
    "personalDiscount",
    "subscribed",
];
const ORDER_FIELDS: &[&str] = &[
    "externalId",
    "number",
    "orderMethod",
    "status",
    "managerId",
    "customer",
    "phone",
    "additionalPhone",
    "firstName",
    "lastName",
    "patronymic",
    "email",
    "call",
    "customerComment",
    "managerComment",
    "source",
    "customFields",
    "site",
    "items",
    "delivery",
    "payments",
    "orderType",
    "statusComment",
];
const TASK_FIELDS: &[&str] = &[
    "text",
    "commentary",
    "datetime",
    "performerId",
    "complete",
    "customer",
    "order",
    "phone",
    "phoneSite",
];
const EVENT_FIELDS: &[&str] = &[
    "phone",
    "type",
    "codes",
    "userIds",
    "site",
    "hangupStatus",
    "externalPhone",
    "callExternalId",
    "webAnalyticsData",
];
const CALL_FIELDS: &[&str] = &[
    "date",
    "type",
    "phone",
    "code",
    "userId",
    "result",
    "duration",
    "durationWaiting",
    "externalId",
    "recordUrl",
    "source",
    "externalPhone",
    "site",
    "clientId",
];
/// Methods listed by `GET /api/credentials`: Ringostat's scope (PROTOCOLS §2.9) plus the
/// telephony methods.
const CREDENTIALS: &[&str] = &[
    "/api/users/{id}",
    "/api/users",
    "/api/users/{id}/status",
    "/api/user-groups",
    "/api/telephony/manager",
    "/api/telephony/call/event",
    "/api/telephony/calls/upload",
    "/api/customers",
    "/api/customers/{externalId}",
    "/api/customers/create",
    "/api/customers/{externalId}/edit",
    "/api/customers/history",
    "/api/orders",
    "/api/orders/{externalId}",
    "/api/orders/create",
    "/api/orders/{externalId}/edit",
    "/api/orders/history",
    "/api/tasks",
    "/api/tasks/{id}",
    "/api/tasks/create",
    "/api/tasks/{id}/edit",
    "/api/reference/statuses",
    "/api/reference/status-groups",
    "/api/integration-modules/{code}",
    "/api/integration-modules/{code}/edit",
];

// === Envelope helpers ===

fn ok(body: Value) -> Answer {
    Ok((StatusCode::OK, body))
}

fn created(body: Value) -> Answer {
    Ok((StatusCode::CREATED, body))
}

fn error(status: StatusCode, msg: &str, errors: Option<Value>) -> ApiError {
    ApiError {
        status,
        msg: msg.to_owned(),
        errors,
    }
}

fn missing(name: &str) -> ApiError {
    error(
        StatusCode::BAD_REQUEST,
        &format!("Parameter '{name}' is missing"),
        None,
    )
}

fn not_found() -> ApiError {
    error(StatusCode::NOT_FOUND, "Not found", None)
}

fn method_not_found() -> ApiError {
    error(StatusCode::NOT_FOUND, "API method not found", None)
}

fn input_error(field: &str, msg: &str) -> ApiError {
    error(
        StatusCode::BAD_REQUEST,
        "Errors in the input parameters",
        Some(json!({ field: msg })),
    )
}

/// Collects validation errors keyed by field; any error makes the whole request a 400
/// `Errors in the entity format` with an `errors` object.
#[derive(Default)]
struct Errors(Map<String, Value>);

impl Errors {
    fn add(&mut self, field: impl Into<String>, msg: &str) {
        self.0.entry(field.into()).or_insert_with(|| json!(msg));
    }

    fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(error(
                StatusCode::BAD_REQUEST,
                "Errors in the entity format",
                Some(Value::Object(self.0)),
            ))
        }
    }
}

fn now() -> String {
    chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

// === Request helpers ===

impl ApiRequest {
    fn query_one(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated key (`filter[ids][]`).
    fn query_all(&self, key: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn form_one(&self, key: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A scalar from the form, else the query string.
    fn param(&self, key: &str) -> Option<&str> {
        self.form_one(key).or_else(|| self.query_one(key))
    }

    /// The JSON object in form field `name`.
    fn json_object(&self, name: &str) -> Result<Map<String, Value>, ApiError> {
        match self.json_field(name)? {
            Value::Object(m) => Ok(m),
            _ => Err(entity_error(name, "This value should be an object.")),
        }
    }

    fn json_field(&self, name: &str) -> Result<Value, ApiError> {
        let raw = self.form_one(name).ok_or_else(|| missing(name))?;
        serde_json::from_str(raw).map_err(|_| entity_error(name, "This value is not valid JSON."))
    }
}

fn entity_error(field: &str, msg: &str) -> ApiError {
    error(
        StatusCode::BAD_REQUEST,
        "Errors in the entity format",
        Some(json!({ field: msg })),
    )
}

fn record_unknown(
    st: &mut CrmState,
    path: &str,
    entity: &str,
    obj: &Map<String, Value>,
    known: &[&str],
) {
    for key in obj.keys().filter(|k| !known.contains(&k.as_str())) {
        st.unknown_fields.push(UnknownField {
            path: path.to_owned(),
            entity: entity.to_owned(),
            field: key.clone(),
        });
    }
}

/// An id as a JSON number or a numeric string (the CRM's form layer sees strings anyway).
fn as_id(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A stored id equals a filter value given as a string.
fn id_eq(v: &Value, s: &str) -> bool {
    as_id(v).is_some_and(|id| s.parse() == Ok(id))
}

fn parse_id(s: &str) -> Result<u64, ApiError> {
    s.parse().map_err(|_| not_found())
}

fn parse_bool_filter(req: &ApiRequest, key: &str) -> Result<Option<bool>, ApiError> {
    match req.query_one(key) {
        None => Ok(None),
        Some("1" | "true") => Ok(Some(true)),
        Some("0" | "false") => Ok(Some(false)),
        Some(_) => Err(input_error(key, NOT_VALID)),
    }
}

/// `limit` (one of `allowed`, else 400; `default` when absent) and `page` (from 1, else 400),
/// refused as retailCRM refuses them.
fn limit_and_page(
    req: &ApiRequest,
    default: usize,
    allowed: &[usize],
) -> Result<(usize, usize), ApiError> {
    let limit = match req.query_one("limit") {
        None => default,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|l| allowed.contains(l))
            .ok_or_else(|| input_error("limit", "The value you selected is not a valid choice."))?,
    };
    let page = match req.query_one("page") {
        None => 1,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|p| *p >= 1)
            .ok_or_else(|| input_error("page", NOT_VALID))?,
    };
    Ok((limit, page))
}

/// Applies `limit`/`page` and builds the `pagination` object.
fn paginate<T>(req: &ApiRequest, items: Vec<T>) -> Result<(Value, Vec<T>), ApiError> {
    let (limit, page) = limit_and_page(req, 20, &ALLOWED_LIMITS)?;
    let total = items.len();
    let pagination = json!({
        "limit": limit,
        "totalCount": total,
        "currentPage": page,
        "totalPageCount": total.div_ceil(limit),
    });
    let page_items = items
        .into_iter()
        .skip((page - 1) * limit)
        .take(limit)
        .collect();
    Ok((pagination, page_items))
}

/// `site` from the form or query: must be a known store; required when there are several.
fn site_param(st: &CrmState, req: &ApiRequest) -> Result<String, ApiError> {
    match req.param("site") {
        Some(s) if st.cfg.sites.iter().any(|k| k == s) => Ok(s.to_owned()),
        Some(_) => Err(input_error("site", NOT_VALID)),
        None if st.cfg.sites.len() > 1 => Err(missing("site")),
        None => Ok(st.cfg.sites.first().cloned().unwrap_or_default()),
    }
}

/// `by=externalId|id` (default `externalId`).
fn by_param(req: &ApiRequest) -> Result<By, ApiError> {
    match req.param("by") {
        None | Some("externalId") => Ok(By::ExternalId),
        Some("id") => Ok(By::Id),
        Some(_) => Err(input_error("by", NOT_VALID)),
    }
}

#[derive(Clone, Copy)]
enum By {
    Id,
    ExternalId,
}

fn find_by(
    map: &std::collections::BTreeMap<u64, Value>,
    by: By,
    key: &str,
    site: Option<&str>,
) -> Option<u64> {
    match by {
        By::Id => key.parse().ok().filter(|id| map.contains_key(id)),
        By::ExternalId => map
            .iter()
            .find(|(_, v)| {
                v["externalId"].as_str() == Some(key)
                    && site.is_none_or(|s| v["site"].as_str() == Some(s))
            })
            .map(|(id, _)| *id),
    }
}

// === Phones ===

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// The fake's matching rule, the strictest plausible one (PROTOCOLS §2.6, §2.8): the
/// query's digits are a substring of the stored number's digits, as stored. So the national
/// significant number (`981234567`) finds every typed form, and the international digits
/// (`380981234567`) miss a number stored nationally (`0981234567`).
fn phones_match(stored: &str, query: &str) -> bool {
    let q = digits(query);
    !q.is_empty() && digits(stored).contains(&q)
}

fn customer_phones(c: &Value) -> Vec<&str> {
    c["phones"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["number"].as_str()).collect())
        .unwrap_or_default()
}

/// `filter[name]` / `filter[customer]` search (an assumption, see the module docs).
fn customer_matches_search(c: &Value, q: &str) -> bool {
    let qd = digits(q);
    if qd.len() >= 3 && customer_phones(c).iter().any(|p| digits(p).contains(&qd)) {
        return true;
    }
    let ql = q.to_lowercase();
    ["firstName", "lastName", "email"]
        .iter()
        .filter_map(|k| c[*k].as_str())
        .any(|v| v.to_lowercase().contains(&ql))
}

// === Routing ===

pub(super) fn route(st: &mut CrmState, req: &ApiRequest) -> Answer {
    if req.path == "/api/credentials" {
        return if req.method == "GET" {
            credentials(st)
        } else {
            Err(method_not_found())
        };
    }
    let Some(rest) = req.path.strip_prefix(API_V5_PREFIX) else {
        return Err(method_not_found());
    };
    let seg: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    match (req.method.as_str(), seg.as_slice()) {
        ("GET", ["users"]) => users_list(st, req),
        ("GET", ["users", id]) => user_get(st, id),
        ("POST", ["users", id, "status"]) => user_status(st, req, id),
        ("GET", ["user-groups"]) => user_groups(req),
        ("GET", ["telephony", "manager"]) => telephony_manager(st, req),
        ("POST", ["telephony", "call", "event"]) => call_event(st, req),
        ("POST", ["telephony", "calls", "upload"]) => calls_upload(st, req),
        ("GET", ["customers"]) => {
            let answer = customers_list(st, req);
            delete_after_page(st, req);
            answer
        }
        ("GET", ["customers", "history"]) => history::history(st, req, Entity::Customer),
        ("POST", ["customers", "create"]) => customers_create(st, req),
        ("GET", ["customers", key]) => customer_get(st, req, key),
        ("POST", ["customers", key, "edit"]) => customer_edit(st, req, key),
        ("GET", ["orders"]) => orders_list(st, req),
        ("GET", ["orders", "history"]) => history::history(st, req, Entity::Order),
        ("POST", ["orders", "create"]) => orders_create(st, req),
        ("GET", ["orders", key]) => order_get(st, req, key),
        ("POST", ["orders", key, "edit"]) => order_edit(st, req, key),
        ("GET", ["tasks"]) => tasks_list(st, req),
        ("POST", ["tasks", "create"]) => tasks_create(st, req),
        ("GET", ["tasks", id]) => task_get(st, id),
        ("POST", ["tasks", id, "edit"]) => task_edit(st, req, id),
        ("GET", ["reference", "statuses"]) => statuses(st),
        ("GET", ["reference", "status-groups"]) => status_groups(st),
        ("GET", ["reference", "order-methods"]) => order_methods(st),
        ("GET", ["reference", "sites"]) => sites(st),
        ("GET", ["integration-modules", code]) => module_get(st, code),
        ("POST", ["integration-modules", code, "edit"]) => module_edit(st, req, code),
        _ => Err(method_not_found()),
    }
}

fn credentials(st: &CrmState) -> Answer {
    ok(json!({
        "success": true,
        "credentials": CREDENTIALS,
        "siteAccess": "access_full",
        "sitesAvailable": st.cfg.sites,
    }))
}

// === Users ===

fn user_json(u: &FakeUser) -> Value {
    let mut v = json!({
        "id": u.id,
        "createdAt": USER_CREATED_AT,
        "active": u.active,
        "firstName": u.first_name,
        "status": u.status,
        "online": u.online,
        "isAdmin": false,
        "isManager": u.is_manager,
        "groups": [],
    });
    // Empty fields are left out (PROTOCOLS §2.7).
    if let Some(l) = &u.last_name {
        v["lastName"] = json!(l);
    }
    if let Some(e) = &u.email {
        v["email"] = json!(e);
    }
    v
}

fn users_list(st: &CrmState, req: &ApiRequest) -> Answer {
    let active = parse_bool_filter(req, "filter[active]")?;
    let is_manager = parse_bool_filter(req, "filter[isManager]")?;
    let online = parse_bool_filter(req, "filter[online]")?;
    let status = req.query_one("filter[status]");
    if status.is_some_and(|s| !USER_STATUSES.contains(&s)) {
        return Err(input_error("filter[status]", NOT_VALID));
    }
    let users = st
        .users
        .values()
        .filter(|u| active.is_none_or(|a| u.active == a))
        .filter(|u| is_manager.is_none_or(|m| u.is_manager == m))
        .filter(|u| online.is_none_or(|o| u.online == o))
        .filter(|u| status.is_none_or(|s| u.status == s))
        .map(user_json)
        .collect();
    let (pagination, users) = paginate(req, users)?;
    ok(json!({"success": true, "pagination": pagination, "users": users}))
}

fn user_get(st: &CrmState, id: &str) -> Answer {
    let user = st.users.get(&parse_id(id)?).ok_or_else(not_found)?;
    ok(json!({"success": true, "user": user_json(user)}))
}

/// No groups are modelled; the method exists because Ringostat's scope lists it (§2.9).
fn user_groups(req: &ApiRequest) -> Answer {
    let (pagination, groups) = paginate(req, Vec::<Value>::new())?;
    ok(json!({"success": true, "pagination": pagination, "groups": groups}))
}

fn user_status(st: &mut CrmState, req: &ApiRequest, id: &str) -> Answer {
    let id = parse_id(id)?;
    let status = req.form_one("status").ok_or_else(|| missing("status"))?;
    if !USER_STATUSES.contains(&status) {
        return Err(input_error("status", NOT_VALID));
    }
    let user = st.users.get_mut(&id).ok_or_else(not_found)?;
    user.status = status.to_owned();
    ok(json!({"success": true}))
}

// === Telephony ===

fn telephony_enabled(st: &CrmState) -> bool {
    st.modules
        .values()
        .any(|m| m["active"].as_bool() != Some(false) && m["integrations"]["telephony"].is_object())
}

fn require_telephony(st: &CrmState, msg: &str) -> Result<(), ApiError> {
    if st.cfg.require_telephony_module && !telephony_enabled(st) {
        Err(error(StatusCode::BAD_REQUEST, msg, None))
    } else {
        Ok(())
    }
}

/// Extension codes registered through the telephony module's `additionalCodes`.
fn module_codes(st: &CrmState) -> Vec<(u64, String)> {
    st.modules
        .values()
        .filter(|m| m["active"].as_bool() != Some(false))
        .filter_map(|m| m["integrations"]["telephony"]["additionalCodes"].as_array())
        .flatten()
        .filter_map(|c| Some((as_id(&c["userId"])?, c["code"].as_str()?.to_owned())))
        .collect()
}

fn manager_code(st: &CrmState, user_id: u64) -> Option<String> {
    module_codes(st)
        .into_iter()
        .find(|(u, _)| *u == user_id)
        .map(|(_, c)| c)
        .or_else(|| st.users.get(&user_id).and_then(|u| u.code.clone()))
}

fn zero_one(req: &ApiRequest, key: &str) -> Result<bool, ApiError> {
    match req.query_one(key) {
        None | Some("0") => Ok(false),
        Some("1") => Ok(true),
        Some(_) => Err(input_error(key, NOT_VALID)),
    }
}

fn telephony_manager(st: &CrmState, req: &ApiRequest) -> Answer {
    let phone = req
        .query_one("phone")
        .filter(|p| !p.is_empty())
        .ok_or_else(|| missing("phone"))?;
    let details = zero_one(req, "details")?;
    let ignore_status = zero_one(req, "ignoreStatus")?;
    let base = &st.cfg.account_url;
    let mut links = json!({
        "newOrderLink": format!("{base}/orders/add?phone={phone}"),
        "newCustomerLink": format!("{base}/customers/add?phone={phone}"),
    });
    let mut body = json!({"success": true});
    let found = st
        .customers
        .values()
        .find(|c| customer_phones(c).iter().any(|p| phones_match(p, phone)));
    if let Some(c) = found {
        let cid = c["id"].as_u64().unwrap_or_default();
        links["customerLink"] = json!(format!("{base}/customers/{cid}"));
        if let Some(last) = st
            .orders
            .values()
            .rfind(|o| o["customer"]["id"].as_u64() == Some(cid))
        {
            links["lastOrderLink"] = json!(format!("{base}/orders/{}/edit", last["id"]));
        }
        let manager = c["managerId"]
            .as_u64()
            .and_then(|m| st.users.get(&m))
            .filter(|u| ignore_status || u.status == "free");
        if let Some(u) = manager {
            let mut m = json!({"id": u.id, "firstName": u.first_name});
            if let Some(l) = &u.last_name {
                m["lastName"] = json!(l);
            }
            if let Some(e) = &u.email {
                m["email"] = json!(e);
            }
            if let Some(code) = manager_code(st, u.id) {
                m["code"] = json!(code);
            }
            body["manager"] = m;
        }
        if details {
            let mut cust = json!({"id": cid, "phones": c["phones"]});
            for k in ["externalId", "firstName", "lastName", "patronymic", "email"] {
                if !c[k].is_null() {
                    cust[k] = c[k].clone();
                }
            }
            body["customer"] = cust;
        }
    }
    body["links"] = links;
    ok(body)
}

fn check_string(obj: &Map<String, Value>, key: &str, errs: &mut Errors, prefix: &str) {
    if obj.get(key).is_some_and(|v| !v.is_string()) {
        errs.add(format!("{prefix}{key}"), NOT_VALID);
    }
}

fn call_event(st: &mut CrmState, req: &ApiRequest) -> Answer {
    require_telephony(st, "Telephony not enabled")?;
    let ev = req.json_object("event")?;
    let mut errs = Errors::default();
    match ev.get("phone") {
        Some(Value::String(p)) if !p.is_empty() => {}
        _ => errs.add("phone", NOT_BLANK),
    }
    match ev.get("type").and_then(Value::as_str) {
        Some("in" | "out" | "hangup") => {}
        _ => errs.add("type", "The value you selected is not a valid choice."),
    }
    if let Some(h) = ev.get("hangupStatus")
        && !h.as_str().is_some_and(|h| HANGUP_STATUSES.contains(&h))
    {
        errs.add(
            "hangupStatus",
            "The value you selected is not a valid choice.",
        );
    }
    for k in ["externalPhone", "callExternalId"] {
        check_string(&ev, k, &mut errs, "");
    }
    if let Some(s) = ev.get("site")
        && !s
            .as_str()
            .is_some_and(|s| st.cfg.sites.iter().any(|k| k == s))
    {
        errs.add("site", NOT_VALID);
    }
    let codes: Vec<String> = match ev.get("codes") {
        None => Vec::new(),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(|c| c.as_str().map(str::to_owned))
            .collect(),
        Some(_) => {
            errs.add("codes", NOT_VALID);
            Vec::new()
        }
    };
    let user_ids: Vec<u64> = match ev.get("userIds") {
        None => Vec::new(),
        Some(Value::Array(a)) if a.iter().all(|u| as_id(u).is_some()) => {
            a.iter().filter_map(as_id).collect()
        }
        Some(_) => {
            errs.add("userIds", NOT_VALID);
            Vec::new()
        }
    };
    if ev.get("webAnalyticsData").is_some_and(|w| !w.is_object()) {
        errs.add("webAnalyticsData", NOT_VALID);
    }
    errs.finish()?;
    record_unknown(st, &req.path, "event", &ev, EVENT_FIELDS);
    let known_codes: Vec<String> = module_codes(st)
        .into_iter()
        .map(|(_, c)| c)
        .chain(st.users.values().filter_map(|u| u.code.clone()))
        .collect();
    let not_exist_codes: Vec<&String> = codes.iter().filter(|c| !known_codes.contains(c)).collect();
    let not_exist_users: Vec<u64> = user_ids
        .iter()
        .copied()
        .filter(|u| !st.users.contains_key(u))
        .collect();
    let body = json!({
        "success": true,
        "notExistCodes": not_exist_codes,
        "notExistUsers": not_exist_users,
    });
    st.call_events.push(Value::Object(ev));
    ok(body)
}

fn parse_exact(s: &str, fmt: &str, len: usize) -> bool {
    s.len() == len && NaiveDateTime::parse_from_str(s, fmt).is_ok()
}

fn calls_upload(st: &mut CrmState, req: &ApiRequest) -> Answer {
    require_telephony(st, "Telephony not enabled or not supports calls upload")?;
    let calls = match req.json_field("calls")? {
        Value::Array(a) => a,
        _ => return Err(entity_error("calls", "This value should be an array.")),
    };
    if calls.len() > MAX_CALLS_PER_UPLOAD {
        return Err(entity_error(
            "calls",
            &format!("This collection should contain {MAX_CALLS_PER_UPLOAD} elements or less."),
        ));
    }
    let mut errs = Errors::default();
    for (i, call) in calls.iter().enumerate() {
        let p = format!("calls[{i}]");
        let Some(c) = call.as_object() else {
            errs.add(p, "This value should be an object.");
            continue;
        };
        if !c
            .get("date")
            .and_then(Value::as_str)
            .is_some_and(|d| parse_exact(d, "%Y-%m-%d %H:%M:%S", 19))
        {
            errs.add(format!("{p}[date]"), "This value is not a valid datetime.");
        }
        if !matches!(c.get("type").and_then(Value::as_str), Some("in" | "out")) {
            errs.add(
                format!("{p}[type]"),
                "The value you selected is not a valid choice.",
            );
        }
        if let Some(r) = c.get("result")
            && !r.as_str().is_some_and(|r| CALL_RESULTS.contains(&r))
        {
            errs.add(
                format!("{p}[result]"),
                "The value you selected is not a valid choice.",
            );
        }
        for k in ["duration", "durationWaiting"] {
            if c.get(k).is_some_and(|v| v.as_u64().is_none()) {
                errs.add(format!("{p}[{k}]"), NOT_VALID);
            }
        }
        if let Some(u) = c.get("userId")
            && !as_id(u).is_some_and(|u| st.users.contains_key(&u))
        {
            errs.add(format!("{p}[userId]"), NOT_VALID);
        }
        if let Some(s) = c.get("site")
            && !s
                .as_str()
                .is_some_and(|s| st.cfg.sites.iter().any(|k| k == s))
        {
            errs.add(format!("{p}[site]"), NOT_VALID);
        }
        for k in [
            "phone",
            "code",
            "externalId",
            "recordUrl",
            "externalPhone",
            "clientId",
        ] {
            check_string(c, k, &mut errs, &format!("{p}["));
        }
        if c.get("source").is_some_and(|s| !s.is_object()) {
            errs.add(format!("{p}[source]"), NOT_VALID);
        }
    }
    errs.finish()?;
    let mut duplicates: Vec<String> = Vec::new();
    let mut processed = 0usize;
    for call in calls {
        if let Some(obj) = call.as_object() {
            record_unknown(st, &req.path, "calls", obj, CALL_FIELDS);
        }
        if let Some(ext) = call["externalId"].as_str()
            && st
                .calls
                .iter()
                .any(|c| c["externalId"].as_str() == Some(ext))
        {
            duplicates.push(ext.to_owned());
            continue;
        }
        st.calls.push(call);
        processed += 1;
    }
    let mut body = json!({"success": true, "processedCallsCount": processed});
    if !(duplicates.is_empty() && st.cfg.omit_empty_duplicate_calls) {
        body["duplicateCalls"] = json!(duplicates);
    }
    ok(body)
}

// === Customers ===

/// Stores a customer in its read shape. `entity` is the write shape (unchecked here).
pub(super) fn insert_customer(st: &mut CrmState, entity: Value, site: &str, actor: Actor) -> u64 {
    let id = st.next_customer_id;
    st.next_customer_id += 1;
    let mut c = match entity {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    c.insert("id".into(), json!(id));
    c.insert("site".into(), json!(site));
    c.insert("createdAt".into(), json!(now()));
    c.entry("type").or_insert_with(|| json!("customer"));
    c.entry("phones").or_insert_with(|| json!([]));
    c.entry("tags").or_insert_with(|| json!([]));
    c.entry("vip").or_insert(json!(false));
    c.entry("bad").or_insert(json!(false));
    normalise_empty_map(&mut c, "customFields");
    if let Some(m) = c.get("managerId").and_then(as_id) {
        c.insert("managerId".into(), json!(m));
    }
    st.customers.insert(id, Value::Object(c));
    history::created(st, id, actor);
    id
}

/// An empty map is `[]` on the wire (PROTOCOLS §2.2).
fn normalise_empty_map(m: &mut Map<String, Value>, key: &str) {
    match m.get(key) {
        None => {
            m.insert(key.into(), json!([]));
        }
        Some(Value::Object(o)) if o.is_empty() => {
            m.insert(key.into(), json!([]));
        }
        _ => {}
    }
}

fn check_manager(st: &CrmState, obj: &Map<String, Value>, errs: &mut Errors) {
    if let Some(m) = obj.get("managerId")
        && !m.is_null()
        && !as_id(m).is_some_and(|m| st.users.contains_key(&m))
    {
        errs.add("managerId", "User not found.");
    }
}

fn validate_customer(
    st: &CrmState,
    c: &Map<String, Value>,
    site: &str,
    self_id: Option<u64>,
) -> Result<(), ApiError> {
    let mut errs = Errors::default();
    for k in [
        "externalId",
        "firstName",
        "lastName",
        "patronymic",
        "email",
        "browserId",
    ] {
        check_string(c, k, &mut errs, "");
    }
    if let Some(p) = c.get("phones") {
        let valid = p.as_array().is_some_and(|a| {
            a.iter().all(|ph| {
                ph.as_object().is_some_and(|o| {
                    o.get("number")
                        .and_then(Value::as_str)
                        .is_some_and(|n| !n.trim().is_empty())
                })
            })
        });
        if !valid {
            errs.add("phones", NOT_VALID);
        }
    }
    check_manager(st, c, &mut errs);
    if let Some(t) = c.get("type")
        && !matches!(t.as_str(), Some("customer" | "customer_corporate"))
    {
        errs.add("type", "The value you selected is not a valid choice.");
    }
    if c.get("source").is_some_and(|s| !s.is_object()) {
        errs.add("source", NOT_VALID);
    }
    if let Some(ext) = c.get("externalId").and_then(Value::as_str) {
        let dup = st.customers.iter().any(|(id, other)| {
            Some(*id) != self_id
                && other["externalId"].as_str() == Some(ext)
                && other["site"].as_str() == Some(site)
        });
        if dup {
            errs.add(
                "externalId",
                &format!("Customer with externalId={ext} already exists."),
            );
        }
    }
    errs.finish()
}

fn customers_list(st: &CrmState, req: &ApiRequest) -> Answer {
    let name = req.query_one("filter[name]").filter(|n| !n.is_empty());
    let ids = req.query_all("filter[ids][]");
    let ext_ids = req.query_all("filter[externalIds][]");
    let managers = req.query_all("filter[managers][]");
    let customers = st
        .customers
        .values()
        .filter(|c| name.is_none_or(|n| customer_matches_search(c, n)))
        .filter(|c| ids.is_empty() || ids.iter().any(|i| id_eq(&c["id"], i)))
        .filter(|c| ext_ids.is_empty() || ext_ids.iter().any(|e| c["externalId"] == *e))
        .filter(|c| managers.is_empty() || managers.iter().any(|m| id_eq(&c["managerId"], m)))
        .collect::<Vec<&Value>>();
    // Only the page is cloned (the import's load scenario pages through 100,000).
    let (pagination, customers) = paginate(req, customers)?;
    ok(json!({"success": true, "pagination": pagination, "customers": customers}))
}

/// The deletions a test scheduled after this page of the unfiltered list.
fn delete_after_page(st: &mut CrmState, req: &ApiRequest) {
    if req.query_one("filter[name]").is_some() || st.deletions_after_page.is_empty() {
        return;
    }
    let Ok((_, page)) = limit_and_page(req, 20, &ALLOWED_LIMITS) else {
        return;
    };
    let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut st.deletions_after_page)
        .into_iter()
        .partition(|(p, _)| *p == page);
    st.deletions_after_page = later;
    for (_, id) in due {
        delete_customer(st, id, None, Actor::User(HAND_USER_ID));
    }
}

fn customer_get(st: &CrmState, req: &ApiRequest, key: &str) -> Answer {
    let by = by_param(req)?;
    let id = find_by(&st.customers, by, key, req.query_one("site")).ok_or_else(not_found)?;
    ok(json!({"success": true, "customer": st.customers[&id]}))
}

fn customers_create(st: &mut CrmState, req: &ApiRequest) -> Answer {
    let c = req.json_object("customer")?;
    let site = site_param(st, req)?;
    validate_customer(st, &c, &site, None)?;
    record_unknown(st, &req.path, "customer", &c, CUSTOMER_FIELDS);
    let id = insert_customer(st, Value::Object(c), &site, Actor::Api);
    created(json!({"success": true, "id": id}))
}

fn customer_edit(st: &mut CrmState, req: &ApiRequest, key: &str) -> Answer {
    let by = by_param(req)?;
    let patch = req.json_object("customer")?;
    let id = find_by(&st.customers, by, key, req.param("site")).ok_or_else(not_found)?;
    let site = st.customers[&id]["site"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    validate_customer(st, &patch, &site, Some(id))?;
    record_unknown(st, &req.path, "customer", &patch, CUSTOMER_FIELDS);
    edit_customer(st, id, patch, Actor::Api);
    ok(json!({"success": true, "id": id}))
}

/// Applies an edit (write shape) to a stored customer and records its history; `false` for
/// an unknown customer. No validation: the API handler validates, "by hand" edits may do
/// what the UI allows.
pub(super) fn edit_customer(
    st: &mut CrmState,
    id: u64,
    patch: Map<String, Value>,
    actor: Actor,
) -> bool {
    let Some(before) = st.customers.get(&id).cloned() else {
        return false;
    };
    if let Some(Value::Object(stored)) = st.customers.get_mut(&id) {
        for (k, v) in patch {
            if !matches!(k.as_str(), "id" | "createdAt" | "site") {
                let v = if k == "managerId" {
                    as_id(&v).map_or(Value::Null, |m| json!(m))
                } else {
                    v
                };
                stored.insert(k, v);
            }
        }
        normalise_empty_map(stored, "customFields");
    }
    let after = st.customers[&id].clone();
    history::edited(st, &before, &after, actor);
    true
}

/// Deletes a customer (by hand; the API has no delete), or merges it into `combined_to`:
/// the surviving customer gains the merged one's numbers (recorded as phone additions on
/// it), then the merged one is deleted with `combinedTo`. `false` when either is unknown.
pub(super) fn delete_customer(
    st: &mut CrmState,
    id: u64,
    combined_to: Option<u64>,
    actor: Actor,
) -> bool {
    if combined_to.is_some_and(|t| t == id || !st.customers.contains_key(&t)) {
        return false;
    }
    let Some(before) = st.customers.get(&id).cloned() else {
        return false;
    };
    if let Some(target) = combined_to {
        let mut phones = st.customers[&target]["phones"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for p in before["phones"].as_array().into_iter().flatten() {
            if !phones.iter().any(|q| q["number"] == p["number"]) {
                phones.push(p.clone());
            }
        }
        let mut patch = Map::new();
        patch.insert("phones".into(), Value::Array(phones));
        edit_customer(st, target, patch, actor);
    }
    st.customers.remove(&id);
    history::deleted(st, &before, actor, combined_to);
    true
}

// === Orders ===

fn order_customer_ref(st: &CrmState, customer_id: u64) -> Value {
    let c = st
        .customers
        .get(&customer_id)
        .cloned()
        .unwrap_or(Value::Null);
    let mut r = json!({"type": "customer", "id": customer_id});
    for k in [
        "externalId",
        "site",
        "firstName",
        "lastName",
        "email",
        "phones",
        "managerId",
    ] {
        if !c[k].is_null() {
            r[k] = c[k].clone();
        }
    }
    r
}

/// Stores an order in its read shape. `entity` is the write shape (unchecked here).
pub(super) fn insert_order(
    st: &mut CrmState,
    entity: Value,
    customer_id: Option<u64>,
    site: &str,
    actor: Actor,
) -> u64 {
    let id = st.next_order_id;
    st.next_order_id += 1;
    let mut o = match entity {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    o.insert("id".into(), json!(id));
    o.entry("number").or_insert_with(|| json!(format!("{id}A")));
    o.insert("site".into(), json!(site));
    o.insert("createdAt".into(), json!(now()));
    o.entry("status").or_insert_with(|| json!("new"));
    o.entry("items").or_insert_with(|| json!([]));
    normalise_empty_map(&mut o, "customFields");
    if let Some(m) = o.get("managerId").and_then(as_id) {
        o.insert("managerId".into(), json!(m));
    }
    if let Some(cid) = customer_id {
        o.insert("customer".into(), order_customer_ref(st, cid));
    }
    st.orders.insert(id, Value::Object(o));
    history::order_created(st, id, actor);
    id
}

/// Resolves an order's `customer` reference (`{id}` or `{externalId[, site]}`).
/// An order edited by hand (test helpers): its history records.
pub(super) fn order_edited_by_hand(st: &mut CrmState, before: &Value, after: &Value) {
    history::order_edited(st, before, after, Actor::User(HAND_USER_ID));
}

/// An order deleted by hand (test helpers): its history record.
pub(super) fn order_deleted_by_hand(st: &mut CrmState, before: &Value) {
    history::order_deleted(st, before, Actor::User(HAND_USER_ID));
}

fn resolve_customer_ref(st: &CrmState, r: &Value, site: &str) -> Option<u64> {
    let obj = r.as_object()?;
    if let Some(t) = obj.get("type")
        && !matches!(t.as_str(), Some("customer" | "customer_corporate"))
    {
        return None;
    }
    if let Some(id) = obj.get("id") {
        return as_id(id).filter(|id| st.customers.contains_key(id));
    }
    let ext = obj.get("externalId")?.as_str()?;
    let site = obj.get("site").and_then(Value::as_str).unwrap_or(site);
    find_by(&st.customers, By::ExternalId, ext, Some(site))
}

fn validate_order(
    st: &CrmState,
    o: &Map<String, Value>,
    site: &str,
    self_id: Option<u64>,
) -> Result<Option<u64>, ApiError> {
    let mut errs = Errors::default();
    if let Some(s) = o.get("status")
        && s.as_str().is_none_or(|s| st.status_group_of(s).is_none())
    {
        errs.add("status", "Status not found.");
    }
    if let Some(m) = o.get("orderMethod")
        && !m
            .as_str()
            .is_some_and(|m| st.order_methods.iter().any(|k| k == m))
    {
        errs.add(
            "orderMethod",
            "The value you selected is not a valid choice.",
        );
    }
    check_manager(st, o, &mut errs);
    let mut customer_id = None;
    if let Some(r) = o.get("customer") {
        match resolve_customer_ref(st, r, site) {
            Some(id) => customer_id = Some(id),
            None => errs.add("customer", "Customer not found."),
        }
    }
    if o.get("call").is_some_and(|c| !c.is_boolean()) {
        errs.add("call", NOT_VALID);
    }
    for k in [
        "externalId",
        "number",
        "phone",
        "firstName",
        "lastName",
        "patronymic",
        "email",
        "customerComment",
        "managerComment",
    ] {
        check_string(o, k, &mut errs, "");
    }
    if o.get("source").is_some_and(|s| !s.is_object()) {
        errs.add("source", NOT_VALID);
    }
    if let Some(ext) = o.get("externalId").and_then(Value::as_str) {
        let dup = st.orders.iter().any(|(id, other)| {
            Some(*id) != self_id
                && other["externalId"].as_str() == Some(ext)
                && other["site"].as_str() == Some(site)
        });
        if dup {
            errs.add(
                "externalId",
                &format!("Order with externalId={ext} already exists."),
            );
        }
    }
    errs.finish()?;
    Ok(customer_id)
}

fn orders_list(st: &CrmState, req: &ApiRequest) -> Answer {
    let customer_id = req.query_one("filter[customerId]");
    let customer = req.query_one("filter[customer]").filter(|c| !c.is_empty());
    let customer_ext = req.query_one("filter[customerExternalId]");
    let statuses = req.query_all("filter[extendedStatus][]");
    let managers = req.query_all("filter[managers][]");
    let ids = req.query_all("filter[ids][]");
    let ext_ids = req.query_all("filter[externalIds][]");
    let orders = st
        .orders
        .values()
        .filter(|o| customer_id.is_none_or(|c| id_eq(&o["customer"]["id"], c)))
        .filter(|o| customer.is_none_or(|q| customer_matches_search(&o["customer"], q)))
        .filter(|o| customer_ext.is_none_or(|e| o["customer"]["externalId"] == e))
        .filter(|o| {
            statuses.is_empty()
                || o["status"].as_str().is_some_and(|s| {
                    statuses
                        .iter()
                        .any(|f| *f == s || st.status_group_of(s) == Some(*f))
                })
        })
        .filter(|o| managers.is_empty() || managers.iter().any(|m| id_eq(&o["managerId"], m)))
        .filter(|o| ids.is_empty() || ids.iter().any(|i| id_eq(&o["id"], i)))
        .filter(|o| ext_ids.is_empty() || ext_ids.iter().any(|e| o["externalId"] == *e))
        .cloned()
        .collect();
    let (pagination, orders) = paginate(req, orders)?;
    ok(json!({"success": true, "pagination": pagination, "orders": orders}))
}

fn order_get(st: &CrmState, req: &ApiRequest, key: &str) -> Answer {
    let by = by_param(req)?;
    let id = find_by(&st.orders, by, key, req.query_one("site")).ok_or_else(not_found)?;
    ok(json!({"success": true, "order": st.orders[&id]}))
}

fn orders_create(st: &mut CrmState, req: &ApiRequest) -> Answer {
    let o = req.json_object("order")?;
    let site = site_param(st, req)?;
    let customer_id = validate_order(st, &o, &site, None)?;
    record_unknown(st, &req.path, "order", &o, ORDER_FIELDS);
    // Without a customer, the CRM creates one from the order's contact fields (assumed).
    let customer_id = customer_id.unwrap_or_else(|| {
        let mut c = json!({});
        for k in ["firstName", "lastName", "patronymic", "email", "managerId"] {
            if let Some(v) = o.get(k) {
                c[k] = v.clone();
            }
        }
        if let Some(p) = o.get("phone").and_then(Value::as_str) {
            c["phones"] = json!([{"number": p}]);
        }
        insert_customer(st, c, &site, Actor::Api)
    });
    let mut entity = o;
    entity.remove("customer");
    let id = insert_order(
        st,
        Value::Object(entity),
        Some(customer_id),
        &site,
        Actor::Api,
    );
    created(json!({"success": true, "id": id, "order": st.orders[&id]}))
}

fn order_edit(st: &mut CrmState, req: &ApiRequest, key: &str) -> Answer {
    let by = by_param(req)?;
    let patch = req.json_object("order")?;
    let id = find_by(&st.orders, by, key, req.param("site"))
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "Not found map", None))?;
    let site = st.orders[&id]["site"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let customer_id = validate_order(st, &patch, &site, Some(id))?;
    record_unknown(st, &req.path, "order", &patch, ORDER_FIELDS);
    let customer_ref = customer_id.map(|c| order_customer_ref(st, c));
    let before = st.orders[&id].clone();
    if let Some(Value::Object(stored)) = st.orders.get_mut(&id) {
        for (k, v) in patch {
            match k.as_str() {
                "id" | "createdAt" | "site" | "customer" => {}
                "managerId" => {
                    stored.insert(k, as_id(&v).map_or(Value::Null, |m| json!(m)));
                }
                _ => {
                    stored.insert(k, v);
                }
            }
        }
        if let Some(r) = customer_ref {
            stored.insert("customer".into(), r);
        }
        normalise_empty_map(stored, "customFields");
    }
    let after = st.orders[&id].clone();
    history::order_edited(st, &before, &after, Actor::Api);
    ok(json!({"success": true, "id": id, "order": st.orders[&id]}))
}

// === Tasks ===

fn resolve_order_ref(st: &CrmState, r: &Value) -> Option<u64> {
    let obj = r.as_object()?;
    if let Some(id) = obj.get("id") {
        return as_id(id).filter(|id| st.orders.contains_key(id));
    }
    if let Some(n) = obj.get("number").and_then(Value::as_str) {
        return st
            .orders
            .iter()
            .find(|(_, o)| o["number"].as_str() == Some(n))
            .map(|(id, _)| *id);
    }
    let ext = obj.get("externalId")?.as_str()?;
    find_by(
        &st.orders,
        By::ExternalId,
        ext,
        obj.get("site").and_then(Value::as_str),
    )
}

/// Validates a task in the write shape and applies it to `task` (read shape).
fn apply_task(
    st: &CrmState,
    posted: &Map<String, Value>,
    task: &mut Map<String, Value>,
    creating: bool,
) -> Result<(), ApiError> {
    let mut errs = Errors::default();
    match posted.get("text") {
        Some(Value::String(t)) if !t.trim().is_empty() => {}
        None if !creating => {}
        _ => errs.add("text", NOT_BLANK),
    }
    match posted.get("performerId") {
        Some(p) if as_id(p).is_some_and(|p| st.users.contains_key(&p)) => {}
        None if !creating => {}
        None => errs.add("performerId", NOT_BLANK),
        Some(_) => errs.add("performerId", "User not found."),
    }
    // Exactly `Y-m-d H:i` (PROTOCOLS §2.1): seconds are refused.
    if let Some(d) = posted.get("datetime")
        && !d
            .as_str()
            .is_some_and(|d| parse_exact(d, "%Y-%m-%d %H:%M", 16))
    {
        errs.add(
            "datetime",
            "This value is not a valid datetime (expected Y-m-d H:i).",
        );
    }
    if posted.get("complete").is_some_and(|c| !c.is_boolean()) {
        errs.add("complete", NOT_VALID);
    }
    for k in ["commentary", "phone"] {
        check_string(posted, k, &mut errs, "");
    }
    if let Some(s) = posted.get("phoneSite")
        && !s
            .as_str()
            .is_some_and(|s| st.cfg.sites.iter().any(|k| k == s))
    {
        errs.add("phoneSite", NOT_VALID);
    }
    let default_site = st.cfg.sites.first().cloned().unwrap_or_default();
    let customer = posted
        .get("customer")
        .map(|r| resolve_customer_ref(st, r, &default_site));
    if matches!(customer, Some(None)) {
        errs.add("customer", "Customer not found.");
    }
    let order = posted.get("order").map(|r| resolve_order_ref(st, r));
    if matches!(order, Some(None)) {
        errs.add("order", "Order not found.");
    }
    errs.finish()?;

    for k in ["text", "commentary", "datetime", "phone", "phoneSite"] {
        if let Some(v) = posted.get(k) {
            task.insert(k.into(), v.clone());
        }
    }
    if let Some(p) = posted.get("performerId").and_then(as_id) {
        task.insert("performer".into(), json!(p));
        task.insert("performerType".into(), json!("user"));
    }
    if let Some(c) = posted.get("complete").and_then(Value::as_bool) {
        let was = task
            .get("complete")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        task.insert("complete".into(), json!(c));
        if c && !was {
            task.insert("completedAt".into(), json!(now()));
        } else if !c {
            task.remove("completedAt");
        }
    }
    if let Some(Some(cid)) = customer {
        let c = &st.customers[&cid];
        let mut r = json!({"type": "customer", "id": cid, "site": c["site"]});
        if !c["externalId"].is_null() {
            r["externalId"] = c["externalId"].clone();
        }
        task.insert("customer".into(), r);
    }
    if let Some(Some(oid)) = order {
        let o = &st.orders[&oid];
        let mut r = json!({"id": oid, "number": o["number"], "site": o["site"]});
        if !o["externalId"].is_null() {
            r["externalId"] = o["externalId"].clone();
        }
        task.insert("order".into(), r);
    }
    Ok(())
}

fn tasks_create(st: &mut CrmState, req: &ApiRequest) -> Answer {
    let posted = req.json_object("task")?;
    if let Some(s) = req.param("site")
        && !st.cfg.sites.iter().any(|k| k == s)
    {
        return Err(input_error("site", NOT_VALID));
    }
    let id = st.next_task_id;
    let mut task = Map::new();
    task.insert("id".into(), json!(id));
    task.insert("createdAt".into(), json!(now()));
    task.insert("complete".into(), json!(false));
    apply_task(st, &posted, &mut task, true)?;
    record_unknown(st, &req.path, "task", &posted, TASK_FIELDS);
    st.next_task_id += 1;
    st.tasks.insert(id, Value::Object(task));
    created(json!({"success": true, "id": id}))
}

fn task_edit(st: &mut CrmState, req: &ApiRequest, id: &str) -> Answer {
    let id = parse_id(id)?;
    let posted = req.json_object("task")?;
    let mut task = match st.tasks.get(&id) {
        Some(Value::Object(t)) => t.clone(),
        _ => return Err(not_found()),
    };
    apply_task(st, &posted, &mut task, false)?;
    record_unknown(st, &req.path, "task", &posted, TASK_FIELDS);
    st.tasks.insert(id, Value::Object(task));
    // No `id` in the answer (PROTOCOLS §2.8).
    ok(json!({"success": true}))
}

fn task_get(st: &CrmState, id: &str) -> Answer {
    let task = st.tasks.get(&parse_id(id)?).ok_or_else(not_found)?;
    ok(json!({"success": true, "task": task}))
}

fn tasks_list(st: &CrmState, req: &ApiRequest) -> Answer {
    // User ids: anything else is refused, as a filter value that is not an id would be.
    let performers = req
        .query_all("filter[performers][]")
        .into_iter()
        .map(str::parse::<u64>)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| input_error("filter[performers][]", NOT_VALID))?;
    let status = req.query_one("filter[status]");
    let done = match status {
        None => None,
        Some("completed") => Some(true),
        Some("performing") => Some(false),
        Some(_) => return Err(input_error("filter[status]", NOT_VALID)),
    };
    let tasks = st
        .tasks
        .values()
        .filter(|t| {
            performers.is_empty()
                || as_id(&t["performer"]).is_some_and(|id| performers.contains(&id))
        })
        .filter(|t| done.is_none_or(|d| t["complete"].as_bool() == Some(d)))
        .cloned()
        .collect();
    let (pagination, tasks) = paginate(req, tasks)?;
    ok(json!({"success": true, "pagination": pagination, "tasks": tasks}))
}

// === References ===

fn title(code: &str) -> String {
    let mut chars = code.chars();
    chars
        .next()
        .map(|f| {
            f.to_uppercase()
                .chain(chars)
                .collect::<String>()
                .replace('-', " ")
        })
        .unwrap_or_default()
}

fn statuses(st: &CrmState) -> Answer {
    let mut map = Map::new();
    for (group, codes) in &st.status_groups {
        for (i, code) in codes.iter().enumerate() {
            map.insert(
                code.clone(),
                json!({"name": title(code), "code": code, "active": true, "ordering": (i + 1) * 10, "group": group}),
            );
        }
    }
    ok(json!({"success": true, "statuses": map}))
}

fn status_groups(st: &CrmState) -> Answer {
    let mut map = Map::new();
    for (i, (group, codes)) in st.status_groups.iter().enumerate() {
        // `process` is false for new as well as complete/cancel (PROTOCOLS §2.8).
        let process = !matches!(group.as_str(), "new" | "complete" | "cancel");
        map.insert(
            group.clone(),
            json!({"name": title(group), "code": group, "active": true, "ordering": (i + 1) * 10, "process": process, "statuses": codes}),
        );
    }
    ok(json!({"success": true, "statusGroups": map}))
}

fn order_methods(st: &CrmState) -> Answer {
    let mut map = Map::new();
    for m in &st.order_methods {
        map.insert(
            m.clone(),
            json!({"name": title(m), "code": m, "active": true, "defaultForCrm": m == "phone", "defaultForApi": m == "phone"}),
        );
    }
    ok(json!({"success": true, "orderMethods": map}))
}

fn sites(st: &CrmState) -> Answer {
    let mut map = Map::new();
    for s in &st.cfg.sites {
        map.insert(s.clone(), json!({"name": title(s), "code": s}));
    }
    ok(json!({"success": true, "sites": map}))
}

// === Integration modules ===

fn module_get(st: &CrmState, code: &str) -> Answer {
    let m = st.modules.get(code).ok_or_else(not_found)?;
    ok(json!({"success": true, "integrationModule": m}))
}

fn module_edit(st: &mut CrmState, req: &ApiRequest, code: &str) -> Answer {
    let posted = req.json_object("integrationModule")?;
    let creating = !st.modules.contains_key(code);
    let mut merged = st
        .modules
        .get(code)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (k, v) in &posted {
        merged.insert(k.clone(), v.clone());
    }
    merged.entry("code").or_insert_with(|| json!(code));
    let mut errs = Errors::default();
    if merged["code"].as_str() != Some(code) {
        errs.add("code", "Code must match the code in the URL.");
    }
    match merged.get("integrationCode").and_then(Value::as_str) {
        Some(ic) if code.starts_with(ic) => {}
        Some(_) => errs.add("code", "Code prefix must match integrationCode"),
        None => errs.add("integrationCode", NOT_BLANK),
    }
    for k in ["name", "clientId", "baseUrl"] {
        if merged
            .get(k)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            errs.add(k, NOT_BLANK);
        }
    }
    if merged.get("active").is_some_and(|a| !a.is_boolean()) {
        errs.add("active", NOT_VALID);
    }
    let telephony = &merged
        .get("integrations")
        .map_or(Value::Null, |i| i["telephony"].clone());
    let mut missing_users: Vec<u64> = Vec::new();
    let mut missing_sites: Vec<String> = Vec::new();
    if !telephony.is_null() {
        if !telephony.is_object() {
            errs.add("integrations[telephony]", NOT_VALID);
        }
        match &telephony["additionalCodes"] {
            Value::Null => {}
            Value::Array(a) => {
                for c in a {
                    match (as_id(&c["userId"]), c["code"].as_str()) {
                        (Some(u), Some(_)) if !st.users.contains_key(&u) => missing_users.push(u),
                        (Some(_), Some(_)) => {}
                        _ => errs.add("integrations[telephony][additionalCodes]", NOT_VALID),
                    }
                }
            }
            _ => errs.add("integrations[telephony][additionalCodes]", NOT_VALID),
        }
        match &telephony["externalPhones"] {
            Value::Null => {}
            Value::Array(a) => {
                for p in a {
                    match (p["siteCode"].as_str(), p["externalPhone"].as_str()) {
                        (Some(s), Some(_)) if !st.cfg.sites.iter().any(|k| k == s) => {
                            missing_sites.push(s.to_owned());
                        }
                        (Some(_), Some(_)) => {}
                        _ => errs.add("integrations[telephony][externalPhones]", NOT_VALID),
                    }
                }
            }
            _ => errs.add("integrations[telephony][externalPhones]", NOT_VALID),
        }
    }
    errs.finish()?;
    st.modules.insert(code.to_owned(), Value::Object(merged));
    let mut info = Map::new();
    if !missing_users.is_empty() {
        info.insert("notExistUsersIds".into(), json!(missing_users));
    }
    if !missing_sites.is_empty() {
        info.insert("notExistSiteCodes".into(), json!(missing_sites));
    }
    // An empty map is `[]` (PROTOCOLS §2.2, §2.4).
    let info = if info.is_empty() {
        json!([])
    } else {
        Value::Object(info)
    };
    let body = json!({"success": true, "info": info});
    if creating { created(body) } else { ok(body) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_match_the_query_digits_as_a_substring_of_the_stored_digits() {
        let nsn = "981234567";
        for stored in [
            "0981234567",
            "+380981234567",
            "380981234567",
            "(098) 123-45-67",
            "+38 (098) 123 45 67",
            "098-123-45-67",
        ] {
            assert!(phones_match(stored, nsn), "{stored}");
        }
        assert!(!phones_match("0981234567", "380981234567"));
        assert!(!phones_match("(098) 123-45-67", "+380981234567"));
        assert!(phones_match("+380981234567", "380981234567"));
        assert!(
            phones_match("10981234567", nsn),
            "a substring, not a number match"
        );
        assert!(!phones_match("0981234567", "0981234568"));
        assert!(!phones_match("", ""));
        assert!(!phones_match("0981234567", "-"));
    }

    #[test]
    fn exact_formats_refuse_seconds_and_short_fields() {
        assert!(parse_exact("2024-07-31 14:59", "%Y-%m-%d %H:%M", 16));
        assert!(!parse_exact("2024-07-31 14:59:35", "%Y-%m-%d %H:%M", 16));
        assert!(!parse_exact("2024-7-31 14:59", "%Y-%m-%d %H:%M", 16));
        assert!(parse_exact("2024-07-31 14:59:35", "%Y-%m-%d %H:%M:%S", 19));
        assert!(!parse_exact("2024-07-31T14:59:35", "%Y-%m-%d %H:%M:%S", 19));
    }
}
