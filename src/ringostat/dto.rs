//! Ringostat wire shapes (private to the client).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The form body of `POST /callback/outward_call` (digits, no `+`, as in the doc's example).
#[derive(Debug, Serialize)]
pub(super) struct OutwardCall<'a> {
    pub extension: &'a str,
    pub destination: &'a str,
}

/// Whatever JSON Ringostat answers; only its error markers matter (UNCONFIRMED shape:
/// `{"error": …}`, `{"status": "error", "message": …}` are both read).
#[derive(Debug, Deserialize)]
pub(super) struct Answer {
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    status: Option<Value>,
    #[serde(default)]
    message: Option<Value>,
}

impl Answer {
    /// The refusal's text, when the answer is a refusal.
    pub fn error_detail(&self) -> Option<String> {
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            Value::Object(o) => o
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| v.to_string(), str::to_owned),
            other => other.to_string(),
        };
        let is_error_status = self
            .status
            .as_ref()
            .and_then(Value::as_str)
            .is_some_and(|s| s.eq_ignore_ascii_case("error"));
        match (&self.error, &self.message) {
            (Some(e), _) if !e.is_null() && *e != Value::Bool(false) => Some(text(e)),
            (_, Some(m)) if is_error_status => Some(text(m)),
            _ if is_error_status => Some("status: error".to_owned()),
            _ => None,
        }
    }
}
