//! `GET|POST /retailcrm/user-status`: retailCRM's `changeUserStatusUrl` callback
//! (`clientId`, `userId`, `code`, `status`). The new status is stored before the answer, so
//! the next lookup already sees it.

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Uri},
};
use serde_json::{Value, json};

use crate::{
    domain::manager::{ManagerId, ManagerState, ManagerStatus},
    http::{AppState, error::ApiError, payload},
};

pub async fn user_status(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let payload = payload::read(uri.query(), &headers, &body)?;
    let status: ManagerStatus = payload
        .text("status")
        .ok_or_else(|| {
            ApiError::bad_request("missing_field", Some("status"), "status is required")
        })?
        .parse()
        .map_err(|e: crate::domain::manager::UnknownStatus| {
            ApiError::bad_request("bad_status", Some("status"), e.to_string())
        })?;
    let by_user = payload.user_id()?;
    let by_code = payload
        .text("code")
        .and_then(|c| state.directory.by_code(&c).map(|m| m.id.0));
    let id = by_user.or(by_code).map(ManagerId).ok_or_else(|| {
        ApiError::bad_request(
            "missing_field",
            Some("userId"),
            "userId (or a configured extension code) is required",
        )
    })?;
    let previous = state
        .store
        .get_manager_state(id)
        .await
        .map_err(|e| ApiError::Unexpected(e.into()))?
        .unwrap_or_default();
    state
        .store
        .set_manager_state(
            id,
            ManagerState {
                status,
                online: previous.online,
            },
        )
        .await
        .map_err(|e| ApiError::Unexpected(e.into()))?;
    tracing::info!(manager = %id, status = status.as_str(), "Manager status changed.");
    Ok(Json(json!({"success": true})))
}
