//! Strategies for the inputs the outside world sends: arbitrary JSON values, strings that
//! mix phone-number characters with any Unicode, and values as Ringostat sends them.

use proptest::prelude::*;
use serde_json::{Map, Number, Value};

/// Any Unicode string, biased towards the characters parsers look at.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        3 => phoneish(),
        1 => prop::sample::select(vec![
            "Скрытый номер", "anonymous", "sip:alice@pbx", "<sip:+380981234567@pbx>", "",
            " ", "null", "+", "00", "доб. 12", "ext. 5", ";ext=5", "8 0", "\u{0}", "\u{feff}",
            "+380981234567", "0981234567", "sip:", "@", "<>", "><", "sips:<@>;",
        ]).prop_map(str::to_owned),
    ]
}

/// Digits, phone punctuation and the odd Unicode character (multi-byte ones included).
pub fn phoneish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        6 => "[0-9]{1,4}",
        3 => "[ +()\\-.;=@<>:]",
        1 => "(sip|sips|SIP|ext|доб|x|tel):?",
        1 => any::<char>().prop_map(String::from),
        1 => "[\u{400}-\u{4ff}\u{660}-\u{669}\u{ff10}-\u{ff19}\u{1f4de}]{1,3}",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

/// A JSON number: integers of every size, fractions, extremes.
pub fn number() -> impl Strategy<Value = Number> {
    prop_oneof![
        any::<i64>().prop_map(Number::from),
        any::<u64>().prop_map(Number::from),
        any::<f64>().prop_filter_map("finite", Number::from_f64),
        (0u64..10_000_000_000_000).prop_map(Number::from),
    ]
}

/// Any JSON scalar.
pub fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number().prop_map(Value::Number),
        text().prop_map(Value::String),
    ]
}

/// Any JSON value (nested arrays and objects, a few levels deep).
pub fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A field name: one the parsers know (so their values get read) or any string.
pub fn field_name(known: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(known).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

/// An object of known and unknown fields with arbitrary values.
pub fn object(known: &'static [&'static str]) -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((field_name(known), value()), 0..12)
        .prop_map(|pairs| pairs.into_iter().collect())
}

/// Fields as a query string or a form body.
pub fn form_encode(fields: &Map<String, Value>) -> String {
    let pairs: Vec<(&str, String)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), as_form_text(v)))
        .collect();
    serde_urlencoded::to_string(pairs).expect("strings encode")
}

/// A JSON value printed the way a form field or a query parameter carries it.
pub fn as_form_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
