//! Shared-secret checks of the HTTP layer (SPEC §8, §9): the webhook token, the admin bearer
//! token and retailCRM's `clientId`, all through [`crate::credential::Credential::matches`].
//!
//! retailCRM's callbacks (`/retailcrm/user-status`, `/retailcrm/make-call`) carry the
//! integration module's `clientId` (`crm.client_id`): [`check_client_id`] refuses a missing or
//! wrong one (401) and everything while it is unset (503), like the webhook token; the
//! [`CrmCallback`] extractor reads a callback's fields and checks them in one step.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::{HeaderMap, StatusCode},
};

use crate::config::Config;

use super::{
    AppState,
    error::ApiError,
    payload::{self, Payload},
};

/// The field retailCRM names its integration module's client id in.
pub const CLIENT_ID_FIELD: &str = "clientId";

/// Checks a retailCRM callback's `clientId` against `crm.client_id`: 503 while the key is
/// unset, 401 when `given` is missing or wrong.
pub fn check_client_id(config: &Config, given: Option<&str>) -> Result<(), ApiError> {
    let expected = &config.crm.client_id;
    if expected.is_empty() {
        return Err(ApiError::NotConfigured("crm.client_id"));
    }
    match given {
        Some(given) if expected.matches(given.as_bytes()) => Ok(()),
        _ => Err(ApiError::Unauthorized),
    }
}

/// The fields of an authenticated retailCRM callback (query, form, JSON or JSON-RPC, as
/// [`payload::read`]); extracting it fails with [`check_client_id`]'s refusal before the
/// handler runs, so a refused callback changes nothing.
#[derive(Debug, Clone)]
pub struct CrmCallback(pub Payload);

impl FromRequest<AppState> for CrmCallback {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let query = request.uri().query().map(str::to_owned);
        let query = query.as_deref();
        let headers = request.headers().clone();
        let body = Bytes::from_request(request, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge
            } else {
                ApiError::bad_request("unreadable_body", None, e.body_text())
            }
        })?;
        match payload::read(query, &headers, &body) {
            Ok(payload) => {
                check_client_id(&state.config, payload.text(CLIENT_ID_FIELD).as_deref())?;
                Ok(CrmCallback(payload))
            }
            // An unreadable body: the query string may still authenticate the caller, who
            // then learns what is wrong with the body; anyone else learns nothing.
            Err(unreadable) => {
                let from_query = payload::read(query, &HeaderMap::new(), &[])
                    .ok()
                    .and_then(|p| p.text(CLIENT_ID_FIELD));
                check_client_id(&state.config, from_query.as_deref())?;
                Err(unreadable)
            }
        }
    }
}
