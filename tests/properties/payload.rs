//! The webhook payload in its four layouts (SPEC §4: query string, form body, JSON at the
//! root, JSON nested under `additional_call_data`) and any body at all: reading it and
//! parsing the call event never panic, and the layout does not change what is read.

use axum::http::{HeaderMap, HeaderValue, header::CONTENT_TYPE};
use callgate::{
    domain::{
        call::{CallEvent, FieldAliases},
        phone_number::{PhoneNormalizer, PhoneNumber, PhoneNumberError},
        rules::MatchContext,
    },
    http::payload::{self, Payload},
};
use chrono::Utc;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::{cases, json};

/// Field names of the default alias map (both namings) and the webhook's own parameters.
const KNOWN: &[&str] = &[
    "uniqueid",
    "call_id",
    "calldate",
    "call_date",
    "caller",
    "caller_number",
    "number_e164",
    "dst",
    "destination",
    "call_type",
    "type",
    "disposition",
    "status",
    "duration",
    "duration_call",
    "billsec",
    "duration_conversation",
    "waittime",
    "duration_waiting",
    "recording",
    "has_recording",
    "recording_presence",
    "employee_number",
    "employee_id",
    "connected_with",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "client_id",
    "project_id",
    "call_card_link",
    "additional_call_data",
    "token",
    "event",
    "jsonrpc",
    "params",
    "id",
    "method",
];

const EVENTS: &[&str] = &["start", "answer", "end", "missed", "", "END", "Скрытый"];

fn headers(content_type: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(ct) = content_type.and_then(|ct| HeaderValue::from_str(ct).ok()) {
        h.insert(CONTENT_TYPE, ct);
    }
    h
}

/// What the webhook handler does with a payload it has read.
fn parse_event(mut payload: Payload, hint: Option<&str>) {
    for control in ["token", "event"] {
        payload.fields.remove(control);
    }
    let normalizer = PhoneNormalizer::new("UA").expect("UA is known");
    let normalize = |raw: &str| -> Result<PhoneNumber, PhoneNumberError> {
        normalizer.parse(raw).map(|p| p.number)
    };
    let aliases = FieldAliases::default();
    if let Ok(event) = CallEvent::parse(&payload.fields, &aliases, hint, &normalize) {
        // What the worker derives from a parsed event reads the outside data again.
        let _ = (
            event.dedupe_key(),
            event.leg(),
            event.outcome(),
            event.call_result(),
        );
        let ctx = MatchContext::for_event(&event, Some("shop1"), Some(true), Utc::now());
        let _ = ctx.caller;
        serde_json::to_vec(&payload.fields).expect("read fields serialize again");
    }
}

/// Reads the payload as the webhook does; a read error is an answer (400), not a panic.
fn read_and_parse(
    query: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
    hint: Option<&str>,
) {
    if let Ok(payload) = payload::read(query, &headers(content_type), body) {
        parse_event(payload, hint);
    }
}

proptest! {
    #![proptest_config(cases(150))]

    #[test]
    fn no_payload_in_any_layout_panics_the_reader_or_the_event_parser(
        fields in json::object(KNOWN),
        root in json::object(KNOWN),
        hint in prop::option::of(prop_oneof![prop::sample::select(EVENTS).prop_map(str::to_owned), any::<String>()]),
    ) {
        let hint = hint.as_deref();
        let encoded = json::form_encode(&fields);
        // 1. Query string.
        read_and_parse(Some(&encoded), None, b"", hint);
        // 2. Form body (with and without its content type).
        read_and_parse(None, Some("application/x-www-form-urlencoded"), encoded.as_bytes(), hint);
        read_and_parse(Some("token=t&event=end"), None, encoded.as_bytes(), hint);
        // 3. JSON at the root.
        let body = serde_json::to_vec(&fields).expect("values serialize");
        read_and_parse(None, Some("application/json"), &body, hint);
        read_and_parse(None, None, &body, hint);
        // 4. JSON nested under additional_call_data, beside other root fields.
        let mut nested = root;
        nested.insert("additional_call_data".to_owned(), Value::Object(fields));
        let body = serde_json::to_vec(&nested).expect("values serialize");
        read_and_parse(Some(&encoded), Some("application/json; charset=utf-8"), &body, hint);
    }

    #[test]
    fn no_body_and_content_type_panics_the_reader(
        query in prop::option::of(any::<String>()),
        content_type in prop::option::of(prop_oneof![
            Just("application/json".to_owned()),
            Just("application/x-www-form-urlencoded".to_owned()),
            Just("text/plain".to_owned()),
            any::<String>(),
        ]),
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            json::value().prop_map(|v| serde_json::to_vec(&v).expect("values serialize")),
            json::text().prop_map(String::into_bytes),
        ],
    ) {
        read_and_parse(query.as_deref(), content_type.as_deref(), &body, Some("end"));
    }

    #[test]
    fn a_payload_of_text_fields_reads_the_same_in_every_layout(
        fields in prop::collection::btree_map(json::field_name(KNOWN), json::text(), 0..12),
    ) {
        let fields: Map<String, Value> = fields.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
        // A `jsonrpc: "2.0"` body is a JSON-RPC call, and a nested `additional_call_data`
        // is another layout: neither is a plain payload of text fields.
        prop_assume!(fields.get("jsonrpc") != Some(&Value::from("2.0")));
        prop_assume!(!fields.keys().any(|k| k.starts_with("additional_call_data")));
        let encoded = json::form_encode(&fields);
        let from_query = payload::read(Some(&encoded), &HeaderMap::new(), b"").expect("query reads");
        let from_form = payload::read(None, &headers(Some("application/x-www-form-urlencoded")), encoded.as_bytes()).expect("form reads");
        let body = serde_json::to_vec(&fields).expect("serializes");
        let from_json = payload::read(None, &headers(Some("application/json")), &body).expect("JSON reads");
        prop_assert_eq!(&from_query.fields, &fields);
        prop_assert_eq!(&from_form.fields, &fields);
        prop_assert_eq!(&from_json.fields, &fields);
        // Nested under additional_call_data, the event parser sees the same call.
        let nested = json!({"additional_call_data": fields});
        let Value::Object(nested) = nested else { unreachable!() };
        let normalizer = PhoneNormalizer::new("UA").expect("UA is known");
        let normalize = |raw: &str| normalizer.parse(raw).map(|p| p.number);
        let aliases = FieldAliases::default();
        let flat = CallEvent::parse(&fields, &aliases, None, &normalize).map(|e| e.call_id);
        let deep = CallEvent::parse(&nested, &aliases, None, &normalize).map(|e| e.call_id);
        prop_assert_eq!(flat.is_ok(), deep.is_ok(), "{:?} vs {:?}", flat, deep);
        if let (Ok(flat), Ok(deep)) = (flat, deep) {
            prop_assert_eq!(flat, deep);
        }
    }
}
