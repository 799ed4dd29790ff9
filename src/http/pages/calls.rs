//! The call log page (`/admin/`) and a call's own page (`/admin/ui/calls/{id}`).

use axum::{
    Extension,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use maud::{Markup, html};

use super::{
    PageError, charts,
    layout::{self, Section},
    session::Session,
    unexpected,
};
use crate::{
    domain::{
        call::CallOutcome,
        call_log::{CallLogEntry, CallLogFilter, TrailKind, TrailStep},
        manager::ManagerState,
    },
    http::{
        AppState,
        error::ApiError,
        routes::admin::{CallLogQuery, call_log_page, call_record},
    },
    latency_ring::minute_now,
    lookup::LookupRequest,
};

/// Rows of one page of the call log.
const PAGE_SIZE: usize = 50;

/// `/admin/ui/calls/{id}` with the id percent-encoded (call ids are outside data).
pub fn call_href(call_id: &str) -> String {
    let mut out = String::from("/admin/ui/calls/");
    for b in call_id.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn result_badge(result: &str) -> Markup {
    html! { span class={ "badge " (result) } { (result) } }
}

/// The caller as a list shows it: masked number, or the raw caller field.
fn masked_caller(e: &CallLogEntry) -> String {
    match (&e.client_phone, &e.client_raw) {
        (Some(p), _) => p.masked(),
        (None, Some(raw)) => raw.clone(),
        (None, None) => "—".to_owned(),
    }
}

fn manager_label(state: &AppState, id: Option<crate::domain::manager::ManagerId>) -> String {
    match id {
        None => "—".to_owned(),
        Some(id) => match state.directory.get(id).and_then(|m| m.destination()) {
            Some(dest) => format!("#{} ({dest})", id.0),
            None => format!("#{}", id.0),
        },
    }
}

fn filter_form(state: &AppState, q: &CallLogQuery) -> Markup {
    let text = |name: &str, label: &str, value: &str, placeholder: &str| {
        html! {
            label { (label) input type="text" name=(name) value=(value) placeholder=(placeholder); }
        }
    };
    html! {
        form.filters method="get" action="/admin/" {
            (text("site", "Site", &q.site, "shop-ua"))
            (text("external_number", "Tracking number", &q.external_number, "044 123 45 67"))
            label { "Order date" input type="date" name="order_date" value=(q.order_date); }
            label { "Manager"
                select name="manager_id" {
                    option value="" { "any" }
                    @for m in state.directory.all() {
                        @let id = m.id.0.to_string();
                        option value=(id) selected[q.manager_id == id] {
                            (manager_label(state, Some(m.id)))
                        }
                    }
                }
            }
            label { "Result"
                select name="result" {
                    option value="" { "any" }
                    @for o in CallOutcome::ALL {
                        option value=(o.as_str()) selected[q.result == o.as_str()] { (o.as_str()) }
                    }
                }
            }
            (text("caller", "Caller", &q.caller, "098 123 45 67"))
            label { "From" input type="datetime-local" name="from" value=(q.from); }
            label { "To" input type="datetime-local" name="to" value=(q.to); }
            button type="submit" { "Filter" }
            a href="/admin/" { "Reset" }
        }
    }
}

fn calls_table(state: &AppState, calls: &[&CallLogEntry]) -> Markup {
    html! {
        table {
            thead { tr {
                th { "Date" } th { "Caller" } th { "Direction" } th { "Site" }
                th { "Tracking number" } th { "Manager" } th { "Result" } th { "Order date" }
                th { "Note" }
            } }
            tbody {
                @for e in calls {
                    tr {
                        td { a href=(call_href(&e.call_id)) { (e.date.format("%Y-%m-%d %H:%M:%S")) } }
                        td { (masked_caller(e)) }
                        td { @if e.incoming { "in" } @else { "out" } }
                        td { (e.site.as_deref().unwrap_or("—")) }
                        td { (e.external_number.as_deref().unwrap_or("—")) }
                        td { (manager_label(state, e.manager_id)) }
                        td { (result_badge(&e.result)) }
                        td { (e.order_date.as_deref().unwrap_or("—")) }
                        td.muted { (e.note.as_deref().unwrap_or("")) }
                    }
                }
                @if calls.is_empty() {
                    tr { td colspan="9" .muted { "No calls match." } }
                }
            }
        }
    }
}

/// The charts: calls per hour by result over the day up to the newest logged call, and the
/// lookup's p50/p99 per minute over the last hour.
async fn calls_chart(state: &AppState) -> Result<Markup, PageError> {
    let newest = state
        .store
        .query_call_log(&CallLogFilter::default(), None, 1)
        .await
        .map_err(unexpected)?;
    let latency = html! {
        div.chart {
            h2 { "Lookup latency, last hour" }
            (charts::lookup_latency(&state.metrics.lookup_minutes.last_hour(minute_now())))
        }
    };
    let Some(end) = newest.first().map(|c| c.entry.date) else {
        return Ok(html! { div.charts { (latency) } });
    };
    let window = CallLogFilter {
        from: Some(end - chrono::Duration::hours(charts::HOURS as i64)),
        ..CallLogFilter::default()
    };
    let calls: Vec<CallLogEntry> = state
        .store
        .query_call_log(&window, None, charts::CHART_CALLS)
        .await
        .map_err(unexpected)?
        .into_iter()
        .map(|c| c.entry)
        .collect();
    let rows = charts::per_hour(&calls, end);
    Ok(html! {
        div.charts {
            div.chart {
                h2 { "Calls per hour by result" }
                (charts::calls_per_hour(&rows, end, calls.len()))
            }
            (latency)
        }
    })
}

/// `GET /admin/`: the call log, newest first, filtered, [`PAGE_SIZE`] rows a page.
pub async fn list(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Query(mut q): Query<CallLogQuery>,
) -> Result<Response, PageError> {
    q.limit = Some(PAGE_SIZE);
    let (status, body) = match q.read(&state.normalizer) {
        Err(ApiError::BadRequest { detail, .. }) => {
            (StatusCode::BAD_REQUEST, html! { p.error { (detail) } })
        }
        Err(e) => return Err(e.into()),
        Ok(request) => {
            let (calls, next) = call_log_page(&state, &request).await?;
            let entries: Vec<&CallLogEntry> = calls.iter().map(|c| &c.entry).collect();
            let next_href = next.map(|cursor| {
                let mut next_q = q.clone();
                next_q.cursor = cursor;
                next_q.limit = None;
                format!(
                    "/admin/?{}",
                    serde_urlencoded::to_string(&next_q).unwrap_or_default()
                )
            });
            let first_href = (!q.cursor.is_empty()).then(|| {
                let mut first_q = q.clone();
                first_q.cursor.clear();
                first_q.limit = None;
                format!(
                    "/admin/?{}",
                    serde_urlencoded::to_string(&first_q).unwrap_or_default()
                )
            });
            (
                StatusCode::OK,
                html! {
                    (calls_table(&state, &entries))
                    div.pager {
                        @if let Some(href) = first_href { a href=(href) { "« Newest" } }
                        @if let Some(href) = next_href { a href=(href) rel="next" { "Older »" } }
                    }
                },
            )
        }
    };
    let chart = calls_chart(&state).await?;
    let page = layout::page(
        "Calls",
        Section::Calls,
        &session,
        html! {
            h1 { "Calls" }
            (chart)
            (filter_form(&state, &q))
            (body)
        },
    );
    Ok((status, page).into_response())
}

/// A manager's status and presence as a page shows it.
fn state_label(state: &ManagerState) -> String {
    match state.online {
        Some(false) => format!("{} (offline)", state.status.as_str()),
        _ => state.status.as_str().to_owned(),
    }
}

fn trail_step(state: &AppState, step: &TrailStep) -> Markup {
    let at = layout::format_ms(step.at_ms);
    let id = |label: &str, v: Option<u64>| v.map(|v| format!("{label} {v}"));
    html! {
        li {
            span.muted { (at) } " "
            @match &step.kind {
                TrailKind::Lookup { rule, policy, owner_source, customer_id, owner, owner_state, last_talked, reason, manager_id, destination } => {
                    strong { "Lookup" } " answered " code { (reason) }
                    @if let Some(dest) = destination { " → " strong { (dest) } }
                    @if manager_id.is_some() { " (" (manager_label(state, *manager_id)) ")" }
                    ul.facts {
                        li { "Routing rule: " (rule.as_deref().unwrap_or("none matched")) }
                        li { "Policy: " (policy.as_deref().unwrap_or("—")) }
                        li {
                            "Owner: " (manager_label(state, *owner))
                            @if let Some(st) = owner_state { ", " (state_label(st)) " at that moment" }
                            @if let Some(c) = customer_id { span.muted { " · customer " (c) } }
                            @if let Some(src) = owner_source { span.muted { " · from the " (src) } }
                        }
                        @if last_talked.is_some() { li { "Last talked: " (manager_label(state, *last_talked)) } }
                    }
                }
                TrailKind::Plan { event, scenarios, actions, rule } => {
                    strong { "Plan" } " for the " code { (event) } " event: "
                    @if actions.is_empty() { "no CRM action" } @else { (actions.join(", ")) }
                    @if !scenarios.is_empty() { span.muted { " · scenarios " (scenarios.join(", ")) } }
                    @if let Some(rule) = rule { span.muted { " · rule " (rule) } }
                }
                TrailKind::Action { action, customer_id, order_id, task_id } => {
                    span.badge.ok { "done" } " " code { (action) }
                    @let ids: Vec<String> = [id("customer", *customer_id), id("order", *order_id), id("task", *task_id)].into_iter().flatten().collect();
                    @if !ids.is_empty() { " → CRM " (ids.join(", ")) }
                }
                TrailKind::Retry { attempt, error, delay_ms } => {
                    span.badge.retry { "retry" } " attempt " (attempt) " failed: " (error)
                    span.muted { " · next try in " (delay_ms) " ms" }
                }
                TrailKind::DeadLetter { reason } => {
                    span.badge.dead { "dead letter" } " " (reason) " "
                    a href="/admin/ui/dead-letters" { "replay or discard" }
                }
            }
        }
    }
}

/// `GET /admin/ui/calls/{id}`: everything callgate logged about one call, numbers whole,
/// its decision trail, and what a lookup for its caller would answer now.
pub async fn detail(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(call_id): Path<String>,
) -> Result<Markup, PageError> {
    let (entries, trail) = call_record(&state, &call_id).await?;
    let explanation = match entries.first().and_then(|e| e.client_phone.as_ref()) {
        Some(phone) => Some(
            state
                .lookup
                .explain(&LookupRequest {
                    caller: phone.e164().to_owned(),
                    dst: entries.first().and_then(|e| e.external_number.clone()),
                    site: entries.first().and_then(|e| e.site.clone()),
                    ..LookupRequest::default()
                })
                .await,
        ),
        None => None,
    };
    Ok(layout::page(
        &format!("Call {call_id}"),
        Section::Calls,
        &session,
        html! {
            h1 { "Call " code { (call_id) } }
            @for e in &entries {
                dl.facts {
                    dt { "Date" } dd { (e.date.format("%Y-%m-%d %H:%M:%S")) }
                    dt { "Caller" } dd {
                        @match (&e.client_phone, &e.client_raw) {
                            (Some(p), _) => { (p.e164()) }
                            (None, Some(raw)) => { (raw) }
                            (None, None) => { "—" }
                        }
                    }
                    dt { "Direction" } dd { @if e.incoming { "incoming" } @else { "outgoing" } }
                    dt { "Site" } dd { (e.site.as_deref().unwrap_or("—")) }
                    dt { "Tracking number" } dd { (e.external_number.as_deref().unwrap_or("—")) }
                    dt { "Manager" } dd { (manager_label(&state, e.manager_id)) }
                    dt { "Result" } dd {
                        (result_badge(&e.result))
                        @if let Some(raw) = &e.disposition_raw { " " span.muted { "(" (raw) ")" } }
                    }
                    dt { "Order date" } dd { (e.order_date.as_deref().unwrap_or("—")) }
                    dt { "Several customers" } dd { @if e.ambiguous_customer { "yes" } @else { "no" } }
                    dt { "Note" } dd { (e.note.as_deref().unwrap_or("—")) }
                }
            }
            h2 { "Decision trail" }
            @if trail.is_empty() {
                p.muted { "No steps recorded for this call." }
            } @else {
                ol.trail { @for step in &trail { (trail_step(&state, step)) } }
            }
            @if let Some(x) = &explanation {
                h2 { "A lookup for this caller now" }
                dl.facts {
                    dt { "Answer" } dd {
                        code { (x.reason) }
                        @if let Some(dest) = &x.destination { " → " strong { (dest) } }
                    }
                    dt { "Routing rule" } dd { (x.rule.as_deref().unwrap_or("none matched")) }
                    dt { "Policy" } dd { (x.policy.unwrap_or("—")) }
                    dt { "Owner" } dd {
                        (manager_label(&state, x.owner))
                        @if let Some(c) = x.customer_id { span.muted { " · customer " (c) } }
                        @if let Some(src) = x.owner_source { span.muted { " · from the " (src) } }
                    }
                    dt { "Owner's status" } dd {
                        @match &x.owner_state {
                            Some(st) => { (state_label(st)) }
                            None => { "—" }
                        }
                    }
                    dt { "Last talked" } dd { (manager_label(&state, x.last_talked)) }
                }
            }
        },
    ))
}
