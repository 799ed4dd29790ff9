//! The lookup's input (SPEC §3) through callgate's router: the first byte picks the method
//! and the content type, the rest is the query string and the body (split at the first
//! 0xFF). Every request must be answered 200.
#![no_main]

use std::sync::LazyLock;

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode, header::CONTENT_TYPE},
};
use callgate::{
    config::{Config, ManagerSettings, OneOrMany, Settings},
    startup::Application,
};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const CONTENT_TYPES: [Option<&str>; 4] = [
    None,
    Some("application/json"),
    Some("application/x-www-form-urlencoded"),
    Some("text/plain"),
];

struct App {
    runtime: tokio::runtime::Runtime,
    router: Router,
    _app: Application,
    _dir: tempfile::TempDir,
}

static APP: LazyLock<App> = LazyLock::new(|| {
    let dir = tempfile::TempDir::new().unwrap();
    let mut settings = Settings::defaults().unwrap();
    settings.managers.push(ManagerSettings {
        crm_user_id: 27,
        ringostat_staff_id: None,
        sip: Some(OneOrMany::Many(vec!["shop_alina".to_owned()])),
        code: None,
        phone: None,
    });
    settings.server.port = 0;
    settings.store.path = dir.path().join("callgate.redb");
    settings.rules.dir = dir.path().join("no-rules");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = Config::try_from(settings).unwrap();
    let app = runtime.block_on(Application::build(config)).unwrap();
    let router = callgate::http::router(app.state().clone());
    App {
        runtime,
        router,
        _app: app,
        _dir: dir,
    }
});

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (query, body) = match rest.iter().position(|&b| b == 0xff) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (&b""[..], rest),
    };
    let Ok(query) = std::str::from_utf8(query) else {
        return;
    };
    let method = if selector & 4 == 0 { Method::POST } else { Method::GET };
    let mut request = Request::builder()
        .method(method)
        .uri(format!("/ringostat/route?{query}"));
    if let Some(ct) = CONTENT_TYPES[usize::from(selector & 3)] {
        request = request.header(CONTENT_TYPE, ct);
    }
    // A query that is no valid URI is refused by the HTTP layer before callgate sees it.
    let Ok(request) = request.body(Body::from(body.to_vec())) else {
        return;
    };
    let app = &*APP;
    let status = app
        .runtime
        .block_on(app.router.clone().oneshot(request))
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK, "query {query:?} body {body:?}");
});
