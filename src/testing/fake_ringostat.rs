//! A strict fake of the Ringostat REST API (PROTOCOLS §1.4), served over real HTTP on
//! `127.0.0.1:0`, for the reconciliation and click-to-call tests.
//!
//! # What is faithful
//! - `Auth-key` header: missing or wrong → 401. A key also sent in the query string
//!   (`auth-key`, `auth_key`, `token`) beside the header → 400 with an HTML body (the
//!   documented reaction to mixing both).
//! - The project: a `project_id` query parameter or an `x-project-id` header naming another
//!   project → 403.
//! - `GET /calls/list`: parameters `export_type` (`json` | `csv`, `;`-delimited), `from`,
//!   `to` (exactly `YYYY-MM-DD HH:MM:SS`, project local time; defaults `to` = now,
//!   `from` = `to` − 24 h; `from` after `to` → 400), `fields` (comma list of call-log
//!   export names; an unknown one → 400 `incorrect field <name>`), `filters`
//!   (`field=value`, exact match), `merge` (`0|1|2`), `order` (`calldate asc|desc`);
//!   any other parameter → 400. Calls with `from <= calldate <= to` are listed, ordered,
//!   then **truncated to [`CALLS_PER_REQUEST_CAP`]** without any marker (the doc only says
//!   "max 6500 calls per request": the silent cut is the strictest reading, and a client
//!   must split a window whose answer is full). The answer is a bare JSON array holding
//!   exactly the requested fields; `calldate` is rendered `2019-06-02T09:13:43+0300`.
//! - `POST /callback/outward_call`: a form or a JSON body (other content types → 415);
//!   `extension` and `destination` required (400 naming the missing one); both must be
//!   digit strings (a `+` is tolerated); `extension` must be one of the project's connected
//!   numbers (else 400, UNCONFIRMED wording). Success is 200 `{"status":"ok"}`.
//! - A known path with another method → 405; an unknown path → 404.
//!
//! # Faults and records
//! [`FakeRingostat::set_outage`] answers every request 503 (after recording it) until
//! cleared: Ringostat being down. Every request is recorded ([`FakeRingostat::requests`]),
//! so tests count them per path.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{NaiveDateTime, TimeZone};
use chrono_tz::Tz;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::domain::reconcile::CALLS_PER_REQUEST_CAP;

const POISONED: &str = "fake Ringostat state lock poisoned: a handler panicked";
/// `from`/`to` format.
const DATE_FORMAT: &str = "%Y-%m-%d %H:%M:%S";
/// Largest body the fake reads.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Call-log export field names `calls/list` knows (the default list of `selesnow/ringostat`,
/// PROTOCOLS §1.4). Anything else in `fields` is refused.
pub const KNOWN_FIELDS: &[&str] = &[
    "caller",
    "dst",
    "pool_name",
    "disposition",
    "calldate",
    "category_mark",
    "duration",
    "call_type",
    "waittime",
    "billsec",
    "connected_with",
    "call_counter",
    "proper_flag",
    "repeated_flag",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "uniqueid",
    "category_number",
    "employee_number",
    "employee_mark",
    "client_id",
    "remote_ip",
    "refferrer",
    "landing",
    "recording",
    "recording_wav",
    "call_card",
    "additional_number",
    "has_recording",
    "scheme_name",
    "duration_ms",
    "department",
    "caller_number",
];

const LIST_PARAMS: &[&str] = &[
    "export_type",
    "from",
    "to",
    "fields",
    "filters",
    "merge",
    "order",
    "project_id",
];

/// Settings of a [`FakeRingostat`].
#[derive(Debug, Clone)]
pub struct FakeRingostatConfig {
    pub auth_key: String,
    pub project_id: String,
    /// The project's time zone: `from`/`to` and `calldate` are local times in it.
    pub timezone: Tz,
    /// Numbers connected to the project (digits), the only valid `extension`s.
    pub extensions: Vec<String>,
}

impl Default for FakeRingostatConfig {
    fn default() -> Self {
        Self {
            auth_key: "fake-ringostat-key".to_owned(),
            project_id: "12345".to_owned(),
            timezone: chrono_tz::Europe::Kyiv,
            extensions: Vec::new(),
        }
    }
}

/// One call in the fake's call log.
#[derive(Debug, Clone)]
pub struct FakeCall {
    /// Start, project local time.
    pub calldate: NaiveDateTime,
    /// Every other export field, by its export name (values as the test wants them typed).
    pub fields: Map<String, Value>,
}

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct RingostatRequest {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: String,
    pub status: u16,
}

/// A click-to-call Ringostat accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutwardCall {
    pub extension: String,
    pub destination: String,
}

#[derive(Default)]
struct FakeState {
    calls: Vec<FakeCall>,
    requests: Vec<RingostatRequest>,
    outward_calls: Vec<OutwardCall>,
    outage: bool,
}

struct Shared {
    cfg: FakeRingostatConfig,
    state: Mutex<FakeState>,
}

/// Handle of a running fake; cheap to clone, the server stops with the last clone.
#[derive(Clone)]
pub struct FakeRingostat {
    shared: Arc<Shared>,
    addr: SocketAddr,
    _stop: Arc<DropGuard>,
}

impl FakeRingostat {
    pub async fn start(cfg: FakeRingostatConfig) -> FakeRingostat {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake Ringostat: cannot bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("fake Ringostat: bound socket has no local address");
        let shared = Arc::new(Shared {
            cfg,
            state: Mutex::new(FakeState::default()),
        });
        let app = Router::new()
            .fallback(serve)
            .with_state(Arc::clone(&shared));
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
            {
                tracing::warn!(error = %e, "Fake Ringostat server stopped with an error.");
            }
        });
        FakeRingostat {
            shared,
            addr,
            _stop: Arc::new(shutdown.drop_guard()),
        }
    }

    /// `http://127.0.0.1:PORT` (`ringostat.api_base_url`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn auth_key(&self) -> &str {
        &self.shared.cfg.auth_key
    }

    pub fn project_id(&self) -> &str {
        &self.shared.cfg.project_id
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.shared.state.lock().expect(POISONED)
    }

    /// Adds a call to the call log.
    pub fn add_call(&self, call: FakeCall) {
        self.state().calls.push(call);
    }

    /// Ringostat down (503 to everything) or back.
    pub fn set_outage(&self, down: bool) {
        self.state().outage = down;
    }

    pub fn requests(&self) -> Vec<RingostatRequest> {
        self.state().requests.clone()
    }

    /// Requests to `path` (e.g. `/calls/list`), whatever their answer.
    pub fn request_count(&self, path: &str) -> usize {
        self.state()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    pub fn outward_calls(&self) -> Vec<OutwardCall> {
        self.state().outward_calls.clone()
    }
}

/// A refusal is boxed: a `Response` is large.
type Answer = Result<Response, Box<Response>>;

fn refuse(status: StatusCode, message: impl Into<String>) -> Box<Response> {
    Box::new(
        (
            status,
            axum::Json(json!({"status": "error", "message": message.into()})),
        )
            .into_response(),
    )
}

async fn serve(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .unwrap_or_default();
    let query: Vec<(String, String)> =
        serde_urlencoded::from_str(parts.uri.query().unwrap_or("")).unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let mut st = shared.state.lock().expect(POISONED);
    let response = if st.outage {
        *refuse(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
    } else {
        handle(
            &shared.cfg,
            &mut st,
            &parts.method,
            &path,
            &query,
            &parts.headers,
            &body,
        )
        .unwrap_or_else(|refusal| *refusal)
    };
    st.requests.push(RingostatRequest {
        method: parts.method.to_string(),
        path,
        query,
        body: String::from_utf8_lossy(&body).into_owned(),
        status: response.status().as_u16(),
    });
    response
}

fn handle(
    cfg: &FakeRingostatConfig,
    st: &mut FakeState,
    method: &Method,
    path: &str,
    query: &[(String, String)],
    headers: &HeaderMap,
    body: &Bytes,
) -> Answer {
    authenticate(cfg, query, headers)?;
    match path {
        "/calls/list" if method == Method::GET => calls_list(cfg, st, query),
        "/callback/outward_call" if method == Method::POST => outward_call(cfg, st, headers, body),
        "/calls/list" | "/callback/outward_call" => {
            Err(refuse(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed"))
        }
        _ => Err(refuse(StatusCode::NOT_FOUND, "Not Found")),
    }
}

fn authenticate(
    cfg: &FakeRingostatConfig,
    query: &[(String, String)],
    headers: &HeaderMap,
) -> Result<(), Box<Response>> {
    let key = headers.get("auth-key").and_then(|v| v.to_str().ok());
    let query_auth = query
        .iter()
        .any(|(k, _)| matches!(k.as_str(), "auth-key" | "auth_key" | "token"));
    if query_auth && key.is_some() {
        return Err(Box::new(
            (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body><h1>400 Bad Request</h1></body></html>",
            )
                .into_response(),
        ));
    }
    if key != Some(cfg.auth_key.as_str()) {
        return Err(refuse(StatusCode::UNAUTHORIZED, "Unauthorized"));
    }
    let header_project = headers.get("x-project-id").and_then(|v| v.to_str().ok());
    let query_project = query
        .iter()
        .find(|(k, _)| k == "project_id")
        .map(|(_, v)| v.as_str());
    for project in [header_project, query_project].into_iter().flatten() {
        if project != cfg.project_id {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                format!("project {project} is not available for this key"),
            ));
        }
    }
    Ok(())
}

fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn parse_date(
    query: &[(String, String)],
    name: &str,
) -> Result<Option<NaiveDateTime>, Box<Response>> {
    match param(query, name) {
        None => Ok(None),
        Some(raw) => NaiveDateTime::parse_from_str(raw, DATE_FORMAT)
            .ok()
            .filter(|_| raw.len() == 19)
            .map(Some)
            .ok_or_else(|| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    format!("{name}: expected YYYY-MM-DD HH:MM:SS, got {raw:?}"),
                )
            }),
    }
}

fn calls_list(cfg: &FakeRingostatConfig, st: &FakeState, query: &[(String, String)]) -> Answer {
    if let Some((k, _)) = query
        .iter()
        .find(|(k, _)| !LIST_PARAMS.contains(&k.as_str()))
    {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("unknown parameter {k}"),
        ));
    }
    let csv = match param(query, "export_type").unwrap_or("json") {
        "json" => false,
        "csv" => true,
        other => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!("export_type: expected json or csv, got {other:?}"),
            ));
        }
    };
    let now = chrono::Utc::now()
        .with_timezone(&cfg.timezone)
        .naive_local();
    let to = parse_date(query, "to")?.unwrap_or(now);
    let from = parse_date(query, "from")?.unwrap_or(to - chrono::Duration::hours(24));
    if from > to {
        return Err(refuse(StatusCode::BAD_REQUEST, "from is after to"));
    }
    let fields: Vec<&str> = match param(query, "fields") {
        Some(list) => list.split(',').map(str::trim).collect(),
        None => KNOWN_FIELDS.to_vec(),
    };
    if let Some(bad) = fields.iter().find(|f| !KNOWN_FIELDS.contains(f)) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("incorrect field {bad}"),
        ));
    }
    let filter = match param(query, "filters") {
        None | Some("") => None,
        Some(f) => match f.split_once('=') {
            Some((name, value)) if KNOWN_FIELDS.contains(&name) => Some((name, value)),
            _ => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    format!("filters: incorrect filter {f:?}"),
                ));
            }
        },
    };
    if let Some(m) = param(query, "merge")
        && !matches!(m, "0" | "1" | "2")
    {
        return Err(refuse(StatusCode::BAD_REQUEST, "merge: expected 0, 1 or 2"));
    }
    let descending = match param(query, "order").map(str::trim) {
        None | Some("calldate asc") | Some("calldate") => false,
        Some("calldate desc") => true,
        Some(other) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!("order: unsupported {other:?}"),
            ));
        }
    };
    let mut calls: Vec<&FakeCall> = st
        .calls
        .iter()
        .filter(|c| from <= c.calldate && c.calldate <= to)
        .filter(|c| {
            filter.is_none_or(|(name, value)| {
                render(cfg, c, name).is_some_and(|v| match v {
                    Value::String(s) => s == value,
                    Value::Number(n) => n.to_string() == value,
                    _ => false,
                })
            })
        })
        .collect();
    calls.sort_by_key(|c| c.calldate);
    if descending {
        calls.reverse();
    }
    calls.truncate(CALLS_PER_REQUEST_CAP);
    let rows: Vec<Map<String, Value>> = calls
        .iter()
        .map(|c| {
            fields
                .iter()
                .map(|f| ((*f).to_owned(), render(cfg, c, f).unwrap_or(json!(""))))
                .collect()
        })
        .collect();
    if csv {
        let mut out = fields.join(";");
        for row in &rows {
            out.push('\n');
            let cells: Vec<String> = fields
                .iter()
                .map(|f| match &row[*f] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            out.push_str(&cells.join(";"));
        }
        return Ok(([(header::CONTENT_TYPE, "text/csv")], out).into_response());
    }
    Ok(axum::Json(Value::Array(rows.into_iter().map(Value::Object).collect())).into_response())
}

fn render(cfg: &FakeRingostatConfig, call: &FakeCall, field: &str) -> Option<Value> {
    if field == "calldate" {
        let local = cfg
            .timezone
            .from_local_datetime(&call.calldate)
            .earliest()?;
        return Some(json!(local.format("%Y-%m-%dT%H:%M:%S%z").to_string()));
    }
    call.fields.get(field).cloned()
}

fn outward_call(
    cfg: &FakeRingostatConfig,
    st: &mut FakeState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Answer {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let fields: Map<String, Value> =
        if content_type.starts_with("application/x-www-form-urlencoded") {
            serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
                .map_err(|_| refuse(StatusCode::BAD_REQUEST, "malformed form body"))?
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect()
        } else if content_type.starts_with("application/json") {
            match serde_json::from_slice(body) {
                Ok(Value::Object(map)) => map,
                _ => return Err(refuse(StatusCode::BAD_REQUEST, "malformed JSON body")),
            }
        } else {
            return Err(refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected a form or a JSON body",
            ));
        };
    let number = |name: &str| -> Result<String, Box<Response>> {
        let raw = match fields.get(name) {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    format!("{name} is required"),
                ));
            }
        };
        let digits = raw.strip_prefix('+').unwrap_or(&raw);
        if digits.len() < 7 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!("{name} is not a phone number"),
            ));
        }
        Ok(digits.to_owned())
    };
    let extension = number("extension")?;
    let destination = number("destination")?;
    let connected: HashSet<&str> = cfg.extensions.iter().map(String::as_str).collect();
    if !connected.contains(extension.as_str()) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("extension {extension} is not connected to the project"),
        ));
    }
    st.outward_calls.push(OutwardCall {
        extension,
        destination,
    });
    Ok(axum::Json(json!({"status": "ok"})).into_response())
}
