//! retailCRM's wire shapes, private to the adapter.
//!
//! Reads are lenient where the API is known to vary (PROTOCOLS §2.2, §2.6): ids come as
//! numbers or numeric strings, an empty map comes as `[]`, and a missing sub-object may
//! come as `null`, `[]` or not at all. Writes are strict and leave out every `None`, so
//! the CRM applies its own defaults.

use std::collections::HashMap;

use serde::{Deserialize, Deserializer, Serialize, de::DeserializeOwned};
use serde_json::Value;

// ---------------------------------------------------------------------------------------
// Lenient readers
// ---------------------------------------------------------------------------------------

/// An id as the CRM sends it: `27` or `"27"` (PHP models declare some ids as strings).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawId {
    Num(u64),
    Str(String),
}

impl RawId {
    /// `None` for an empty string; an error for anything else that is not a number.
    fn into_id<E: serde::de::Error>(self) -> Result<Option<u64>, E> {
        match self {
            RawId::Num(n) => Ok(Some(n)),
            RawId::Str(s) if s.trim().is_empty() => Ok(None),
            RawId::Str(s) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| E::custom(format!("id {s:?} is not a number"))),
        }
    }
}

/// A required id, number or numeric string.
pub(super) fn id<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    RawId::deserialize(d)?
        .into_id()?
        .ok_or_else(|| serde::de::Error::custom("empty id"))
}

/// An optional id: missing, `null` or `""` are `None`.
pub(super) fn opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<RawId>::deserialize(d)? {
        Some(raw) => raw.into_id(),
        None => Ok(None),
    }
}

/// A list of ids, each a number or a numeric string.
pub(super) fn ids<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    let raw = Option::<Vec<RawId>>::deserialize(d)?.unwrap_or_default();
    let mut out = Vec::with_capacity(raw.len());
    for r in raw {
        if let Some(id) = r.into_id()? {
            out.push(id);
        }
    }
    Ok(out)
}

/// A short text that may come as a number (`"code": 12`); empty is `None`.
pub(super) fn opt_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

/// A sub-object that is absent when it is `null`, `[]`, `{}` or anything not an object
/// (PHP serializes an empty array as `[]`).
pub(super) fn object_or_empty<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    match Option::<Value>::deserialize(d)? {
        Some(Value::Object(m)) if !m.is_empty() => serde_json::from_value(Value::Object(m))
            .map(Some)
            .map_err(serde::de::Error::custom),
        _ => Ok(None),
    }
}

/// A map that comes as `{…}`, or as `[]` when empty.
pub(super) fn map_or_empty<'de, D, V>(d: D) -> Result<HashMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: DeserializeOwned,
{
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(HashMap::new()),
        Some(Value::Array(a)) if a.is_empty() => Ok(HashMap::new()),
        Some(v @ Value::Object(_)) => serde_json::from_value(v).map_err(serde::de::Error::custom),
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected a map or [], got {}",
            kind_of(&other)
        ))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a non-empty array",
        Value::Object(_) => "an object",
    }
}

// ---------------------------------------------------------------------------------------
// Envelope
// ---------------------------------------------------------------------------------------

/// `errors` flattened to `field: text` (object form) or kept as is (array form).
pub(super) fn flatten_errors(errors: Option<&Value>) -> Vec<String> {
    fn text(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
    match errors {
        Some(Value::Object(m)) => m.iter().map(|(k, v)| format!("{k}: {}", text(v))).collect(),
        Some(Value::Array(a)) => a.iter().map(text).collect(),
        Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// `success` as a boolean; a Python mock sends `"true"`, so accept the string too.
pub(super) fn success_flag(body: &Value) -> Option<bool> {
    match body.get("success")? {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// `pagination` of list answers.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Pagination {
    #[serde(default)]
    pub total_count: Option<u64>,
    #[serde(default)]
    pub current_page: Option<u32>,
    #[serde(default)]
    pub total_page_count: Option<u32>,
}

/// `{"success":true,"id":N}` of `*/create`.
#[derive(Debug, Deserialize)]
pub(super) struct Created {
    #[serde(deserialize_with = "id")]
    pub id: u64,
}

/// One page of `GET tasks` (the read shape, PROTOCOLS §2.8); only what callgate reads.
#[derive(Debug, Deserialize)]
pub(super) struct TasksPage {
    #[serde(default)]
    pub tasks: Vec<TaskReadDto>,
    #[serde(default)]
    pub pagination: Option<Pagination>,
}

#[derive(Debug, Deserialize)]
pub(super) struct TaskReadDto {
    pub id: u64,
    #[serde(default)]
    pub commentary: Option<String>,
}

// ---------------------------------------------------------------------------------------
// telephony/manager
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub(super) struct ManagerAnswer {
    #[serde(default, deserialize_with = "object_or_empty")]
    pub manager: Option<ManagerRef>,
    #[serde(default, deserialize_with = "object_or_empty")]
    pub customer: Option<ManagerCustomer>,
}

/// `customer` of `telephony/manager` with `details=1`: its id and phones as stored.
#[derive(Debug, Deserialize)]
pub(super) struct ManagerCustomer {
    #[serde(default, deserialize_with = "opt_id")]
    pub id: Option<u64>,
    #[serde(default)]
    pub phones: Vec<PhoneDto>,
}

#[derive(Debug, Deserialize)]
pub(super) struct ManagerRef {
    #[serde(default, deserialize_with = "opt_id")]
    pub id: Option<u64>,
    #[serde(default, deserialize_with = "opt_text")]
    pub code: Option<String>,
}

/// Any `{"id": …}` reference (customer of an order, customer of telephony/manager).
#[derive(Debug, Deserialize)]
pub(super) struct EntityRef {
    #[serde(default, deserialize_with = "opt_id")]
    pub id: Option<u64>,
}

// ---------------------------------------------------------------------------------------
// users
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub(super) struct UsersPage {
    #[serde(default)]
    pub users: Vec<UserDto>,
    #[serde(default)]
    pub pagination: Option<Pagination>,
}

/// A user; empty fields are left out by the CRM (PROTOCOLS §2.7).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct UserDto {
    #[serde(deserialize_with = "id")]
    pub id: u64,
    #[serde(default)]
    pub active: Option<bool>,
    #[serde(default)]
    pub is_manager: Option<bool>,
    #[serde(default, deserialize_with = "opt_text")]
    pub status: Option<String>,
    #[serde(default)]
    pub online: Option<bool>,
    #[serde(default, deserialize_with = "opt_text")]
    pub first_name: Option<String>,
    #[serde(default, deserialize_with = "opt_text")]
    pub last_name: Option<String>,
}

// ---------------------------------------------------------------------------------------
// customers
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub(super) struct CustomersPage {
    #[serde(default)]
    pub customers: Vec<CustomerDto>,
    #[serde(default)]
    pub pagination: Option<Pagination>,
}

/// `customers/history` (PROTOCOLS §2.10).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct HistoryAnswer {
    #[serde(default)]
    pub history: Vec<HistoryDto>,
    #[serde(default, deserialize_with = "opt_text")]
    pub generated_at: Option<String>,
}

/// One history record. `customer` is the whole customer on a `created` record and a
/// reference `{"id","externalId","site"}` otherwise, so it is kept as JSON until read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct HistoryDto {
    #[serde(deserialize_with = "id")]
    pub id: u64,
    #[serde(default, deserialize_with = "opt_text")]
    pub created_at: Option<String>,
    #[serde(default, deserialize_with = "opt_text")]
    pub field: Option<String>,
    #[serde(default)]
    pub old_value: Value,
    #[serde(default)]
    pub new_value: Value,
    #[serde(default)]
    pub customer: Value,
    /// `orders/history`: the order, as `customer` is for customers.
    #[serde(default)]
    pub order: Value,
    #[serde(default)]
    pub created: Option<bool>,
    #[serde(default)]
    pub deleted: Option<bool>,
    #[serde(default)]
    pub combined_to: Value,
}

#[derive(Debug, Deserialize)]
pub(super) struct CustomerAnswer {
    #[serde(default, deserialize_with = "object_or_empty")]
    pub customer: Option<CustomerDto>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CustomerDto {
    #[serde(deserialize_with = "id")]
    pub id: u64,
    #[serde(default, deserialize_with = "opt_text")]
    pub external_id: Option<String>,
    #[serde(default, deserialize_with = "opt_id")]
    pub manager_id: Option<u64>,
    #[serde(default)]
    pub phones: Vec<PhoneDto>,
    #[serde(default, deserialize_with = "opt_text")]
    pub created_at: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
pub(super) struct PhoneDto {
    #[serde(default, deserialize_with = "opt_text")]
    pub number: Option<String>,
}

/// UTM tags; every empty tag is left out.
#[derive(Debug, Serialize)]
pub(super) struct SourceDto<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub medium: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyword: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
}

impl<'a> SourceDto<'a> {
    /// `None` when no tag is set, so `source` is left out entirely.
    pub fn from_utm(utm: &'a crate::crm::UtmSource) -> Option<Self> {
        fn tag(t: &Option<String>) -> Option<&str> {
            t.as_deref().filter(|s| !s.is_empty())
        }
        let dto = SourceDto {
            source: tag(&utm.source),
            medium: tag(&utm.medium),
            campaign: tag(&utm.campaign),
            keyword: tag(&utm.keyword),
            content: tag(&utm.content),
        };
        let empty = dto.source.is_none()
            && dto.medium.is_none()
            && dto.campaign.is_none()
            && dto.keyword.is_none()
            && dto.content.is_none();
        (!empty).then_some(dto)
    }
}

/// `customer=` of `customers/create`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct NewCustomerDto<'a> {
    pub external_id: &'a str,
    pub phones: Vec<NewPhoneDto<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manager_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceDto<'a>>,
    /// GA client id of the visit that brought the customer. Official models (PHP v6
    /// `Customers\Customer`, Go `Customer`) carry `firstClientId`/`lastClientId` on the
    /// same entity used for `customers/create`; that they are Google Analytics ids is read
    /// from their names and the GA integration, not from a doc sentence (UNCONFIRMED).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_client_id: Option<&'a str>,
}

#[derive(Debug, Serialize)]
pub(super) struct NewPhoneDto<'a> {
    pub number: &'a str,
}

// ---------------------------------------------------------------------------------------
// orders
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub(super) struct OrdersPage {
    #[serde(default)]
    pub orders: Vec<OrderDto>,
    #[serde(default)]
    pub pagination: Option<Pagination>,
}

#[derive(Debug, Deserialize)]
pub(super) struct OrderAnswer {
    #[serde(default, deserialize_with = "object_or_empty")]
    pub order: Option<OrderDto>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct OrderDto {
    #[serde(deserialize_with = "id")]
    pub id: u64,
    #[serde(default, deserialize_with = "opt_text")]
    pub external_id: Option<String>,
    #[serde(default, deserialize_with = "opt_text")]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "opt_id")]
    pub manager_id: Option<u64>,
    #[serde(default, deserialize_with = "object_or_empty")]
    pub customer: Option<EntityRef>,
    #[serde(default, deserialize_with = "opt_text")]
    pub created_at: Option<String>,
}

/// `order=` of `orders/create`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct NewOrderDto<'a> {
    pub external_id: &'a str,
    pub order_method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manager_id: Option<u64>,
    pub customer: IdRef,
    pub phone: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceDto<'a>>,
    /// Google Analytics client id: `clientId` on the official order model (PHP v6
    /// `Orders\Order::$clientId`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<&'a str>,
}

/// `{"id": N}`.
#[derive(Debug, Serialize)]
pub(super) struct IdRef {
    pub id: u64,
}

// ---------------------------------------------------------------------------------------
// tasks
// ---------------------------------------------------------------------------------------

/// `task=` of `tasks/create` and `tasks/{id}/edit`.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TaskDto<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commentary: Option<&'a str>,
    /// `Y-m-d H:i`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datetime: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub performer_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub complete: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<IdRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer: Option<IdRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<&'a str>,
}

// ---------------------------------------------------------------------------------------
// telephony
// ---------------------------------------------------------------------------------------

/// `event=` of `telephony/call/event`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CallEventDto<'a> {
    pub phone: &'a str,
    #[serde(rename = "type")]
    pub event_type: &'static str,
    /// Always sent, even empty: the old client required the key.
    pub codes: &'a [String],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub user_ids: Vec<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hangup_status: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_phone: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_external_id: Option<&'a str>,
}

/// One element of `calls=` of `telephony/calls/upload`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CallDto<'a> {
    /// `Y-m-d H:i:s`.
    pub date: String,
    #[serde(rename = "type")]
    pub call_type: &'static str,
    pub phone: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<u64>,
    pub result: &'static str,
    pub duration: u32,
    pub duration_waiting: u32,
    pub external_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceDto<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_phone: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<&'a str>,
    /// Google Analytics client id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<&'a str>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct UploadAnswer {
    #[serde(default)]
    pub processed_calls_count: Option<u32>,
    /// Optional: the official fixtures disagree on whether it is always present.
    #[serde(default)]
    pub duplicate_calls: Option<Vec<Value>>,
}

// ---------------------------------------------------------------------------------------
// reference/statuses
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub(super) struct StatusesAnswer {
    #[serde(default, deserialize_with = "map_or_empty")]
    pub statuses: HashMap<String, StatusDto>,
}

#[derive(Debug, Deserialize)]
pub(super) struct StatusDto {
    #[serde(default, deserialize_with = "opt_text")]
    pub code: Option<String>,
    #[serde(default, deserialize_with = "opt_text")]
    pub group: Option<String>,
}

// ---------------------------------------------------------------------------------------
// integration-modules
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub(super) struct ModuleEditAnswer {
    #[serde(default, deserialize_with = "object_or_empty")]
    pub info: Option<ModuleEditInfo>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ModuleEditInfo {
    #[serde(default, deserialize_with = "ids")]
    pub not_exist_users_ids: Vec<u64>,
    #[serde(default)]
    pub not_exist_site_codes: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_numbers_and_numeric_strings() {
        let a: ManagerAnswer =
            serde_json::from_str(r#"{"manager":{"id":"27","code":12},"customer":{"id":5}}"#)
                .unwrap();
        let m = a.manager.unwrap();
        assert_eq!(m.id, Some(27));
        assert_eq!(m.code.as_deref(), Some("12"));
        assert_eq!(a.customer.unwrap().id, Some(5));
    }

    #[test]
    fn a_non_numeric_id_is_an_error() {
        assert!(serde_json::from_str::<Created>(r#"{"id":"abc"}"#).is_err());
    }

    #[test]
    fn empty_sub_objects_come_as_empty_arrays_or_null() {
        for body in [
            r#"{"manager":[],"customer":null}"#,
            r#"{"manager":{},"customer":[]}"#,
            r#"{}"#,
        ] {
            let a: ManagerAnswer = serde_json::from_str(body).unwrap();
            assert!(a.manager.is_none() && a.customer.is_none(), "{body}");
        }
    }

    #[test]
    fn an_empty_map_may_be_an_empty_array() {
        let a: StatusesAnswer = serde_json::from_str(r#"{"statuses":[]}"#).unwrap();
        assert!(a.statuses.is_empty());
        assert!(serde_json::from_str::<StatusesAnswer>(r#"{"statuses":[1]}"#).is_err());
    }

    #[test]
    fn errors_flatten_from_object_and_array() {
        let obj = serde_json::json!({"name": "name must be provided", "n": 1});
        let mut flat = flatten_errors(Some(&obj));
        flat.sort();
        assert_eq!(flat, vec!["n: 1", "name: name must be provided"]);
        let arr = serde_json::json!(["first", "second"]);
        assert_eq!(flatten_errors(Some(&arr)), vec!["first", "second"]);
        assert!(flatten_errors(Some(&serde_json::json!([]))).is_empty());
        assert!(flatten_errors(None).is_empty());
    }
}
