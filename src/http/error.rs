//! One error type for every handler, with a stable JSON body `{"code", "detail"}`.
//! 5xx bodies are opaque; their cause is logged once, here.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; `field` names the problem field when there is one.
    #[error("{detail}")]
    BadRequest {
        code: &'static str,
        field: Option<String>,
        detail: String,
    },
    /// Well-formed, but callgate cannot act on it (e.g. a manager without a number).
    #[error("{detail}")]
    Unprocessable {
        code: &'static str,
        field: Option<String>,
        detail: String,
    },
    /// A vendor callgate relies on (Ringostat) refused or failed; `detail` says which.
    #[error("{detail}")]
    Upstream { code: &'static str, detail: String },
    #[error("missing or wrong credentials")]
    Unauthorized,
    #[error("forbidden")]
    Forbidden,
    #[error("not found: {0}")]
    NotFound(String),
    #[error("too many requests")]
    RateLimited,
    #[error("request body too large")]
    TooLarge,
    #[error("the feature is not configured: {0}")]
    NotConfigured(&'static str),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(code: &'static str, field: Option<&str>, detail: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            field: field.map(str::to_owned),
            detail: detail.into(),
        }
    }
}

impl ApiError {
    pub fn unprocessable(
        code: &'static str,
        field: Option<&str>,
        detail: impl Into<String>,
    ) -> Self {
        ApiError::Unprocessable {
            code,
            field: field.map(str::to_owned),
            detail: detail.into(),
        }
    }

    pub fn upstream(code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::Upstream {
            code,
            detail: detail.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            ApiError::BadRequest {
                code,
                field,
                detail,
            } => (
                StatusCode::BAD_REQUEST,
                json!({"code": code, "field": field, "detail": detail}),
            ),
            ApiError::Unprocessable {
                code,
                field,
                detail,
            } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"code": code, "field": field, "detail": detail}),
            ),
            ApiError::Upstream { code, detail } => (
                StatusCode::BAD_GATEWAY,
                json!({"code": code, "detail": detail}),
            ),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                json!({"code": "unauthorized", "detail": self.to_string()}),
            ),
            ApiError::Forbidden => (
                StatusCode::FORBIDDEN,
                json!({"code": "forbidden", "detail": "the client address is not allowed"}),
            ),
            ApiError::NotFound(what) => (
                StatusCode::NOT_FOUND,
                json!({"code": "not_found", "detail": format!("{what} not found")}),
            ),
            ApiError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"code": "too_large", "detail": "the request body is over server.body_limit_bytes"}),
            ),
            ApiError::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                json!({"code": "rate_limited", "detail": "too many requests; slow down"}),
            ),
            ApiError::NotConfigured(what) => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"code": "not_configured", "detail": format!("{what} is not configured")}),
            ),
            ApiError::Unexpected(e) => {
                tracing::error!(error.cause_chain = ?e, "Request failed unexpectedly.");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"code": "internal", "detail": "internal error; see the server log"}),
                )
            }
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                "1".parse().expect("static header"),
            );
        }
        response
    }
}
