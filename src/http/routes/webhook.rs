//! `GET|POST /ringostat/webhook?token=…[&event=start|answer|end|missed]` (SPEC §4, flow B).
//!
//! The handler only validates and stores: the token (constant time; 401 and nothing stored
//! when wrong), the payload (parsed once to prove it is readable and to compute its dedupe
//! key; 400 naming the field and a quarantine entry when not), then a durable enqueue. 200
//! means the event is on disk (or in Redis); the worker does the CRM work later. A repeated
//! delivery of the same event is answered 200 and not queued again.

use std::time::Instant;

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Uri, header::CONTENT_TYPE},
};
use serde_json::{Value, json};

use crate::{
    domain::call::CallEvent,
    http::{AppState, error::ApiError, payload},
    metrics::OutcomeLabel,
    store::EnqueueOutcome,
    worker::task::{DEDUPE_TTL, StoredWebhook, dedupe_key},
};

/// Query parameters that configure the webhook rather than describe the call.
const CONTROL_FIELDS: &[&str] = &["token", "event"];

fn outcome(state: &AppState, outcome: &'static str) {
    state
        .metrics
        .webhooks
        .get_or_create(&OutcomeLabel { outcome })
        .inc();
}

pub async fn webhook(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let started = Instant::now();
    crate::http::panic::probe(&headers);
    let expected = &state.config.ringostat.webhook_token;
    if expected.is_empty() {
        return Err(ApiError::NotConfigured("ringostat.webhook_token"));
    }
    let query: Vec<(String, String)> =
        serde_urlencoded::from_str(uri.query().unwrap_or("")).unwrap_or_default();
    let given = query
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    if !expected.matches(given.as_bytes()) {
        outcome(&state, "unauthorized");
        return Err(ApiError::Unauthorized);
    }
    let event_hint = query
        .iter()
        .find(|(k, _)| k == "event")
        .map(|(_, v)| v.clone());

    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let quarantine = |reason: String| {
        let state = state.clone();
        let raw = quarantine_text(&uri, &body);
        let content_type = content_type.clone();
        async move {
            outcome(&state, "malformed");
            state
                .store
                .quarantine(&reason, content_type.as_deref(), &raw)
                .await
                .map_err(|e| ApiError::Unexpected(e.into()))
        }
    };

    let mut payload = match payload::read(uri.query(), &headers, &body) {
        Ok(p) => p,
        Err(e) => {
            quarantine(e.to_string()).await?;
            return Err(e);
        }
    };
    for f in CONTROL_FIELDS {
        payload.fields.remove(*f);
    }
    let normalize = |raw: &str| state.normalizer.parse(raw).map(|p| p.number);
    let event = match CallEvent::parse(
        &payload.fields,
        &state.aliases,
        event_hint.as_deref(),
        &normalize,
    ) {
        Ok(event) => event,
        Err(e) => {
            quarantine(format!("{}: {}", e.field, e.problem)).await?;
            return Err(ApiError::bad_request(
                "malformed_payload",
                Some(&e.field),
                format!("{}: {}", e.field, e.problem),
            ));
        }
    };

    let stored = StoredWebhook {
        fields: payload.fields,
        event: event_hint,
        received_at_ms: crate::store::now_ms(),
    };
    let bytes = serde_json::to_vec(&stored).map_err(|e| ApiError::Unexpected(e.into()))?;
    let result = state
        .store
        .enqueue(&dedupe_key(&event), DEDUPE_TTL, &event.call_id, &bytes)
        .await
        .map_err(|e| ApiError::Unexpected(e.into()))?;
    state
        .metrics
        .webhook_ack_latency
        .observe(started.elapsed().as_secs_f64());
    match result {
        EnqueueOutcome::Accepted { id } => {
            outcome(&state, "accepted");
            state.worker_wakeup.notify_one();
            tracing::debug!(task = id, moment = %event.moment, "Call event queued.");
            Ok(Json(json!({"success": true, "queued": id})))
        }
        EnqueueOutcome::Duplicate => {
            outcome(&state, "duplicate");
            Ok(Json(json!({"success": true, "duplicate": true})))
        }
    }
}

/// What the quarantine keeps of a request: the query string (minus the token) and the body.
pub fn quarantine_text(uri: &Uri, body: &[u8]) -> String {
    let body = String::from_utf8_lossy(body);
    match uri.query() {
        Some(q) => format!("query: {}\nbody: {body}", redact_token(q)),
        None => body.into_owned(),
    }
}

/// The quarantine keeps what was sent, minus the secret.
fn redact_token(query: &str) -> String {
    query
        .split('&')
        .map(|pair| {
            if pair.starts_with("token=") {
                "token=[REDACTED]"
            } else {
                pair
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}
