//! `GET|POST /retailcrm/make-call`: retailCRM's `makeCallUrl` (click-to-call, flow D;
//! PROTOCOLS §2.5): `clientId`, `code` (the user's extension), `phone` (the client),
//! `userId`, `externalPhone` (optional).
//!
//! The manager is found in `[[managers]]` by `userId`, else by `code`; Ringostat's
//! `POST /callback/outward_call` first rings the manager's own number (`phone` in
//! `[[managers]]`, which must be connected to the Ringostat project), then the client's
//! number, normalized. `externalPhone` (the line to show the client) has no counterpart in
//! `outward_call` and is not used.
//!
//! Answers: 200 `{"success":true}` once Ringostat accepted the call; otherwise a JSON error
//! retailCRM can show: 401/503 (`clientId`), 400 (no or a bad `phone`, a bad `userId`), 422
//! (a manager callgate does not know, or one without a number of their own), 502 (Ringostat
//! refused the call, refused callgate's key, or is unreachable), 503 (the Ringostat API is not
//! configured).

use axum::{Json, extract::State};
use serde_json::{Value, json};

use crate::{
    domain::manager::{Manager, ManagerId},
    http::{AppState, auth::CrmCallback, error::ApiError, payload::Payload},
    ringostat::RingostatError,
};

pub async fn make_call(
    State(state): State<AppState>,
    CrmCallback(payload): CrmCallback,
) -> Result<Json<Value>, ApiError> {
    let Some(ringostat) = &state.ringostat else {
        return Err(ApiError::NotConfigured(
            "the Ringostat API (ringostat.auth_key, ringostat.project_id)",
        ));
    };
    let manager = find_manager(&state, &payload)?;
    let extension = manager.phone.as_ref().ok_or_else(|| {
        ApiError::unprocessable(
            "manager_has_no_phone",
            Some("userId"),
            format!(
                "manager {} has no phone of their own in [[managers]]; Ringostat rings it first",
                manager.id
            ),
        )
    })?;
    let raw = payload.text("phone").ok_or_else(|| {
        ApiError::bad_request("missing_field", Some("phone"), "phone is required")
    })?;
    let destination = state
        .normalizer
        .parse(&raw)
        .map_err(|e| ApiError::bad_request("bad_phone", Some("phone"), format!("phone: {e}")))?
        .number;
    ringostat
        .outward_call(extension, &destination)
        .await
        .map_err(|e| {
            tracing::warn!(manager = %manager.id, client = %destination.masked(), error = %e, "Ringostat did not place a click-to-call.");
            match e {
                RingostatError::Refused { detail, .. } => ApiError::upstream(
                    "ringostat_refused",
                    format!("Ringostat refused the call: {detail}"),
                ),
                RingostatError::Unauthorized { .. } => ApiError::upstream(
                    "ringostat_unauthorized",
                    "Ringostat refused callgate's credentials (ringostat.auth_key, ringostat.project_id)",
                ),
                other => ApiError::upstream(
                    "ringostat_unavailable",
                    format!("Ringostat could not be reached: {other}"),
                ),
            }
        })?;
    tracing::info!(manager = %manager.id, client = %destination.masked(), "Click-to-call placed with Ringostat.");
    Ok(Json(json!({"success": true})))
}

/// The manager by `userId`, else by `code`.
fn find_manager<'a>(state: &'a AppState, payload: &Payload) -> Result<&'a Manager, ApiError> {
    let user_id = payload.user_id()?;
    let code = payload.text("code");
    user_id
        .and_then(|id| state.directory.get(ManagerId(id)))
        .or_else(|| code.as_deref().and_then(|c| state.directory.by_code(c)))
        .ok_or_else(|| {
            let who = match (user_id, code.as_deref()) {
                (Some(id), Some(c)) => format!("user {id} (code {c:?})"),
                (Some(id), None) => format!("user {id}"),
                (None, Some(c)) => format!("code {c:?}"),
                (None, None) => "no userId or code given".to_owned(),
            };
            ApiError::unprocessable(
                "unknown_manager",
                Some("userId"),
                format!("no manager in [[managers]] for {who}"),
            )
        })
}
