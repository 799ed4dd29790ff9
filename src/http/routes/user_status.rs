//! `GET|POST /retailcrm/user-status`: retailCRM's `changeUserStatusUrl` callback
//! (`clientId`, `userId`, `code`, `status`). The caller must present `crm.client_id`
//! ([`CrmCallback`]; 401/503 and nothing changed otherwise). The new status of a manager of
//! the directory is stored before the answer and applied in memory (on Redis, also on the
//! other instances: [`crate::sync::managers`]), so the next lookup already sees it; a user
//! outside the directory is answered 200 `"ignored": "unknown_user"` and nothing is stored
//! (retailCRM reports every user's status changes, callgate routes only to its managers).

use axum::{Json, extract::State};
use serde_json::{Value, json};

use crate::{
    domain::manager::{ManagerId, ManagerState, ManagerStatus},
    http::{AppState, auth::CrmCallback, error::ApiError},
};

pub async fn user_status(
    State(state): State<AppState>,
    CrmCallback(payload): CrmCallback,
) -> Result<Json<Value>, ApiError> {
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
    if state.directory.get(id).is_none() {
        tracing::debug!(user = %id, "Status change of a user outside the manager directory ignored.");
        return Ok(Json(json!({"success": true, "ignored": "unknown_user"})));
    }
    let previous = state.managers.get(id);
    state
        .managers
        .set(&[(
            id,
            ManagerState {
                status,
                online: previous.online,
            },
        )])
        .await
        .map_err(|e| ApiError::Unexpected(e.into()))?;
    tracing::info!(manager = %id, status = status.as_str(), "Manager status changed.");
    Ok(Json(json!({"success": true})))
}
