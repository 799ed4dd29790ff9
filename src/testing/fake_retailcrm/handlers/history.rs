//! `customers/history` and `orders/history` of the fake (PROTOCOLS §2.10): every change to a
//! customer or an order, made through the API or "by hand" (the test-side helpers of
//! [`super::super::FakeRetailCrm`]), becomes history records, and `GET customers/history` /
//! `GET orders/history` serve them (one walk for both, each with its own record ids).
//!
//! Order records [UNCONFIRMED: by analogy with customers, the shapes retailCRM's docs show
//! for `orders/history`]: `order` is the whole order on `created` and a reference
//! `{"id", "externalId"?, "site", "status"}` otherwise; `status` changes carry
//! `{"code": …}` values; `manager` `{"id": N}` or `null`; `customer` `{"id": N}`;
//! `deleted: true` for a deleted order.
//!
//! Record shapes:
//! - created: `{"created": true, "field": "id", "newValue": N, "customer": <whole customer>}`;
//! - deleted: `{"deleted": true, "field": "id", "oldValue": N, "customer": <ref>}`, plus
//!   `"combinedTo": {"id": M, …}` when the customer was merged into M;
//! - `manager`: `oldValue`/`newValue` `{"id": N}` or `null`;
//! - `phones`: one record per number, the number itself as the value (`null → X` added,
//!   `X → null` removed, `X → Y` changed);
//! - `first_name`, `last_name`, `email`, `external_id`: the plain values.
//!
//! Every record but `created` carries a reference `{"id", "externalId"?, "site"}`. `source`
//! is `api` (with `apiKey: {"current": true}`, the fake has one key) or `user` (with
//! `user: {"id"}`).
//!
//! Walking: `filter[sinceId]` (records with a greater id) or `filter[startDate]`
//! (`Y-m-d H:i:s`, records created at or after it), oldest first; `limit` 20/50/100
//! (default 100); `page` together with `filter[sinceId]` is refused with 400, as retailCRM
//! does since 2023-05-15. A bad `startDate` is 400 with `errors: {"children[startDate]": …}`.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::{Answer, CrmState, NOT_VALID, error, id_eq, input_error, now, ok, parse_exact};
use crate::testing::fake_retailcrm::ApiRequest;

/// `limit` values of the history method.
const HISTORY_LIMITS: [usize; 3] = [20, 50, 100];
/// Default page size of the history method.
const DEFAULT_HISTORY_LIMIT: usize = 100;
/// The user a "by hand" change is attributed to.
pub(crate) const HAND_USER_ID: u64 = 1;

/// Who made a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Actor {
    /// Through the API, with the (only) key.
    Api,
    /// In the CRM's UI, by a user.
    User(u64),
}

/// Which history a record goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entity {
    Customer,
    Order,
}

impl Entity {
    /// The record's key for the entity (`customer`, `order`).
    fn key(self) -> &'static str {
        match self {
            Entity::Customer => "customer",
            Entity::Order => "order",
        }
    }
}

/// The reference every non-`created` order record carries.
fn order_ref(o: &Value) -> Value {
    let mut r = json!({"id": o["id"], "site": o["site"], "status": o["status"]});
    if let Some(ext) = o["externalId"].as_str() {
        r["externalId"] = json!(ext);
    }
    r
}

/// The reference every non-`created` record carries.
fn customer_ref(c: &Value) -> Value {
    let mut r = json!({"id": c["id"], "site": c["site"]});
    if let Some(ext) = c["externalId"].as_str() {
        r["externalId"] = json!(ext);
    }
    r
}

fn push(st: &mut CrmState, actor: Actor, customer: Value, field: &str, old: Value, new: Value) {
    push_with(st, actor, customer, field, old, new, Map::new());
}

fn push_with(
    st: &mut CrmState,
    actor: Actor,
    customer: Value,
    field: &str,
    old: Value,
    new: Value,
    extra: Map<String, Value>,
) {
    push_to(
        st,
        Entity::Customer,
        actor,
        customer,
        field,
        old,
        new,
        extra,
    );
}

#[allow(clippy::too_many_arguments)]
fn push_to(
    st: &mut CrmState,
    entity: Entity,
    actor: Actor,
    subject: Value,
    field: &str,
    old: Value,
    new: Value,
    extra: Map<String, Value>,
) {
    let id = match entity {
        Entity::Customer => &mut st.next_history_id,
        Entity::Order => &mut st.next_order_history_id,
    };
    let record_id = *id;
    *id += 1;
    let mut record = json!({
        "id": record_id,
        "createdAt": now(),
        "field": field,
        "oldValue": old,
        "newValue": new,
    });
    record[entity.key()] = subject;
    match actor {
        Actor::Api => {
            record["source"] = json!("api");
            record["apiKey"] = json!({"current": true});
        }
        Actor::User(user) => {
            record["source"] = json!("user");
            record["user"] = json!({"id": user});
        }
    }
    if let Value::Object(r) = &mut record {
        r.extend(extra);
    }
    match entity {
        Entity::Customer => st.history.push(record),
        Entity::Order => st.order_history.push(record),
    }
}

/// An order was created (its whole read shape goes in the record).
pub(crate) fn order_created(st: &mut CrmState, id: u64, actor: Actor) {
    let Some(o) = st.orders.get(&id).cloned() else {
        return;
    };
    let mut extra = Map::new();
    extra.insert("created".into(), json!(true));
    push_to(
        st,
        Entity::Order,
        actor,
        o,
        "id",
        Value::Null,
        json!(id),
        extra,
    );
}

/// An order was deleted.
pub(crate) fn order_deleted(st: &mut CrmState, before: &Value, actor: Actor) {
    let mut extra = Map::new();
    extra.insert("deleted".into(), json!(true));
    push_to(
        st,
        Entity::Order,
        actor,
        order_ref(before),
        "id",
        before["id"].clone(),
        Value::Null,
        extra,
    );
}

/// Records the difference between an order's read shape before and after an edit: the
/// fields the orders mirror follows (`status`, `manager`, `customer`) and the names.
pub(crate) fn order_edited(st: &mut CrmState, before: &Value, after: &Value, actor: Actor) {
    let reference = order_ref(after);
    let code = |o: &Value| match o["status"].as_str() {
        Some(c) => json!({"code": c}),
        None => Value::Null,
    };
    let customer = |o: &Value| match o["customer"]["id"].as_u64() {
        Some(c) => json!({"id": c}),
        None => Value::Null,
    };
    let changes = [
        ("status", code(before), code(after)),
        ("manager", manager_value(before), manager_value(after)),
        ("customer", customer(before), customer(after)),
        (
            "first_name",
            before["firstName"].clone(),
            after["firstName"].clone(),
        ),
        (
            "last_name",
            before["lastName"].clone(),
            after["lastName"].clone(),
        ),
    ];
    for (field, old, new) in changes {
        if old != new {
            push_to(
                st,
                Entity::Order,
                actor,
                reference.clone(),
                field,
                old,
                new,
                Map::new(),
            );
        }
    }
}

/// A customer was created (its whole read shape goes in the record).
pub(crate) fn created(st: &mut CrmState, id: u64, actor: Actor) {
    let Some(c) = st.customers.get(&id).cloned() else {
        return;
    };
    let mut extra = Map::new();
    extra.insert("created".into(), json!(true));
    push_with(st, actor, c, "id", Value::Null, json!(id), extra);
}

/// A customer was deleted, or merged into `combined_to`.
pub(crate) fn deleted(st: &mut CrmState, before: &Value, actor: Actor, combined_to: Option<u64>) {
    let mut extra = Map::new();
    extra.insert("deleted".into(), json!(true));
    if let Some(target) = combined_to.and_then(|t| st.customers.get(&t)) {
        extra.insert("combinedTo".into(), customer_ref(target));
    }
    push_with(
        st,
        actor,
        customer_ref(before),
        "id",
        before["id"].clone(),
        Value::Null,
        extra,
    );
}

fn manager_value(c: &Value) -> Value {
    match c["managerId"].as_u64() {
        Some(m) => json!({"id": m}),
        None => Value::Null,
    }
}

fn phone_numbers(c: &Value) -> Vec<String> {
    c["phones"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p["number"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Records the difference between a customer's read shape before and after an edit.
pub(crate) fn edited(st: &mut CrmState, before: &Value, after: &Value, actor: Actor) {
    let reference = customer_ref(after);
    for (key, field) in [
        ("firstName", "first_name"),
        ("lastName", "last_name"),
        ("email", "email"),
        ("externalId", "external_id"),
    ] {
        if before[key] != after[key] {
            push(
                st,
                actor,
                reference.clone(),
                field,
                before[key].clone(),
                after[key].clone(),
            );
        }
    }
    let (old_m, new_m) = (manager_value(before), manager_value(after));
    if old_m != new_m {
        push(st, actor, reference.clone(), "manager", old_m, new_m);
    }
    // Set difference of the stored numbers; a removed and an added number pair up as
    // "changed" records, the rest are plain additions or removals.
    let old: BTreeSet<String> = phone_numbers(before).into_iter().collect();
    let new: BTreeSet<String> = phone_numbers(after).into_iter().collect();
    let mut removed = old.difference(&new).cloned();
    let mut added = new.difference(&old).cloned();
    loop {
        match (removed.next(), added.next()) {
            (None, None) => break,
            (r, a) => {
                let value = |v: Option<String>| v.map_or(Value::Null, Value::String);
                push(st, actor, reference.clone(), "phones", value(r), value(a));
            }
        }
    }
}

/// `GET customers/history` or `GET orders/history`.
pub(crate) fn history(st: &CrmState, req: &ApiRequest, entity: Entity) -> Answer {
    let since = match req.query_one("filter[sinceId]") {
        None => None,
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| input_error("filter[sinceId]", NOT_VALID))?,
        ),
    };
    if since.is_some() && req.query_one("page").is_some() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "Errors in the input parameters",
            Some(
                json!({"page": "The page parameter cannot be used together with filter[sinceId]."}),
            ),
        ));
    }
    let start = match req.query_one("filter[startDate]") {
        None => None,
        Some(s) if parse_exact(s, "%Y-%m-%d %H:%M:%S", 19) => Some(s),
        Some(_) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "Errors in the input parameters",
                Some(json!({"children[startDate]": "This value is not valid."})),
            ));
        }
    };
    let (log, subject) = match entity {
        Entity::Customer => (&st.history, req.query_one("filter[customerId]")),
        Entity::Order => (&st.order_history, req.query_one("filter[orderId]")),
    };
    let (limit, page) = super::limit_and_page(req, DEFAULT_HISTORY_LIMIT, &HISTORY_LIMITS)?;
    let matching: Vec<&Value> = log
        .iter()
        .filter(|r| since.is_none_or(|s| r["id"].as_u64().is_some_and(|id| id > s)))
        .filter(|r| start.is_none_or(|s| r["createdAt"].as_str().is_some_and(|c| c >= s)))
        .filter(|r| subject.is_none_or(|c| id_eq(&r[entity.key()]["id"], c)))
        .collect();
    let total = matching.len();
    let history: Vec<Value> = matching
        .into_iter()
        .skip((page - 1) * limit)
        .take(limit)
        .cloned()
        .collect();
    ok(json!({
        "success": true,
        "generatedAt": now(),
        "history": history,
        "pagination": {
            "limit": limit,
            "totalCount": total,
            "currentPage": page,
            "totalPageCount": total.div_ceil(limit),
        },
    }))
}
