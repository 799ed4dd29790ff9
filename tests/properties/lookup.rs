//! The lookup's input (SPEC §3): any request in any layout (query, form, JSON, JSON-RPC, or
//! any body at all) answers 200, and a caller that is not a number answers "nobody" with
//! reason `not_a_number` (or `rule`: routing rules are evaluated for any caller). Through the
//! router in-process, and through the real server (its fast path) over HTTP.

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Method, Request, StatusCode, header::CONTENT_TYPE},
};
use callgate::{
    config::{Config, ManagerSettings, OneOrMany, Settings, SiteSettings},
    domain::phone_number::PhoneNormalizer,
    http::routes::route::CALLER_FIELDS,
    startup::Application,
};
use proptest::{prelude::*, test_runner::TestRunner};
use serde_json::{Map, Value};
use tempfile::TempDir;
use tower::ServiceExt;

use crate::{cases, json};

/// Rules whose matchers read what a lookup carries, so arbitrary inputs reach them.
const RULES: &str = r#"
[[rule]]
name = "vip"
caller_prefix = "+38050"
forward_to = "shop_alina"

[[rule]]
name = "ads"
utm_source = ["google", "Скрытый"]
site = "shop1"
lookup_policy = "last_talked"

[[rule]]
name = "night"
dst = "+380441112299"
hours = "22:00-08:00"
ignore = true
"#;

/// Beside the chosen parameters Ringostat's JSON body carries `call_id`, `uuid` and
/// `step_forward` (PROTOCOLS §1.5); `call_id` keys the decision's trail record.
const OTHER_FIELDS: &[&str] = &[
    "call_id",
    "uuid",
    "step_forward",
    "dst",
    "site",
    "format",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "jsonrpc",
    "id",
    "params",
    "method",
];

const FORMATS: &[&str] = &["text", "json", "jsonrpc", "xml", "JSON", ""];

/// One lookup request as sent.
#[derive(Debug, Clone)]
struct Sent {
    method: Method,
    uri: String,
    content_type: Option<String>,
    body: Vec<u8>,
    /// The caller's value as sent, when the request has exactly one caller field.
    caller: Option<Value>,
}

/// A lookup request: a caller field (any value) and other fields, in one of the layouts.
fn sent() -> impl Strategy<Value = Sent> {
    let fields = (
        prop::sample::select(CALLER_FIELDS),
        json::value(),
        prop::collection::vec((prop::sample::select(OTHER_FIELDS), json::value()), 0..4),
        prop::option::of(prop::sample::select(FORMATS)),
    )
        .prop_map(|(name, caller, others, format)| {
            let mut fields: Map<String, Value> =
                others.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            fields.insert(name.to_owned(), caller.clone());
            if let Some(format) = format {
                fields.insert("format".to_owned(), Value::from(format));
            }
            (fields, caller)
        });
    let structured =
        (fields, 0..4u8, json::scalar()).prop_map(|((fields, caller), layout, id)| match layout {
            0 => Sent {
                method: Method::GET,
                uri: format!("/ringostat/route?{}", json::form_encode(&fields)),
                content_type: None,
                body: Vec::new(),
                caller: Some(caller),
            },
            1 => Sent {
                method: Method::POST,
                uri: "/ringostat/route".to_owned(),
                content_type: Some("application/x-www-form-urlencoded".to_owned()),
                body: json::form_encode(&fields).into_bytes(),
                caller: Some(caller),
            },
            2 => Sent {
                method: Method::POST,
                uri: "/ringostat/route".to_owned(),
                content_type: Some("application/json".to_owned()),
                body: serde_json::to_vec(&fields).expect("serializes"),
                caller: None,
            },
            _ => {
                let call = serde_json::json!({
                    "jsonrpc": "2.0", "id": id, "method": "route", "params": fields,
                });
                Sent {
                    method: Method::POST,
                    uri: "/ringostat/route".to_owned(),
                    content_type: Some("application/json".to_owned()),
                    body: serde_json::to_vec(&call).expect("serializes"),
                    caller: None,
                }
            }
        });
    let raw = (
        prop::option::of(prop_oneof![
            Just("application/json".to_owned()),
            Just("application/x-www-form-urlencoded".to_owned()),
            any::<String>(),
        ]),
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            json::value().prop_map(|v| serde_json::to_vec(&v).expect("serializes")),
            json::text().prop_map(String::into_bytes),
        ],
        "[a-z_=&%0-9+]{0,40}",
    )
        .prop_map(|(content_type, body, query)| Sent {
            method: Method::POST,
            uri: format!("/ringostat/route?{query}"),
            content_type,
            body,
            caller: None,
        });
    prop_oneof![3 => structured, 1 => raw]
}

/// Checks one answer: 200 always; a JSON answer is well formed, and "nobody" unless it
/// routes; a caller that is not a number is `not_a_number` (or a rule's answer).
fn check(
    sent: &Sent,
    status: StatusCode,
    content_type: &str,
    body: &[u8],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(status, StatusCode::OK, "{:?}", sent);
    if !content_type.starts_with("application/json") {
        prop_assert!(
            content_type.starts_with("text/plain"),
            "{content_type} {sent:?}"
        );
        return Ok(());
    }
    let answer: Value =
        serde_json::from_slice(body).map_err(|e| TestCaseError::fail(format!("{e}: {sent:?}")))?;
    let object = answer.get("result").unwrap_or(&answer);
    let reason = object["reason"].as_str().unwrap_or_default();
    let routed = matches!(reason, "owner" | "rule" | "last_talked");
    prop_assert!(
        routed || object["destination"].is_null(),
        "{answer} {sent:?}"
    );
    let normalizer = PhoneNormalizer::new("UA").expect("UA is known");
    let not_a_number = match &sent.caller {
        Some(Value::String(s)) => normalizer.parse(s).is_err(),
        Some(Value::Number(n)) => normalizer.parse(&n.to_string()).is_err(),
        _ => false,
    };
    if not_a_number {
        prop_assert!(
            matches!(reason, "not_a_number" | "rule"),
            "{answer} {sent:?}"
        );
    }
    Ok(())
}

fn content_type_of(headers: &HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// A callgate on the sandbox CRM with the rules above, and the runtime it runs on.
fn app() -> (tokio::runtime::Runtime, Application, TempDir) {
    let dir = TempDir::new().expect("temp dir");
    std::fs::create_dir(dir.path().join("rules")).expect("rules dir");
    std::fs::write(dir.path().join("rules/10-props.toml"), RULES).expect("rules file");
    let mut settings = Settings::defaults().expect("defaults");
    settings.managers.push(ManagerSettings {
        crm_user_id: 27,
        ringostat_staff_id: None,
        sip: Some(OneOrMany::Many(vec!["shop_alina".to_owned()])),
        code: None,
        phone: None,
    });
    settings.sites.push(SiteSettings {
        code: "shop1".to_owned(),
        project_ids: Vec::new(),
        tracking_numbers: vec!["+380441112233".to_owned()],
    });
    settings.server.port = 0;
    settings.store.path = dir.path().join("callgate.redb");
    settings.rules.dir = dir.path().join("rules");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let config = Config::try_from(settings).expect("settings validate");
    let app = runtime
        .block_on(Application::build(config))
        .expect("app builds");
    (runtime, app, dir)
}

#[test]
fn any_lookup_request_through_the_router_answers_200() {
    let (runtime, app, _dir) = app();
    let router: Router = callgate::http::router(app.state().clone());
    let mut runner = TestRunner::new(cases(200));
    runner
        .run(&sent(), |sent| {
            let mut request = Request::builder()
                .method(sent.method.clone())
                .uri(&sent.uri);
            if let Some(ct) = &sent.content_type {
                request = request.header(CONTENT_TYPE, ct.as_str());
            }
            let Ok(request) = request.body(Body::from(sent.body.clone())) else {
                // Not a request at all (a content type that is no header value).
                return Ok(());
            };
            let (status, content_type, body) = runtime.block_on(async {
                let response = router.clone().oneshot(request).await.expect("infallible");
                let status = response.status();
                let content_type = content_type_of(response.headers());
                let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .expect("body reads");
                (status, content_type, body)
            });
            check(&sent, status, &content_type, &body)
        })
        .unwrap();
}

#[test]
fn any_lookup_request_to_the_real_server_answers_200() {
    let (runtime, app, _dir) = app();
    let base = format!("http://127.0.0.1:{}", app.port());
    let shutdown = app.shutdown_token();
    let running = runtime.spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    let mut runner = TestRunner::new(cases(40));
    let result = runner.run(&sent(), |sent| {
        let mut request = client.request(sent.method.clone(), format!("{base}{}", sent.uri));
        if let Some(ct) = &sent.content_type {
            request = request.header(CONTENT_TYPE, ct.as_str());
        }
        let request = request.body(sent.body.clone());
        let answer = runtime.block_on(async {
            let response = request.send().await?;
            let status = response.status();
            let content_type = content_type_of(response.headers());
            Ok::<_, reqwest::Error>((status, content_type, response.bytes().await?))
        });
        match answer {
            Ok((status, content_type, body)) => check(&sent, status, &content_type, &body),
            // reqwest refuses to build a request with a content type that is no header
            // value; a builder error is not an answer of callgate's.
            Err(e) if e.is_builder() => Ok(()),
            Err(e) => Err(TestCaseError::fail(format!("no answer: {e} {sent:?}"))),
        }
    });
    shutdown.cancel();
    runtime
        .block_on(running)
        .expect("joins")
        .expect("stops cleanly");
    result.unwrap();
}
