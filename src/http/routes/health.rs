//! `/healthz` (the process answers), `/readyz` (store reachable, rules loaded, where the
//! owner mirror stands), `/metrics`.

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
/// (a bad set refuses the start and a bad reload keeps the old set); the body says how many,
/// and where the owner mirror stands (`mirror importing 41% (…)`, `mirror synced, lag 3 s`).
/// Still 200 while importing: lookups are answered meanwhile (by asking the CRM).
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => {
            let mirror = match &state.sync {
                Some(sync) => format!(
                    "{}, {}",
                    sync.mirror().status_line(),
                    sync.mirror().orders_status_line()
                ),
                None => "mirror off".to_owned(),
            };
            (
                StatusCode::OK,
                format!(
                    "ready: store reachable, {} routing rules loaded, {mirror}",
                    state.rules.current().len()
                ),
            )
                .into_response()
        }
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
    if let Some(sync) = &state.sync {
        let mirror = sync.mirror();
        state.metrics.mirror_import_progress.set(mirror.progress());
        if let Some(lag) = mirror.lag() {
            state.metrics.mirror_history_lag.set(lag.as_secs_f64());
        }
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
