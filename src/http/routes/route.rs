//! `GET|POST /ringostat/route`: the pre-call lookup (SPEC §3). Always 200 within the deadline,
//! whatever the request holds: a caller that is missing, empty, `null`, an array, an object or
//! text that is not a number, an unknown `format`, a body that cannot be read, even a panic
//! inside the lookup — each answers "nobody" (a body over `server.body_limit_bytes` is the
//! one exception: 413, SPEC §9).

use std::panic::AssertUnwindSafe;

use axum::{
    Json,
    extract::{Request, State},
    http::{HeaderMap, header, request::Parts},
    response::{IntoResponse, Response},
};
use futures::FutureExt;
use serde_json::{Map, Value, json};

use crate::{
    config::LookupFormat,
    domain::lookup::{LookupDecision, LookupReason},
    http::{
        AppState,
        error::ApiError,
        payload::{self, Payload},
    },
    lookup::LookupRequest,
};

/// Accepted names of the caller field, in order of preference.
pub const CALLER_FIELDS: &[&str] = &["caller", "caller_number", "userfield", "phone"];

/// Takes the request whole (no `Uri`/`HeaderMap` copies): this is the hot path.
pub async fn route(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, state.config.server.body_limit_bytes).await {
        Ok(body) => answer(&state, &parts, &body).await,
        Err(_) => ApiError::TooLarge.into_response(),
    }
}

/// The lookup for a request whose body has been read ([`crate::http::server`] calls this
/// directly on its fast path, reading the body without axum's boxing). A panic inside the
/// lookup answers "nobody" (reason `unavailable`) in the requested format when that can
/// still be told, else as text with an empty body.
pub async fn answer(state: &AppState, parts: &Parts, body: &[u8]) -> Response {
    match AssertUnwindSafe(lookup(state, parts, body))
        .catch_unwind()
        .await
    {
        Ok(response) => response,
        Err(_panic) => {
            tracing::error!("The lookup panicked; answering nobody.");
            let decision = LookupDecision::nobody(LookupReason::Unavailable);
            state.metrics.lookup_outcome(decision.reason).inc();
            let default = state.config.lookup.format;
            let (format, jsonrpc_id) = std::panic::catch_unwind(AssertUnwindSafe(|| {
                let payload = read_leniently(parts, body);
                (requested_format(&payload, default), payload.jsonrpc_id)
            }))
            .unwrap_or((LookupFormat::Text, None));
            render(
                decision,
                format,
                &state.config.lookup.response_key,
                jsonrpc_id,
            )
        }
    }
}

async fn lookup(state: &AppState, parts: &Parts, body: &[u8]) -> Response {
    crate::http::panic::probe(&parts.headers);
    let payload = read_leniently(parts, body);
    let format = requested_format(&payload, state.config.lookup.format);
    // No caller (or `null`, an array, an object) is no number: the lookup says so.
    let request = LookupRequest {
        call_id: payload.text("call_id"),
        caller: payload.first_text(CALLER_FIELDS).unwrap_or_default(),
        dst: payload.text("dst"),
        site: payload.text("site"),
        utm_source: payload.text("utm_source"),
        utm_medium: payload.text("utm_medium"),
        utm_campaign: payload.text("utm_campaign"),
    };
    let decision = state.lookup.lookup(&request).await;
    render(
        decision,
        format,
        &state.config.lookup.response_key,
        payload.jsonrpc_id,
    )
}

/// The request's fields. A body that cannot be read (not JSON on a JSON content type, a JSON
/// array, JSON-RPC `params` that are not an object) counts as absent, so the lookup answers
/// "nobody" rather than an error; the query string and a JSON-RPC `id` still count.
fn read_leniently(parts: &Parts, body: &[u8]) -> Payload {
    match payload::read(parts.uri.query(), &parts.headers, body) {
        Ok(payload) => payload,
        Err(_) => {
            // The error is not logged: its text may quote the input.
            tracing::debug!("Lookup body unreadable; reading the query string alone.");
            let mut payload =
                payload::read(parts.uri.query(), &HeaderMap::new(), b"").unwrap_or_default();
            payload.jsonrpc_id = jsonrpc_id(body);
            payload
        }
    }
}

/// The `id` of a body that is a JSON-RPC 2.0 request object, however wrong its `params`.
fn jsonrpc_id(body: &[u8]) -> Option<Value> {
    match serde_json::from_slice::<Value>(body).ok()? {
        Value::Object(mut object) if object.get("jsonrpc") == Some(&Value::from("2.0")) => {
            Some(object.remove("id").unwrap_or(Value::Null))
        }
        _ => None,
    }
}

/// `format` when it names a known format; else `jsonrpc` for a JSON-RPC call; else
/// `lookup.format`. An unknown `format` is not an error: the lookup always answers.
fn requested_format(payload: &Payload, default: LookupFormat) -> LookupFormat {
    match payload.text("format").as_deref() {
        Some("text") => LookupFormat::Text,
        Some("json") => LookupFormat::Json,
        Some("jsonrpc") => LookupFormat::Jsonrpc,
        _ if payload.jsonrpc_id.is_some() => LookupFormat::Jsonrpc,
        _ => default,
    }
}

fn render(
    decision: LookupDecision,
    format: LookupFormat,
    key: &str,
    jsonrpc_id: Option<Value>,
) -> Response {
    let object = |decision: LookupDecision| {
        let mut m = Map::with_capacity(3);
        m.insert(
            key.to_owned(),
            decision.destination.map_or(Value::Null, Value::String),
        );
        m.insert(
            "manager_id".to_owned(),
            decision
                .manager_id
                .map_or(Value::Null, |m| Value::from(m.0)),
        );
        m.insert(
            "reason".to_owned(),
            Value::String(decision.reason.as_str().to_owned()),
        );
        Value::Object(m)
    };
    match format {
        LookupFormat::Text => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            decision.destination.unwrap_or_default(),
        )
            .into_response(),
        LookupFormat::Json => Json(object(decision)).into_response(),
        LookupFormat::Jsonrpc => Json(json!({
            "jsonrpc": "2.0",
            "id": jsonrpc_id.unwrap_or(Value::Null),
            "result": object(decision),
        }))
        .into_response(),
    }
}
