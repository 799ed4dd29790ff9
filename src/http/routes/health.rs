//! `/healthz` (the process answers), `/readyz` (store reachable, rules loaded), `/metrics`.

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::http::AppState;

pub async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the store answers. The routing rules are always loaded in a running process
/// (a bad set refuses the start and a bad reload keeps the old set); the body says how many.
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            format!(
                "ready: store reachable, {} routing rules loaded",
                state.rules.current().len()
            ),
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "Store is not reachable; not ready.");
            (StatusCode::SERVICE_UNAVAILABLE, "store unreachable").into_response()
        }
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    if let Ok(depth) = state.store.queue_depth().await {
        state.metrics.queue_depth.set(depth as i64);
    }
    if let Ok(dead) = state.store.dead_letter_count().await {
        state.metrics.dead_letters.set(dead as i64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
