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
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    domain::{call_log::CallLogFilter, manager::ManagerId},
    http::{AppState, auth, error::ApiError},
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
    let expected = state.config.admin.token.expose_secret();
    if expected.is_empty() {
        return Err(ApiError::NotConfigured("admin.token"));
    }
    let given = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if auth::secret_matches(given.as_bytes(), expected.as_bytes()) {
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
    fn get(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
    }
}

#[derive(Debug, Deserialize)]
pub struct CallLogQuery {
    site: Option<String>,
    external_number: Option<String>,
    order_date: Option<String>,
    manager_id: Option<u64>,
    result: Option<String>,
    limit: Option<usize>,
}

pub async fn call_log(
    State(state): State<AppState>,
    Query(q): Query<CallLogQuery>,
) -> Result<Json<Value>, ApiError> {
    let filter = CallLogFilter {
        site: q.site,
        external_number: q.external_number,
        order_date: q.order_date,
        manager_id: q.manager_id.map(ManagerId),
        result: q.result,
    };
    let limit = Limit { limit: q.limit }.get();
    let calls = state
        .store
        .query_call_log(&filter, limit)
        .await
        .map_err(unexpected)?;
    Ok(Json(json!({ "calls": calls })))
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
