//! The Ringostat REST API client (PROTOCOLS §1.4): `GET /calls/list` for reconciliation
//! (flow E) and `POST /callback/outward_call` for click-to-call (flow D).
//!
//! # Wire rules
//! - Every request carries `Auth-key: <ringostat.auth_key>` (a sensitive header: never in a
//!   log or a `Debug`) and `x-project-id: <ringostat.project_id>`; the key is never put in a
//!   query string (mixing query-string auth with the header is refused upstream).
//! - `calls/list` takes `from`/`to` as `YYYY-MM-DD HH:MM:SS` in the project's local time
//!   (UNCONFIRMED: the doc gives the format, not the zone; the call log's own `calldate`
//!   is local time), `export_type=json`, an explicit `fields` list (an unknown field is a
//!   400, so only documented names are asked for) and `project_id`. The answer is a bare
//!   JSON array, at most [`CALLS_PER_REQUEST_CAP`] calls: a full answer may be truncated,
//!   and the caller splits the window (see `crate::domain::reconcile`).
//! - `callback/outward_call` is a form body `extension=<digits>&destination=<digits>`.
//!   How a refusal looks is UNCONFIRMED: any non-2xx answer, and a 2xx answer whose JSON
//!   body carries `error` or `status: "error"`, is a refusal; its message is passed on.
//!
//! Errors are classified once, here ([`RingostatError`]).

mod dto;

use std::{fmt, time::Duration};

use chrono::NaiveDateTime;
use reqwest::{
    StatusCode,
    header::{HeaderMap, HeaderValue},
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use url::Url;

use crate::domain::phone_number::PhoneNumber;
pub use crate::domain::reconcile::CALLS_PER_REQUEST_CAP;

/// `from`/`to` format of `calls/list`.
pub const DATE_FORMAT: &str = "%Y-%m-%d %H:%M:%S";
/// Longest error text kept from an answer.
const SNIPPET_CHARS: usize = 300;

/// Settings of a [`RingostatClient`].
#[derive(Clone)]
pub struct RingostatConfig {
    /// `https://api.ringostat.net` (no trailing path needed).
    pub base_url: String,
    pub auth_key: SecretString,
    pub project_id: String,
    /// One request's timeout.
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RingostatBuildError {
    #[error("ringostat.api_base_url {0:?} is not an http(s) URL")]
    BaseUrl(String),
    #[error("ringostat.auth_key cannot be sent as an HTTP header")]
    AuthKey,
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
}

/// A failed Ringostat request, classified.
#[derive(Debug, thiserror::Error)]
pub enum RingostatError {
    #[error("Ringostat request failed")]
    Transport(#[source] reqwest::Error),
    #[error("Ringostat did not answer within {0:?}")]
    Timeout(Duration),
    /// 401/403: the key or the project is wrong; retrying does not help until fixed.
    #[error("Ringostat refused the credentials ({status}): {detail}")]
    Unauthorized { status: u16, detail: String },
    /// Another 4xx, or an error in a 2xx body: Ringostat refused this request.
    #[error("Ringostat refused the request ({status}): {detail}")]
    Refused { status: u16, detail: String },
    /// 5xx or 429: Ringostat is unavailable for now.
    #[error("Ringostat is unavailable ({status}): {detail}")]
    Unavailable { status: u16, detail: String },
    /// A success answer that is not the documented shape.
    #[error("Ringostat answered {status} with an unexpected body: {detail}")]
    NotApi { status: u16, detail: String },
}

impl RingostatError {
    /// Whether trying again later may succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RingostatError::Transport(_)
                | RingostatError::Timeout(_)
                | RingostatError::Unavailable { .. }
        )
    }
}

/// The Ringostat REST API.
pub struct RingostatClient {
    http: reqwest::Client,
    base: Url,
    project_id: String,
    timeout: Duration,
}

impl fmt::Debug for RingostatClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingostatClient")
            .field("base", &self.base.as_str())
            .field("project_id", &self.project_id)
            .finish_non_exhaustive()
    }
}

impl RingostatClient {
    pub fn new(cfg: RingostatConfig) -> Result<Self, RingostatBuildError> {
        let mut base = Url::parse(&cfg.base_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| RingostatBuildError::BaseUrl(cfg.base_url.clone()))?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let mut key = HeaderValue::from_str(cfg.auth_key.expose_secret())
            .map_err(|_| RingostatBuildError::AuthKey)?;
        key.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert("Auth-key", key);
        if let Ok(project) = HeaderValue::from_str(&cfg.project_id) {
            headers.insert("x-project-id", project);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("callgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(RingostatBuildError::Client)?;
        Ok(RingostatClient {
            http,
            base,
            project_id: cfg.project_id,
            timeout: cfg.timeout,
        })
    }

    fn endpoint(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(path.split('/'));
        }
        url
    }

    /// `GET /calls/list` for calls that started within `[from, to]` (project local time),
    /// with the given export field names. At most [`CALLS_PER_REQUEST_CAP`] calls come back;
    /// a full answer may be truncated.
    #[tracing::instrument(skip_all, fields(method = "calls/list", %from, %to))]
    pub async fn calls_list(
        &self,
        from: NaiveDateTime,
        to: NaiveDateTime,
        fields: &[&str],
    ) -> Result<Vec<Map<String, Value>>, RingostatError> {
        let query = [
            ("export_type", "json".to_owned()),
            ("from", from.format(DATE_FORMAT).to_string()),
            ("to", to.format(DATE_FORMAT).to_string()),
            ("fields", fields.join(",")),
            ("order", "calldate asc".to_owned()),
            ("project_id", self.project_id.clone()),
        ];
        let req = self.http.get(self.endpoint("calls/list")).query(&query);
        let (status, body) = self.send(req).await?;
        let calls: Vec<Value> =
            serde_json::from_slice(&body).map_err(|e| RingostatError::NotApi {
                status,
                detail: format!("expected a JSON array of calls: {e}"),
            })?;
        calls
            .into_iter()
            .map(|c| match c {
                Value::Object(map) => Ok(map),
                other => Err(RingostatError::NotApi {
                    status,
                    detail: format!("a call is not an object: {}", snippet(&other.to_string())),
                }),
            })
            .collect()
    }

    /// `POST /callback/outward_call`: Ringostat rings `extension` (a number connected to the
    /// project, here the manager's own phone), then connects it to `destination`.
    #[tracing::instrument(skip_all, fields(method = "callback/outward_call", extension = %extension.masked(), destination = %destination.masked()))]
    pub async fn outward_call(
        &self,
        extension: &PhoneNumber,
        destination: &PhoneNumber,
    ) -> Result<(), RingostatError> {
        let form = dto::OutwardCall {
            extension: extension.digits(),
            destination: destination.digits(),
        };
        let req = self
            .http
            .post(self.endpoint("callback/outward_call"))
            .form(&form);
        let (status, body) = self.send(req).await?;
        // An empty or non-JSON 2xx body is a success; a JSON one may still carry an error.
        if let Ok(answer) = serde_json::from_slice::<dto::Answer>(&body)
            && let Some(detail) = answer.error_detail()
        {
            return Err(RingostatError::Refused { status, detail });
        }
        Ok(())
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(u16, bytes::Bytes), RingostatError> {
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                RingostatError::Timeout(self.timeout)
            } else {
                RingostatError::Transport(e.without_url())
            }
        })?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| RingostatError::Transport(e.without_url()))?;
        let code = status.as_u16();
        if status.is_success() {
            tracing::debug!(status = code, "Ringostat answered.");
            return Ok((code, body));
        }
        let detail = error_text(&body);
        tracing::debug!(status = code, %detail, "Ringostat refused or failed the request.");
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RingostatError::Unauthorized {
                status: code,
                detail,
            },
            StatusCode::TOO_MANY_REQUESTS => RingostatError::Unavailable {
                status: code,
                detail,
            },
            s if s.is_server_error() => RingostatError::Unavailable {
                status: code,
                detail,
            },
            _ => RingostatError::Refused {
                status: code,
                detail,
            },
        })
    }
}

/// The error message of a refusal: a JSON body's `message`/`error`, else the text itself.
fn error_text(body: &[u8]) -> String {
    if let Ok(answer) = serde_json::from_slice::<dto::Answer>(body)
        && let Some(detail) = answer.error_detail()
    {
        return detail;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        "(empty body)".to_owned()
    } else {
        snippet(text)
    }
}

fn snippet(text: &str) -> String {
    text.chars().take(SNIPPET_CHARS).collect()
}
