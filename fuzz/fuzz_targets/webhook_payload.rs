//! The webhook payload (SPEC §4) in its four layouts: the first byte picks the layout and the
//! content type, the rest is the query string and/or the body (split at the first 0xFF).
//! Reading it and parsing the call event must never panic.
#![no_main]

use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderValue, header::CONTENT_TYPE};
use callgate::{
    domain::{
        call::{CallEvent, FieldAliases},
        phone_number::PhoneNormalizer,
        rules::MatchContext,
    },
    http::payload,
};
use libfuzzer_sys::fuzz_target;

static UA: LazyLock<PhoneNormalizer> = LazyLock::new(|| PhoneNormalizer::new("UA").unwrap());
static ALIASES: LazyLock<FieldAliases> = LazyLock::new(FieldAliases::default);

const CONTENT_TYPES: [Option<&str>; 4] = [
    None,
    Some("application/json"),
    Some("application/x-www-form-urlencoded"),
    Some("text/plain; charset=utf-8"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (query, body) = match rest.iter().position(|&b| b == 0xff) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (&b""[..], rest),
    };
    let query = std::str::from_utf8(query).ok().filter(|q| !q.is_empty());
    let mut headers = HeaderMap::new();
    if let Some(ct) = CONTENT_TYPES[usize::from(selector & 3)] {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    // Bit 2: wrap a JSON body under additional_call_data (the nested layout).
    let nested;
    let body = if selector & 4 != 0 {
        match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(v) => {
                nested = serde_json::to_vec(&serde_json::json!({"additional_call_data": v}))
                    .unwrap();
                &nested[..]
            }
            Err(_) => body,
        }
    } else {
        body
    };
    let hint = match selector >> 3 & 7 {
        0 => None,
        1 => Some("start"),
        2 => Some("answer"),
        3 => Some("end"),
        4 => Some("missed"),
        _ => query,
    };
    let Ok(mut payload) = payload::read(query, &headers, body) else {
        return;
    };
    payload.fields.remove("token");
    payload.fields.remove("event");
    let normalize = |raw: &str| UA.parse(raw).map(|p| p.number);
    if let Ok(event) = CallEvent::parse(&payload.fields, &ALIASES, hint, &normalize) {
        let _ = (event.dedupe_key(), event.leg(), event.outcome(), event.call_result());
        let _ = MatchContext::for_event(&event, None, None, chrono::Utc::now());
        serde_json::to_vec(&payload.fields).expect("read fields serialize");
    }
});
