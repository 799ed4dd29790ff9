//! `GET|POST /ringostat/route`: the pre-call lookup (SPEC §3). Always 200 within the deadline
//! for a readable request; 400 only when the request itself cannot be read or has no caller.

use axum::{
    Json,
    extract::{Request, State},
    http::{header, request::Parts},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};

use crate::{
    config::LookupFormat,
    domain::lookup::LookupDecision,
    http::{AppState, error::ApiError, payload},
    lookup::LookupRequest,
};

/// Accepted names of the caller field, in order of preference.
pub const CALLER_FIELDS: &[&str] = &["caller", "caller_number", "userfield", "phone"];

/// Takes the request whole (no `Uri`/`HeaderMap` copies): this is the hot path.
pub async fn route(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, state.config.server.body_limit_bytes)
        .await
        .map_err(|_| ApiError::TooLarge)?;
    answer(&state, &parts, &body).await
}

/// The lookup for a request whose body has been read ([`crate::http::server`] calls this
/// directly on its fast path, reading the body without axum's boxing).
pub async fn answer(state: &AppState, parts: &Parts, body: &[u8]) -> Result<Response, ApiError> {
    let payload = payload::read(parts.uri.query(), &parts.headers, body)?;
    let format = match payload.text("format") {
        Some(f) => match f.as_str() {
            "text" => LookupFormat::Text,
            "json" => LookupFormat::Json,
            "jsonrpc" => LookupFormat::Jsonrpc,
            other => {
                return Err(ApiError::bad_request(
                    "bad_format",
                    Some("format"),
                    format!("format {other:?} is not one of text, json, jsonrpc"),
                ));
            }
        },
        None if payload.jsonrpc_id.is_some() => LookupFormat::Jsonrpc,
        None => state.config.lookup.format,
    };
    let Some(caller) = payload.first_text(CALLER_FIELDS) else {
        return Err(ApiError::bad_request(
            "missing_field",
            Some("caller"),
            "no caller number: send it as caller (or caller_number, userfield, phone)",
        ));
    };
    let request = LookupRequest {
        caller,
        dst: payload.text("dst"),
        site: payload.text("site"),
        utm_source: payload.text("utm_source"),
        utm_medium: payload.text("utm_medium"),
        utm_campaign: payload.text("utm_campaign"),
    };
    let decision = state.lookup.lookup(&request).await;
    Ok(render(
        &decision,
        format,
        &state.config.lookup.response_key,
        payload.jsonrpc_id,
    ))
}

fn render(
    decision: &LookupDecision,
    format: LookupFormat,
    key: &str,
    jsonrpc_id: Option<Value>,
) -> Response {
    let object = || {
        let mut m = Map::with_capacity(3);
        m.insert(
            key.to_owned(),
            decision
                .destination
                .as_ref()
                .map_or(Value::Null, |d| Value::String(d.clone())),
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
            decision.destination.clone().unwrap_or_default(),
        )
            .into_response(),
        LookupFormat::Json => Json(object()).into_response(),
        LookupFormat::Jsonrpc => Json(json!({
            "jsonrpc": "2.0",
            "id": jsonrpc_id.unwrap_or(Value::Null),
            "result": object(),
        }))
        .into_response(),
    }
}
