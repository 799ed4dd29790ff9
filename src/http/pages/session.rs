//! Sign-in sessions of the web page and the checks of its state-changing requests.
//!
//! Signing in with `admin.token` creates a session: a random 256-bit id kept in the store
//! (`admin-session:<id>`, [`SESSION_TTL`]) with its own random CSRF token. The browser holds
//! only the id, in an `HttpOnly; SameSite=Strict; Path=/admin` cookie (also `Secure` when the
//! page is served over HTTPS: [`served_over_https`]); the admin token never leaves the
//! sign-in form. Failed sign-ins are limited per source ([`super::sign_in_limit`]). Sessions live in the store, so every instance behind a load
//! balancer knows them, and signing out deletes them.
//!
//! A state-changing request (every POST of the page) must carry the session's CSRF token in
//! its form (synchronizer token) and come from this site: its `Origin` (or, without one, its
//! `Referer`) must name the host the request was sent to. GET never changes state.

use std::{net::IpAddr, time::Duration};

use axum::{
    extract::{Form, FromRequest, Request},
    http::{
        HeaderMap, HeaderValue,
        header::{COOKIE, HOST, ORIGIN, REFERER, SET_COOKIE},
    },
    response::{IntoResponse, Response},
};
use rand::RngCore;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::PageError;
use crate::{
    http::{AppState, guard},
    store::{Store, StoreError, keys},
};

/// Name of the session cookie.
pub const COOKIE_NAME: &str = "callgate_session";
/// How long a session lasts after sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

/// A signed-in operator's session, put into the request by the page's guard.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    /// The synchronizer token every form of this session carries.
    pub csrf: String,
}

/// 32 random bytes from the thread's CSPRNG, in hexadecimal.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Session {
    /// Creates and stores a new session.
    pub async fn create(store: &dyn Store) -> Result<Session, StoreError> {
        let session = Session {
            id: random_token(),
            csrf: random_token(),
        };
        store
            .set_raw(
                &keys::admin_session(&session.id),
                session.csrf.as_bytes(),
                Some(SESSION_TTL),
            )
            .await?;
        Ok(session)
    }

    /// The live session the request's cookie names, if any.
    pub async fn from_headers(
        store: &dyn Store,
        headers: &HeaderMap,
    ) -> Result<Option<Session>, StoreError> {
        let Some(id) = session_cookie(headers) else {
            return Ok(None);
        };
        // Only ids of our own shape reach the store.
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        Ok(store
            .get_raw(&keys::admin_session(id))
            .await?
            .and_then(|csrf| String::from_utf8(csrf).ok())
            .map(|csrf| Session {
                id: id.to_owned(),
                csrf,
            }))
    }

    pub async fn delete(&self, store: &dyn Store) -> Result<(), StoreError> {
        store.delete(&keys::admin_session(&self.id)).await
    }

    /// `Set-Cookie` that hands this session to the browser; `Secure` when the page is
    /// served over HTTPS ([`served_over_https`]).
    pub fn cookie(&self, secure: bool) -> (axum::http::HeaderName, HeaderValue) {
        set_cookie(&self.id, SESSION_TTL.as_secs(), secure)
    }

    /// `Set-Cookie` that removes the session cookie.
    pub fn clear_cookie(secure: bool) -> (axum::http::HeaderName, HeaderValue) {
        set_cookie("", 0, secure)
    }
}

fn set_cookie(value: &str, max_age: u64, secure: bool) -> (axum::http::HeaderName, HeaderValue) {
    let secure = if secure { "; Secure" } else { "" };
    (
        SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{COOKIE_NAME}={value}; HttpOnly; SameSite=Strict; Path=/admin; Max-Age={max_age}{secure}"
        ))
        .expect("a hex id is a valid header value"),
    )
}

/// Whether the page is served over HTTPS: `server.public_url` is an `https://` address, or
/// the request came through a trusted proxy that says it arrived over HTTPS
/// ([`guard::forwarded_https`]). callgate itself speaks plain HTTP.
pub fn served_over_https(state: &AppState, peer: Option<IpAddr>, headers: &HeaderMap) -> bool {
    let server = &state.config.server;
    server
        .public_url
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
        || peer.is_some_and(|peer| guard::forwarded_https(peer, headers, &server.trusted_proxies))
}

/// The value of the session cookie among the request's cookies.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value)
}

/// Whether the request comes from a page of this site: its `Origin`, or without one its
/// `Referer`, names the `Host` it was sent to. A request with neither is refused: every
/// browser that honours `SameSite` sends `Origin` on a form POST.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let source = headers
        .get(ORIGIN)
        .or_else(|| headers.get(REFERER))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| url::Url::parse(v).ok());
    source.is_some_and(|url| {
        let authority = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => return false,
        };
        authority.eq_ignore_ascii_case(host)
    })
}

/// The form of a state-changing button: only the CSRF token.
#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// Extractor of a state-changing request: the session is signed in, the request comes from
/// this site and its form carries the session's CSRF token. Anything else is refused (403)
/// before the handler runs.
pub struct Checked(pub Session);

impl FromRequest<AppState> for Checked {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let session = request
            .extensions()
            .get::<Session>()
            .cloned()
            .ok_or_else(|| PageError::Forbidden("not signed in").into_response())?;
        if !same_origin(request.headers()) {
            return Err(
                PageError::Forbidden("the request did not come from this site").into_response(),
            );
        }
        let Form(form) = Form::<CsrfForm>::from_request(request, state)
            .await
            .map_err(|_| {
                PageError::Forbidden("the form is not one of this page").into_response()
            })?;
        if !bool::from(form.csrf.as_bytes().ct_eq(session.csrf.as_bytes())) {
            return Err(
                PageError::Forbidden("the form's CSRF token is wrong or old").into_response(),
            );
        }
        Ok(Checked(session))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn same_origin_wants_origin_or_referer_naming_the_host() {
        let ok = [
            headers(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:8080"),
            ]),
            headers(&[("host", "cg.example"), ("origin", "https://cg.example")]),
            headers(&[
                ("host", "127.0.0.1:8080"),
                ("referer", "http://127.0.0.1:8080/admin/ui/dead-letters"),
            ]),
        ];
        for h in ok {
            assert!(same_origin(&h), "{h:?}");
        }
        let refused = [
            headers(&[("host", "127.0.0.1:8080")]),
            headers(&[("host", "127.0.0.1:8080"), ("origin", "null")]),
            headers(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://evil.example"),
            ]),
            headers(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:9090"),
            ]),
            headers(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://evil.example"),
                ("referer", "http://127.0.0.1:8080/admin/"),
            ]),
            headers(&[("origin", "http://127.0.0.1:8080")]),
        ];
        for h in refused {
            assert!(!same_origin(&h), "{h:?}");
        }
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; callgate_session=abc; b=2")]);
        assert_eq!(session_cookie(&h), Some("abc"));
        let h = headers(&[("cookie", "a=1"), ("cookie", "callgate_session=def")]);
        assert_eq!(session_cookie(&h), Some("def"));
        assert_eq!(
            session_cookie(&headers(&[("cookie", "x_callgate_session=1")])),
            None
        );
    }

    #[test]
    fn tokens_are_random_and_hex() {
        let (a, b) = (random_token(), random_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
