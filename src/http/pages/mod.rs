//! The operator's web page under `/admin/`: the call log with the filters of the CRM's own
//! call report and two charts, a call's details, dead letters with replay and discard, the
//! quarantine, and the owner mirror's sync state.
//!
//! Server-rendered with `maud`; the style sheet is compiled into the binary (no CDN, no
//! build step, no JavaScript). Every page but the sign-in form needs a session
//! ([`session`]): without one it redirects to `/admin/signin`. State-changing buttons are
//! POST forms checked by [`session::Checked`] (session, same origin, CSRF token); GET never
//! changes anything. The bearer-token JSON API under `/admin` is separate and unchanged.
//!
//! Numbers are masked in lists ([`PhoneNumber::masked`](crate::domain::phone_number::PhoneNumber::masked))
//! and whole only on a call's own page.

mod calls;
mod charts;
mod dead_letters;
mod layout;
mod mirror;
pub mod session;
pub mod sign_in_limit;

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Instant,
};

use crate::credential::Credential;
use axum::{
    Extension, Router,
    extract::{ConnectInfo, Form, Request, State},
    http::{
        HeaderMap, HeaderValue, StatusCode,
        header::{LOCATION, RETRY_AFTER},
    },
    middleware::{self, Next},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use maud::{Markup, html};
use serde::Deserialize;

use crate::http::{AppState, error::ApiError, guard};
use session::{Checked, Session};
use sign_in_limit::SignInLimiter;

/// Where a request without a session is sent.
pub const SIGNIN_PATH: &str = "/admin/signin";

/// The routes of the page (merged into the main router, which adds the timeout and the
/// trace layers).
pub fn router(state: AppState) -> Router<AppState> {
    let signed_in = Router::new()
        .route("/admin", get(|| async { Redirect::to("/admin/") }))
        .route("/admin/", get(calls::list))
        .route("/admin/ui/calls/{id}", get(calls::detail))
        .route("/admin/ui/dead-letters", get(dead_letters::list))
        .route(
            "/admin/ui/dead-letters/{id}/replay",
            post(dead_letters::replay),
        )
        .route(
            "/admin/ui/dead-letters/{id}/discard",
            post(dead_letters::discard),
        )
        .route("/admin/ui/quarantine", get(dead_letters::quarantine))
        .route("/admin/ui/mirror", get(mirror::state))
        .route("/admin/signout", post(sign_out))
        .route_layer(middleware::from_fn_with_state(state, require_session));
    let limiter = Arc::new(SignInLimiter::default());
    Router::new()
        .route(
            SIGNIN_PATH,
            get(sign_in_form).post(sign_in).layer(Extension(limiter)),
        )
        .merge(signed_in)
}

/// A page that could not be shown, as an HTML page with its status.
#[derive(Debug)]
pub enum PageError {
    Forbidden(&'static str),
    Api(ApiError),
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError::Api(e)
    }
}

fn unexpected(e: impl Into<anyhow::Error>) -> PageError {
    PageError::Api(ApiError::Unexpected(e.into()))
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, detail) = match self {
            PageError::Forbidden(why) => (StatusCode::FORBIDDEN, why.to_owned()),
            PageError::Api(e) => {
                let detail = match &e {
                    ApiError::Unexpected(_) => "internal error; see the server log".to_owned(),
                    other => other.to_string(),
                };
                // The JSON response decides the status and logs a 5xx once, with its cause.
                (e.into_response().status(), detail)
            }
        };
        let body = layout::bare(
            status.canonical_reason().unwrap_or("Error"),
            html! {
                main {
                    h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
                    p.error { (detail) }
                    p { a href="/admin/" { "Back to the call log" } }
                }
            },
        );
        (status, body).into_response()
    }
}

/// The admin token, or the page's "not configured" answer.
fn admin_token(state: &AppState) -> Result<&Credential, PageError> {
    let token = &state.config.admin.token;
    if token.is_empty() {
        Err(ApiError::NotConfigured("admin.token").into())
    } else {
        Ok(token)
    }
}

/// Lets a request with a live session through, with its [`Session`] in the extensions;
/// sends anything else to the sign-in form.
async fn require_session(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, PageError> {
    admin_token(&state)?;
    match Session::from_headers(&*state.store, request.headers())
        .await
        .map_err(unexpected)?
    {
        Some(session) => {
            request.extensions_mut().insert(session);
            Ok(next.run(request).await)
        }
        None => Ok(Redirect::to(SIGNIN_PATH).into_response()),
    }
}

fn sign_in_page(problem: Option<&str>) -> Markup {
    layout::bare(
        "Sign in",
        html! {
            form.signin method="post" action=(SIGNIN_PATH) {
                h1 { "callgate" }
                @if let Some(problem) = problem { p.error { (problem) } }
                label {
                    "Admin token"
                    input type="password" name="token" autocomplete="current-password" autofocus required;
                }
                button type="submit" { "Sign in" }
                p.muted { "The token is " code { "admin.token" } " of the configuration." }
            }
        },
    )
}

async fn sign_in_form(State(state): State<AppState>) -> Result<Markup, PageError> {
    admin_token(&state)?;
    Ok(sign_in_page(None))
}

#[derive(Debug, Deserialize)]
struct SignIn {
    #[serde(default)]
    token: String,
}

/// The connection's peer (the server puts it into every request).
type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

fn peer_ip(peer: &Peer) -> Option<IpAddr> {
    peer.as_ref().map(|Extension(ConnectInfo(addr))| addr.ip())
}

/// Checks the token in constant time, unless the source has used up its failed sign-ins
/// ([`sign_in_limit`]: 429); on success stores a session and hands out its cookie.
async fn sign_in(
    State(state): State<AppState>,
    Extension(limiter): Extension<Arc<SignInLimiter>>,
    peer: Peer,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Result<Response, PageError> {
    let expected = admin_token(&state)?;
    if !session::same_origin(&headers) {
        return Err(PageError::Forbidden(
            "the request did not come from this site",
        ));
    }
    let peer = peer_ip(&peer);
    // Without a peer (a router driven in-process) every request is one source.
    let source = peer.map_or(IpAddr::from([0, 0, 0, 0]), |peer| {
        guard::client_ip(peer, &headers, &state.config.server.trusted_proxies)
    });
    let now = Instant::now();
    if let Some(wait) = limiter.blocked(source, now) {
        tracing::warn!("Web page sign-in refused: too many failed sign-ins from its source.");
        let minutes = wait.as_secs().div_ceil(60);
        return Ok((
            StatusCode::TOO_MANY_REQUESTS,
            [(RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)))],
            sign_in_page(Some(&format!(
                "Too many failed sign-ins from your address: try again in {minutes} min."
            ))),
        )
            .into_response());
    }
    if !expected.matches(form.token.as_bytes()) {
        limiter.failed(source, now);
        tracing::warn!("Web page sign-in with a wrong token.");
        return Ok((
            StatusCode::UNAUTHORIZED,
            sign_in_page(Some("That is not the admin token.")),
        )
            .into_response());
    }
    limiter.succeeded(source);
    let session = Session::create(&*state.store).await.map_err(unexpected)?;
    let secure = session::served_over_https(&state, peer, &headers);
    Ok((
        StatusCode::SEE_OTHER,
        [
            (LOCATION, HeaderValue::from_static("/admin/")),
            session.cookie(secure),
        ],
    )
        .into_response())
}

async fn sign_out(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    Checked(session): Checked,
) -> Result<Response, PageError> {
    session.delete(&*state.store).await.map_err(unexpected)?;
    let secure = session::served_over_https(&state, peer_ip(&peer), &headers);
    Ok((
        StatusCode::SEE_OTHER,
        [
            (LOCATION, HeaderValue::from_static(SIGNIN_PATH)),
            Session::clear_cookie(secure),
        ],
    )
        .into_response())
}
