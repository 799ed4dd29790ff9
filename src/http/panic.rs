//! No request panics the connection away (SPEC §9): a panic in a handler becomes an answer.
//!
//! - The lookup (router and fast path alike, [`super::routes::route::answer`]) answers 200
//!   "nobody", in the requested format when it can be told.
//! - The webhook ([`capture_webhook`]) reads the raw request before its handler runs; when
//!   the handler panics the raw payload goes to the quarantine (the event is never dropped:
//!   Ringostat does not re-send) and the answer is a JSON 500.
//! - Every other route answers a JSON 500 ([`internal_error`], tower-http's catch-panic
//!   layer around the whole router).
//!
//! The panic's message is not logged here: it may quote the input (a caller's number); the
//! process's panic hook prints it with its location.

use std::{any::Any, panic::AssertUnwindSafe};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, header::CONTENT_TYPE},
    middleware::Next,
    response::{IntoResponse, Response},
};
use futures::FutureExt;

use super::{AppState, error::ApiError, routes::webhook::quarantine_text};

/// The answer of a route whose handler panicked (everything but the lookup and the webhook).
pub fn internal_error(_panic: Box<dyn Any + Send + 'static>) -> Response {
    ApiError::Unexpected(anyhow::anyhow!("the request handler panicked")).into_response()
}

/// Webhook middleware: reads the body whole (within `server.body_limit_bytes`: 413 beyond)
/// and hands a copy to the handler; if the handler panics, quarantines the raw request and
/// answers a JSON 500.
pub async fn capture_webhook(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, state.config.server.body_limit_bytes).await {
        Ok(body) => body,
        Err(_) => return ApiError::TooLarge.into_response(),
    };
    let uri = parts.uri.clone();
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let request = Request::from_parts(parts, Body::from(body.clone()));
    match AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(_panic) => {
            let raw = quarantine_text(&uri, &body);
            let kept = state
                .store
                .quarantine(
                    "the webhook handler panicked",
                    content_type.as_deref(),
                    &raw,
                )
                .await;
            match kept {
                Ok(id) => {
                    tracing::error!(
                        quarantine = id,
                        "The webhook handler panicked; the payload is in the quarantine."
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "The webhook handler panicked and the payload could not be quarantined.");
                }
            }
            ApiError::Unexpected(anyhow::anyhow!("the webhook handler panicked")).into_response()
        }
    }
}

/// The header that makes the lookup and the webhook panic in test builds (feature
/// `panic-probe`); see [`probe`].
pub const PROBE_HEADER: &str = "x-callgate-test-panic";

/// Test builds: panics when the request carries [`PROBE_HEADER`]. Release builds: nothing.
#[cfg(feature = "panic-probe")]
pub fn probe(headers: &HeaderMap) {
    assert!(
        !headers.contains_key(PROBE_HEADER),
        "panic probe: the request asked this handler to panic"
    );
}

/// Test builds: panics when the request carries [`PROBE_HEADER`]. Release builds: nothing.
#[cfg(not(feature = "panic-probe"))]
#[inline(always)]
pub fn probe(_headers: &HeaderMap) {}

/// Test builds only: `GET /__test/panic` panics, to prove the catch-panic layer of the
/// other routes.
#[cfg(feature = "panic-probe")]
pub async fn panicking_route() -> Response {
    panic!("panic probe: /__test/panic always panics")
}
