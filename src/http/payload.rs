//! Reads a request's fields from wherever the sender put them: the query string, a form body,
//! a JSON object body, or a JSON-RPC 2.0 request (`params` object). Ringostat lets users pick
//! any of these per webhook, so every public endpoint accepts all of them.

use axum::http::{HeaderMap, header::CONTENT_TYPE};
use serde_json::{Map, Value};

use super::error::ApiError;

/// Fields of one request, and the JSON-RPC id when it was a JSON-RPC call.
#[derive(Debug, Default, Clone)]
pub struct Payload {
    pub fields: Map<String, Value>,
    /// `Some` when the body was a JSON-RPC 2.0 request (`id` may be `null`).
    pub jsonrpc_id: Option<Value>,
}

impl Payload {
    /// A field as text: strings as they are, numbers and booleans printed; `None` for
    /// absent, null, or an empty string.
    pub fn text(&self, name: &str) -> Option<String> {
        match self.fields.get(name)? {
            Value::String(s) if s.trim().is_empty() => None,
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// retailCRM's `userId`: `None` when absent, a 400 naming it when it is not a positive
    /// integer.
    pub fn user_id(&self) -> Result<Option<u64>, ApiError> {
        match self.text("userId") {
            None => Ok(None),
            Some(raw) => raw
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|&id| id > 0)
                .map(Some)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "bad_user",
                        Some("userId"),
                        format!("userId {raw:?} is not a positive integer"),
                    )
                }),
        }
    }

    /// The first present field among `names`.
    pub fn first_text(&self, names: &[&str]) -> Option<String> {
        names.iter().find_map(|n| self.text(n))
    }
}

/// Query fields first; body fields (form, JSON, JSON-RPC params) override them.
pub fn read(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Result<Payload, ApiError> {
    let mut payload = Payload::default();
    if let Some(q) = query {
        merge_form(&mut payload.fields, q.as_bytes());
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(payload);
    }
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let looks_json = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{' || b == b'[');
    if content_type.contains("json") || (!content_type.contains("form") && looks_json) {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(
                "malformed_json",
                None,
                format!("body is not valid JSON: {e}"),
            )
        })?;
        let Value::Object(mut object) = value else {
            return Err(ApiError::bad_request(
                "malformed_json",
                None,
                "JSON body must be an object",
            ));
        };
        if object.get("jsonrpc").and_then(Value::as_str) == Some("2.0") {
            payload.jsonrpc_id = Some(object.remove("id").unwrap_or(Value::Null));
            match object.remove("params") {
                Some(Value::Object(params)) => payload.fields.extend(params),
                None | Some(Value::Null) => {}
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "malformed_jsonrpc",
                        Some("params"),
                        "JSON-RPC params must be an object of named parameters",
                    ));
                }
            }
            if let Some(method) = object.remove("method") {
                payload.fields.entry("method").or_insert(method);
            }
        } else {
            payload.fields.extend(object);
        }
    } else {
        merge_form(&mut payload.fields, body);
    }
    Ok(payload)
}

/// Adds the `name=value` pairs of a query string or form body (percent-decoded, `+` as a
/// space, bytes that are not UTF-8 replaced: reading one never fails); a later pair replaces
/// an earlier one of the same name.
fn merge_form(fields: &mut Map<String, Value>, raw: &[u8]) {
    for (k, v) in form_urlencoded::parse(raw) {
        fields.insert(k.into_owned(), Value::String(v.into_owned()));
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        h
    }

    #[test]
    fn reads_query_form_json_and_jsonrpc() {
        let p = read(
            Some("caller=380981234567&format=json"),
            &HeaderMap::new(),
            b"",
        )
        .unwrap();
        assert_eq!(p.text("caller").as_deref(), Some("380981234567"));
        let p = read(
            None,
            &headers("application/x-www-form-urlencoded"),
            b"caller=%2B380",
        )
        .unwrap();
        assert_eq!(p.text("caller").as_deref(), Some("+380"));
        let p = read(
            None,
            &headers("application/json"),
            br#"{"caller": 380981234567}"#,
        )
        .unwrap();
        assert_eq!(p.text("caller").as_deref(), Some("380981234567"));
        let p = read(
            None,
            &HeaderMap::new(),
            br#"{"jsonrpc":"2.0","id":7,"method":"route","params":{"caller":"0981234567"}}"#,
        )
        .unwrap();
        assert_eq!(p.jsonrpc_id, Some(Value::from(7)));
        assert_eq!(p.text("caller").as_deref(), Some("0981234567"));
    }

    #[test]
    fn malformed_bodies_are_named() {
        let err = read(None, &headers("application/json"), b"{nope").unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
        let err = read(None, &headers("application/json"), b"[1]").unwrap_err();
        assert!(err.to_string().contains("object"), "{err}");
    }
}
