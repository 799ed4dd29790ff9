//! `/admin` (bearer `admin.token`; disabled when the token is empty): the call log with
//! filters, the queue, dead letters, quarantine, replay and retry-now, the routing rules and
//! their reload, and the sandbox CRM's records.

use axum::{
    Json,
    extract::{Path, Query, Request, State},
    http::header::AUTHORIZATION,
    middleware::Next,
    response::Response,
};
use chrono::{NaiveDate, NaiveDateTime};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    call_trail,
    domain::{
        call::CallOutcome,
        call_log::{CallLogEntry, CallLogFilter, CallLogPosition, LoggedCall, TrailStep},
        manager::ManagerId,
        phone_number::PhoneNormalizer,
    },
    http::{AppState, error::ApiError},
    lookup::{LookupExplanation, LookupRequest},
};

/// Default and largest page of an admin listing.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 10_000;

/// Checks `Authorization: Bearer <admin.token>` in constant time.
pub async fn require_admin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let expected = &state.config.admin.token;
    if expected.is_empty() {
        return Err(ApiError::NotConfigured("admin.token"));
    }
    let given = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if expected.matches(given.as_bytes()) {
        Ok(next.run(request).await)
    } else {
        Err(ApiError::Unauthorized)
    }
}

fn unexpected(e: impl Into<anyhow::Error>) -> ApiError {
    ApiError::Unexpected(e.into())
}

#[derive(Debug, Deserialize)]
pub struct Limit {
    limit: Option<usize>,
}

impl Limit {
    pub fn get(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
    }
}

/// The call log's filters as query parameters, shared by `GET /admin/calls` and the web
/// page. Empty values mean "any" (an HTML form sends every field).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub struct CallLogQuery {
    #[serde(default)]
    pub site: String,
    /// The tracking number dialled, in any format.
    #[serde(default)]
    pub external_number: String,
    /// `Y-m-d`.
    #[serde(default)]
    pub order_date: String,
    #[serde(default)]
    pub manager_id: String,
    #[serde(default)]
    pub result: String,
    /// The caller's number in any format, or the caller field as received (`anonymous`).
    #[serde(default)]
    pub caller: String,
    /// Calls at or after (`Y-m-dTH:M[:S]` or `Y-m-d H:M[:S]`, the call dates' clock).
    #[serde(default)]
    pub from: String,
    /// Calls before.
    #[serde(default)]
    pub to: String,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: String,
    #[serde(default)]
    pub limit: Option<usize>,
}

/// A call log query read and checked.
#[derive(Debug)]
pub struct CallLogRequest {
    pub filter: CallLogFilter,
    pub before: Option<CallLogPosition>,
    pub limit: usize,
}

fn non_empty(s: &str) -> Option<&str> {
    let s = s.trim();
    (!s.is_empty()).then_some(s)
}

fn parse_moment(field: &str, raw: &str) -> Result<Option<NaiveDateTime>, ApiError> {
    let Some(raw) = non_empty(raw) else {
        return Ok(None);
    };
    [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(raw, f).ok())
    .or_else(|| {
        NaiveDate::parse_from_str(raw, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
    })
    .map(Some)
    .ok_or_else(|| {
        ApiError::bad_request(
            "bad_date",
            Some(field),
            format!("{field} must be a date and time such as 2024-07-31T14:00"),
        )
    })
}

impl CallLogQuery {
    /// Checks every field; numbers become E.164 the way the call log stores them.
    pub fn read(&self, normalizer: &PhoneNormalizer) -> Result<CallLogRequest, ApiError> {
        let external_number = non_empty(&self.external_number)
            .map(|raw| {
                normalizer
                    .parse(raw)
                    .map(|p| p.number.e164().to_owned())
                    .map_err(|e| {
                        ApiError::bad_request(
                            "bad_phone",
                            Some("external_number"),
                            format!("not a phone number: {e}"),
                        )
                    })
            })
            .transpose()?;
        // A caller that is not a number is matched as received (SIP login, `anonymous`).
        let caller = non_empty(&self.caller).map(|raw| {
            normalizer
                .parse(raw)
                .map_or_else(|_| raw.to_owned(), |p| p.number.e164().to_owned())
        });
        let order_date = non_empty(&self.order_date)
            .map(|raw| {
                NaiveDate::parse_from_str(raw, "%Y-%m-%d")
                    .map(|d| d.format("%Y-%m-%d").to_string())
                    .map_err(|_| {
                        ApiError::bad_request(
                            "bad_date",
                            Some("order_date"),
                            "order_date must be a date such as 2024-07-31",
                        )
                    })
            })
            .transpose()?;
        let manager_id = non_empty(&self.manager_id)
            .map(|raw| {
                raw.parse().map(ManagerId).map_err(|_| {
                    ApiError::bad_request(
                        "bad_manager",
                        Some("manager_id"),
                        "manager_id must be a CRM user id",
                    )
                })
            })
            .transpose()?;
        let result = non_empty(&self.result)
            .map(|raw| {
                CallOutcome::ALL
                    .iter()
                    .find(|o| o.as_str() == raw)
                    .map(|o| o.as_str().to_owned())
                    .ok_or_else(|| {
                        let all: Vec<&str> = CallOutcome::ALL.iter().map(|o| o.as_str()).collect();
                        ApiError::bad_request(
                            "bad_result",
                            Some("result"),
                            format!("result must be one of {}", all.join(", ")),
                        )
                    })
            })
            .transpose()?;
        let before = non_empty(&self.cursor)
            .map(|raw| {
                CallLogPosition::parse_cursor(raw)
                    .map_err(|e| ApiError::bad_request("bad_cursor", Some("cursor"), e.to_string()))
            })
            .transpose()?;
        Ok(CallLogRequest {
            filter: CallLogFilter {
                site: non_empty(&self.site).map(str::to_owned),
                external_number,
                order_date,
                manager_id,
                result,
                caller,
                call_id: None,
                from: parse_moment("from", &self.from)?,
                to: parse_moment("to", &self.to)?,
            },
            before,
            limit: Limit { limit: self.limit }.get(),
        })
    }
}

/// One page of the call log and the cursor of the next one (`None` on the last page).
pub async fn call_log_page(
    state: &AppState,
    request: &CallLogRequest,
) -> Result<(Vec<LoggedCall>, Option<String>), ApiError> {
    // One more than asked tells whether there is a next page.
    let mut calls = state
        .store
        .query_call_log(&request.filter, request.before, request.limit + 1)
        .await
        .map_err(unexpected)?;
    let next = if calls.len() > request.limit {
        calls.truncate(request.limit);
        calls.last().map(|c| c.position.to_cursor())
    } else {
        None
    };
    Ok((calls, next))
}

/// `GET /admin/calls`: the call log, newest first, filtered; `next_cursor` pages on.
pub async fn call_log(
    State(state): State<AppState>,
    Query(q): Query<CallLogQuery>,
) -> Result<Json<Value>, ApiError> {
    let request = q.read(&state.normalizer)?;
    let (calls, next) = call_log_page(&state, &request).await?;
    let calls: Vec<&CallLogEntry> = calls.iter().map(|c| &c.entry).collect();
    Ok(Json(json!({ "calls": calls, "next_cursor": next })))
}

/// A call's log entries and decision trail, or "not found" when callgate has neither.
pub async fn call_record(
    state: &AppState,
    call_id: &str,
) -> Result<(Vec<CallLogEntry>, Vec<TrailStep>), ApiError> {
    let filter = CallLogFilter {
        call_id: Some(call_id.to_owned()),
        ..CallLogFilter::default()
    };
    let entries = state
        .store
        .query_call_log(&filter, None, DEFAULT_LIMIT)
        .await
        .map_err(unexpected)?
        .into_iter()
        .map(|c| c.entry)
        .collect::<Vec<_>>();
    let trail = call_trail::read(&*state.store, call_id)
        .await
        .map_err(unexpected)?;
    if entries.is_empty() && trail.is_empty() {
        return Err(ApiError::NotFound(format!("call {call_id}")));
    }
    Ok((entries, trail))
}

/// `GET /admin/calls/{id}`: the call's log entries and its decision trail.
pub async fn call_detail(
    State(state): State<AppState>,
    Path(call_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (calls, trail) = call_record(&state, &call_id).await?;
    Ok(Json(
        json!({ "call_id": call_id, "calls": calls, "trail": trail }),
    ))
}

#[derive(Debug, Deserialize)]
pub struct ExplainQuery {
    #[serde(default)]
    caller: String,
    dst: Option<String>,
    site: Option<String>,
}

/// `GET /admin/lookup/explain?caller=&dst=[&site=]`: what a lookup would answer now, and why.
pub async fn explain_lookup(
    State(state): State<AppState>,
    Query(q): Query<ExplainQuery>,
) -> Result<Json<LookupExplanation>, ApiError> {
    if q.caller.trim().is_empty() {
        return Err(ApiError::bad_request(
            "missing_field",
            Some("caller"),
            "caller is required",
        ));
    }
    let request = LookupRequest {
        caller: q.caller,
        dst: q.dst.filter(|d| !d.trim().is_empty()),
        site: q.site.filter(|s| !s.trim().is_empty()),
        ..LookupRequest::default()
    };
    Ok(Json(state.lookup.explain(&request).await))
}

pub async fn queue(
    State(state): State<AppState>,
    Query(limit): Query<Limit>,
) -> Result<Json<Value>, ApiError> {
    let depth = state.store.queue_depth().await.map_err(unexpected)?;
    let tasks = state
        .store
        .list_queue(limit.get())
        .await
        .map_err(unexpected)?;
    let tasks: Vec<Value> = tasks
        .into_iter()
        .map(|t| {
            json!({
                "id": t.id, "group": t.group, "attempt": t.attempt,
                "enqueued_at_ms": t.enqueued_at_ms, "last_error": t.last_error,
            })
        })
        .collect();
    Ok(Json(json!({ "depth": depth, "tasks": tasks })))
}

pub async fn retry_now(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let n = state.store.retry_all_now().await.map_err(unexpected)?;
    Ok(Json(json!({ "rescheduled": n })))
}

pub async fn dead_letters(
    State(state): State<AppState>,
    Query(limit): Query<Limit>,
) -> Result<Json<Value>, ApiError> {
    let letters = state
        .store
        .list_dead_letters(limit.get())
        .await
        .map_err(unexpected)?;
    let letters: Vec<Value> = letters
        .into_iter()
        .map(|d| {
            json!({
                "id": d.task.id, "group": d.task.group, "attempts": d.task.attempt,
                "reason": d.reason, "failed_at_ms": d.failed_at_ms,
                "payload": serde_json::from_slice::<Value>(&d.task.payload)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&d.task.payload).into_owned())),
            })
        })
        .collect();
    Ok(Json(json!({ "dead_letters": letters })))
}

pub async fn replay_dead_letter(
    State(state): State<AppState>,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    if state
        .store
        .replay_dead_letter(id)
        .await
        .map_err(unexpected)?
    {
        Ok(Json(json!({ "replayed": id })))
    } else {
        Err(ApiError::NotFound(format!("dead letter {id}")))
    }
}

pub async fn replay_all_dead_letters(
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let letters = state
        .store
        .list_dead_letters(MAX_LIMIT)
        .await
        .map_err(unexpected)?;
    let mut replayed = Vec::with_capacity(letters.len());
    for d in letters {
        if state
            .store
            .replay_dead_letter(d.task.id)
            .await
            .map_err(unexpected)?
        {
            replayed.push(d.task.id);
        }
    }
    Ok(Json(json!({ "replayed": replayed })))
}

pub async fn quarantine(
    State(state): State<AppState>,
    Query(limit): Query<Limit>,
) -> Result<Json<Value>, ApiError> {
    let entries = state
        .store
        .list_quarantine(limit.get())
        .await
        .map_err(unexpected)?;
    Ok(Json(json!({ "quarantine": entries })))
}

/// `GET /admin/rules`: the live routing rules, in evaluation order.
pub async fn rules(State(state): State<AppState>) -> Json<Value> {
    let rules = state.rules.current();
    let list: Vec<Value> = rules
        .all()
        .iter()
        .map(|r| json!({"name": r.name, "file": r.file, "line": r.line, "actions": r.describe_actions()}))
        .collect();
    Json(json!({"dir": state.rules.dir().display().to_string(), "rules": list}))
}

/// `POST /admin/rules/reload`: reads `rules.dir` again. 200 with the new count; 400
/// `invalid_rules` with every file:line problem when the new files are bad (the old rules
/// keep running).
pub async fn reload_rules(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    match state.rules.reload() {
        Ok(rules) => Ok(Json(
            json!({"reloaded": true, "rules": rules.len(), "files": rules.file_count()}),
        )),
        Err(e) => Err(ApiError::bad_request(
            "invalid_rules",
            None,
            format!("{e}; the previous rules stay in force"),
        )),
    }
}

pub async fn sandbox_records(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let sandbox = state.sandbox.as_ref().ok_or(ApiError::NotConfigured(
        "the sandbox CRM (crm.kind = \"sandbox\")",
    ))?;
    let snapshot = sandbox.snapshot().await.map_err(unexpected)?;
    Ok(Json(serde_json::to_value(snapshot).map_err(unexpected)?))
}

#[derive(Debug, Deserialize)]
pub struct NewSandboxCustomer {
    phones: Vec<String>,
    manager_id: Option<u64>,
    site: Option<String>,
    /// Optional orders to add: status codes.
    #[serde(default)]
    orders: Vec<String>,
}

/// Adds a customer to the sandbox CRM as a shop employee would type it (demos, tests), and
/// applies the sandbox's history to the owner mirror before answering.
pub async fn sandbox_add_customer(
    State(state): State<AppState>,
    Json(body): Json<NewSandboxCustomer>,
) -> Result<Json<Value>, ApiError> {
    let sandbox = state.sandbox.as_ref().ok_or(ApiError::NotConfigured(
        "the sandbox CRM (crm.kind = \"sandbox\")",
    ))?;
    let mut phones = Vec::with_capacity(body.phones.len());
    for (i, raw) in body.phones.iter().enumerate() {
        let parsed = state.normalizer.parse(raw).map_err(|e| {
            ApiError::bad_request(
                "bad_phone",
                Some(&format!("phones[{i}]")),
                format!("not a phone number: {e}"),
            )
        })?;
        phones.push((raw.clone(), parsed.number));
    }
    if phones.is_empty() {
        return Err(ApiError::bad_request(
            "missing_field",
            Some("phones"),
            "at least one phone is required",
        ));
    }
    let site = body
        .site
        .unwrap_or_else(|| state.config.crm.default_site.clone());
    let manager = body.manager_id.map(ManagerId);
    let id = sandbox
        .add_customer(&site, &phones, manager)
        .await
        .map_err(unexpected)?;
    let mut orders = Vec::with_capacity(body.orders.len());
    for status in &body.orders {
        orders.push(
            sandbox
                .add_order(&site, id, status, manager)
                .await
                .map_err(|e| ApiError::bad_request("bad_order", Some("orders"), e.reason()))?,
        );
    }
    // The sandbox's history has the new customer: read it into the owner mirror now, so
    // the next lookup routes it (the same path a retailCRM change takes, only sooner).
    if let Some(sync) = &state.sync {
        sync.poll_now().await;
    }
    Ok(Json(json!({ "id": id, "orders": orders })))
}
