//! The HTTP adapter: [`router`] builds every endpoint over an [`AppState`].
//!
//! Public endpoints (`/ringostat/*`, `/retailcrm/*`) sit behind the optional IP allow-list and
//! the per-source rate limit ([`guard`]: client addresses from `X-Forwarded-For`/`Forwarded`
//! only behind `server.trusted_proxies`); every endpoint has the body limit (SPEC §9: 64 KiB → 413)
//! and a request timeout. A panicking handler still answers (see [`panic`]).

pub mod auth;
pub mod deadline;
pub mod error;
pub mod guard;
pub mod pages;
pub mod panic;
pub mod payload;
pub mod routes;
pub mod server;

use std::sync::Arc;

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    middleware,
    routing::{get, post},
};
use tokio::sync::Notify;
use tower_http::{
    catch_panic::CatchPanicLayer, limit::RequestBodyLimitLayer, timeout::TimeoutLayer,
    trace::TraceLayer,
};

use crate::{
    config::Config,
    crm::{Crm, sandbox::SandboxCrm},
    domain::{call::FieldAliases, manager::ManagerDirectory, phone_number::PhoneNormalizer},
    lookup::LookupService,
    metrics::Metrics,
    ringostat::RingostatClient,
    rules::RuleBook,
    store::Store,
    sync::{Syncer, managers::ManagerBoard},
};

/// Everything a handler may need: one `Arc`, so the per-request clone axum makes is a single
/// reference count (the hot path's share of `AppState` clone/drop showed in the profile).
#[derive(Clone)]
pub struct AppState(Arc<AppContext>);

impl AppState {
    pub fn new(context: AppContext) -> Self {
        AppState(Arc::new(context))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppContext;

    fn deref(&self) -> &AppContext {
        &self.0
    }
}

/// The contents of [`AppState`].
pub struct AppContext {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub crm: Arc<dyn Crm>,
    pub directory: Arc<ManagerDirectory>,
    /// The managers' states, in memory; written through to the store (and, on Redis, to the
    /// other instances).
    pub managers: Arc<ManagerBoard>,
    pub lookup: Arc<LookupService>,
    pub metrics: Arc<Metrics>,
    pub normalizer: PhoneNormalizer,
    /// The sandbox CRM when it is the CRM (its records are readable through `/admin`).
    pub sandbox: Option<Arc<SandboxCrm>>,
    /// Webhook field names.
    pub aliases: Arc<FieldAliases>,
    /// Wakes an idle worker when an event is queued.
    pub worker_wakeup: Arc<Notify>,
    /// The live routing rules (`POST /admin/rules/reload` swaps them).
    pub rules: Arc<RuleBook>,
    /// Flow F, when `[sync]` is on: the owner mirror's state for `/readyz` and `/metrics`.
    pub sync: Option<Arc<Syncer>>,
    /// The Ringostat API, when `ringostat.auth_key` and `ringostat.project_id` are set.
    pub ringostat: Option<Arc<RingostatClient>>,
}

/// The request span names the route, never the URI: query strings carry caller numbers and
/// the webhook token.
fn request_span(request: &Request) -> tracing::Span {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    tracing::debug_span!("request", method = %request.method(), path)
}

/// Whether the public guard (IP allow-list, per-source limit) has anything to check; when it
/// has not, the lookup may be answered before the router ([`server`]).
pub fn public_guard_configured(config: &Config) -> bool {
    !config.server.ip_allowlist.is_empty() || config.server.per_ip_rps > 0
}

/// Builds the router ([`server::serve`] serves it, putting each connection's client address
/// into the request as `ConnectInfo` for the allow-list and the per-source limit).
pub fn router(state: AppState) -> Router {
    let server = &state.config.server;
    let body_limit = server.body_limit_bytes;
    let timeout = TimeoutLayer::with_status_code(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        server.request_timeout,
    );
    // The lookup has its own, much shorter deadline (lookup.deadline_ms) and no timer on its
    // common path, and its own latency histogram and outcome counters: the request timeout
    // and the trace layer (each a measurable share of its cost, load-tests/RESULTS.md) are
    // layered onto the other routes only.
    let trace = TraceLayer::new_for_http().make_span_with(request_span);
    let mut public = Router::new()
        .route(
            "/ringostat/webhook",
            get(routes::webhook::webhook)
                .post(routes::webhook::webhook)
                .layer(middleware::from_fn_with_state(
                    state.clone(),
                    panic::capture_webhook,
                )),
        )
        .route(
            "/retailcrm/make-call",
            get(routes::make_call::make_call).post(routes::make_call::make_call),
        )
        .route(
            "/retailcrm/user-status",
            get(routes::user_status::user_status).post(routes::user_status::user_status),
        )
        .route_layer(timeout)
        .route_layer(trace.clone())
        .route(
            "/ringostat/route",
            get(routes::route::route).post(routes::route::route),
        );
    // An idle guard is not layered at all.
    if public_guard_configured(&state.config) {
        let guard = guard::PublicGuard::new(&state.config);
        public = public.route_layer(middleware::from_fn_with_state(guard, guard::guard_public));
    }
    let admin = Router::new()
        .route("/admin/calls", get(routes::admin::call_log))
        .route("/admin/calls/{id}", get(routes::admin::call_detail))
        .route("/admin/lookup/explain", get(routes::admin::explain_lookup))
        .route("/admin/queue", get(routes::admin::queue))
        .route("/admin/queue/retry-now", post(routes::admin::retry_now))
        .route("/admin/dead-letters", get(routes::admin::dead_letters))
        .route(
            "/admin/dead-letters/replay",
            post(routes::admin::replay_all_dead_letters),
        )
        .route(
            "/admin/dead-letters/{id}/replay",
            post(routes::admin::replay_dead_letter),
        )
        .route("/admin/quarantine", get(routes::admin::quarantine))
        .route("/admin/rules", get(routes::admin::rules))
        .route("/admin/rules/reload", post(routes::admin::reload_rules))
        .route("/admin/sandbox", get(routes::admin::sandbox_records))
        .route(
            "/admin/sandbox/customers",
            post(routes::admin::sandbox_add_customer),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            routes::admin::require_admin,
        ))
        .merge(pages::router(state.clone()))
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/metrics", get(routes::health::metrics));
    #[cfg(feature = "panic-probe")]
    let admin = admin.route("/__test/panic", get(panic::panicking_route));
    let admin = admin.route_layer(timeout).route_layer(trace);
    Router::new()
        .merge(public)
        .merge(admin)
        .with_state(state)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(CatchPanicLayer::custom(panic::internal_error))
}
