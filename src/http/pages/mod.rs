//! The operator's web page under `/admin/`: the call log with the filters of the CRM's own
//! call report, a call's details, dead letters with replay and discard, and the quarantine.
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
pub mod session;

use axum::{
    Router,
    extract::{Form, Request, State},
    http::{HeaderMap, StatusCode, header::LOCATION},
    middleware::{self, Next},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use maud::{Markup, html};
use secrecy::ExposeSecret;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::http::{AppState, error::ApiError};
use session::{Checked, Session};

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
        .route("/admin/signout", post(sign_out))
        .route_layer(middleware::from_fn_with_state(state, require_session));
    Router::new()
        .route(SIGNIN_PATH, get(sign_in_form).post(sign_in))
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
fn admin_token(state: &AppState) -> Result<&str, PageError> {
    let token = state.config.admin.token.expose_secret();
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

/// Checks the token in constant time; on success stores a session and hands out its cookie.
async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Result<Response, PageError> {
    let expected = admin_token(&state)?;
    if !session::same_origin(&headers) {
        return Err(PageError::Forbidden(
            "the request did not come from this site",
        ));
    }
    if !bool::from(form.token.as_bytes().ct_eq(expected.as_bytes())) {
        tracing::warn!("Web page sign-in with a wrong token.");
        return Ok((
            StatusCode::UNAUTHORIZED,
            sign_in_page(Some("That is not the admin token.")),
        )
            .into_response());
    }
    let session = Session::create(&*state.store).await.map_err(unexpected)?;
    Ok((
        StatusCode::SEE_OTHER,
        [
            (LOCATION, "/admin/".parse().expect("static header")),
            (axum::http::header::SET_COOKIE, session.cookie()),
        ],
    )
        .into_response())
}

async fn sign_out(
    State(state): State<AppState>,
    Checked(session): Checked,
) -> Result<Response, PageError> {
    session.delete(&*state.store).await.map_err(unexpected)?;
    Ok((
        StatusCode::SEE_OTHER,
        [
            (LOCATION, SIGNIN_PATH.parse().expect("static header")),
            Session::clear_cookie(),
        ],
    )
        .into_response())
}
