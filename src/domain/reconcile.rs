//! Reconciliation (flow E), the pure part: which windows of the Ringostat call log to list,
//! how to split one whose answer hit the cap, and which listed calls become after-call
//! events (SPEC §6, PROTOCOLS §1.1 and §1.4). The I/O is in `crate::reconcile`.
//!
//! # Design
//! - **Windows** are in the project's local time, second resolution, both ends inclusive
//!   (as `calls/list` takes them). A run lists from the last reconciled point minus an
//!   overlap up to now, in windows of at most [`MAX_WINDOW`]; adjacent windows do not share
//!   a second. Overlap re-lists calls on purpose: the dedupe keys make it free.
//! - **The cap.** `calls/list` returns at most [`CALLS_PER_REQUEST_CAP`] calls and says
//!   nothing when it cut; an answer that long is taken as truncated and its window is split
//!   in two halves ([`Window::split`]) and listed again, down to one second.
//! - **A listed call becomes its after-call webhook.** Its export fields are renamed to the
//!   first configured alias of each logical field ([`to_webhook_fields`]), so the worker
//!   reads it with the same parser as a webhook, and it carries the moment `end`. Its
//!   dedupe key is the one that webhook would have had ([`CallEvent::dedupe_key`]).
//! - **"Already received"** is judged per call, not per leg: any after-call webhook of the
//!   call (moment `end` or `missed`, this leg, the leg without its staff id, or no leg) means
//!   it arrived ([`ListedCall::known_as`]). A webhook may have been configured without the
//!   employee fields or with `?event=missed`; a call counted twice is worse than a leg's
//!   details missing.
//! - **Calls still going on** (`IN PROGRESS`, `CALLING`, no disposition) are not enqueued;
//!   the next reconciled point stays at the earliest of them ([`next_point`]) so the next
//!   run lists it again once finished, but never more than [`MAX_HOLD`] back.

use std::time::Duration;

use chrono::NaiveDateTime;
use serde_json::{Map, Value};

use super::call::{CallEvent, EventMoment, FieldAliases, Normalize, PayloadError};

/// Most calls `calls/list` returns for one request (PROTOCOLS §1.4).
pub const CALLS_PER_REQUEST_CAP: usize = 6500;
/// Longest window of one request (the API's own default span is 24 h).
pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// How far back an unfinished call may hold the reconciled point.
pub const MAX_HOLD: Duration = Duration::from_secs(6 * 3600);
/// The moment a recovered call is queued as.
pub const RECOVERED_MOMENT: EventMoment = EventMoment::End;

/// Call-log export fields callgate asks `calls/list` for: each is read into the logical
/// field named beside it.
pub const REQUESTED_FIELDS: &[&str] = &[
    "uniqueid",
    "calldate",
    "caller",
    "dst",
    "call_type",
    "disposition",
    "duration",
    "billsec",
    "waittime",
    "recording",
    "recording_wav",
    "has_recording",
    "employee_number",
    "connected_with",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "client_id",
    "call_card",
];

/// The alias list of the logical field an export field is read into.
fn logical_field<'a>(aliases: &'a FieldAliases, export: &str) -> Option<&'a [String]> {
    let list = match export {
        "uniqueid" => &aliases.call_id,
        "calldate" => &aliases.date,
        "caller" => &aliases.caller,
        "dst" => &aliases.dst,
        "call_type" => &aliases.call_type,
        "disposition" => &aliases.disposition,
        "duration" => &aliases.duration,
        "billsec" => &aliases.billsec,
        "waittime" => &aliases.waittime,
        "recording" => &aliases.recording,
        "recording_wav" => &aliases.recording_wav,
        "has_recording" => &aliases.has_recording,
        "employee_number" => &aliases.staff_id,
        "connected_with" => &aliases.connected_with,
        "utm_source" => &aliases.utm_source,
        "utm_medium" => &aliases.utm_medium,
        "utm_campaign" => &aliases.utm_campaign,
        "utm_content" => &aliases.utm_content,
        "utm_term" => &aliases.utm_term,
        "client_id" => &aliases.ga_client_id,
        "call_card" => &aliases.call_card,
        _ => return None,
    };
    Some(list)
}

/// A span of the call log, both ends inclusive, project local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: NaiveDateTime,
    pub to: NaiveDateTime,
}

fn secs(d: Duration) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 1000))
}

impl Window {
    /// Two halves that together cover this window and share no second; `None` when the
    /// window is one second long and cannot be split.
    pub fn split(&self) -> Option<(Window, Window)> {
        let span = (self.to - self.from).num_seconds();
        if span < 1 {
            return None;
        }
        let mid = self.from + chrono::Duration::seconds(span / 2);
        Some((
            Window {
                from: self.from,
                to: mid,
            },
            Window {
                from: mid + chrono::Duration::seconds(1),
                to: self.to,
            },
        ))
    }
}

/// The windows of one run: from `point − overlap` to `now`, at most [`MAX_WINDOW`] each.
/// Empty when there is nothing to list yet.
pub fn windows(point: NaiveDateTime, now: NaiveDateTime, overlap: Duration) -> Vec<Window> {
    let mut from = point - secs(overlap);
    let mut out = Vec::new();
    while from <= now {
        let to = (from + secs(MAX_WINDOW)).min(now);
        out.push(Window { from, to });
        from = to + chrono::Duration::seconds(1);
    }
    out
}

/// An answer this long may have been cut at the cap: its window must be split.
pub fn is_full(calls: usize) -> bool {
    calls >= CALLS_PER_REQUEST_CAP
}

/// Where the next run starts (before its overlap), once `window` is fully listed:
/// the window's end, or the start of the earliest call still going on in it (not further
/// back than [`MAX_HOLD`]).
pub fn next_point(window: &Window, earliest_unfinished: Option<NaiveDateTime>) -> NaiveDateTime {
    match earliest_unfinished {
        Some(t) => t.min(window.to).max(window.to - secs(MAX_HOLD)),
        None => window.to,
    }
}

/// A finished call of the listing, as the after-call webhook it stands for.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedCall {
    pub call_id: String,
    /// The webhook fields (configured alias names) to queue.
    pub fields: Map<String, Value>,
    /// The dedupe key of its after-call webhook (without the store's namespace).
    pub dedupe_key: String,
    /// Every dedupe key under which an after-call webhook of this call may have arrived.
    pub known_as: Vec<String>,
}

/// What one `calls/list` answer holds.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Listing {
    pub finished: Vec<ListedCall>,
    /// Start of the earliest call still going on.
    pub earliest_unfinished: Option<NaiveDateTime>,
    /// Calls that could not be read (no id, a bad date, …), with why.
    pub unreadable: Vec<PayloadError>,
}

/// A `calls/list` row renamed to the webhook's field names. Empty values are left out;
/// `project_id` (not an export field) is added when given.
pub fn to_webhook_fields(
    row: &Map<String, Value>,
    aliases: &FieldAliases,
    project_id: Option<&str>,
) -> Map<String, Value> {
    let mut out = Map::new();
    for (export, value) in row {
        let empty = value.is_null() || value.as_str().is_some_and(|s| s.trim().is_empty());
        if empty {
            continue;
        }
        if let Some(name) = logical_field(aliases, export).and_then(<[String]>::first) {
            out.insert(name.clone(), value.clone());
        }
    }
    if let (Some(id), Some(name)) = (project_id, aliases.project_id.first()) {
        out.insert(name.clone(), Value::String(id.to_owned()));
    }
    out
}

/// Every after-call dedupe key this call's webhook may have had (see the module docs).
fn known_keys(event: &CallEvent) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for moment in [EventMoment::End, EventMoment::Missed] {
        let legs = [
            (event.staff_id, event.connected_with.clone()),
            (None, event.connected_with.clone()),
            (None, None),
        ];
        for (staff_id, connected_with) in legs {
            let mut variant = event.clone();
            variant.moment = moment;
            variant.staff_id = staff_id;
            variant.connected_with = connected_with;
            let key = variant.dedupe_key();
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    keys
}

/// Reads one `calls/list` answer: finished calls as after-call events, the earliest call
/// still going on, and the rows that are not calls.
pub fn read_listing(
    rows: &[Map<String, Value>],
    aliases: &FieldAliases,
    project_id: Option<&str>,
    normalize: Normalize<'_>,
) -> Listing {
    let mut listing = Listing::default();
    for row in rows {
        let fields = to_webhook_fields(row, aliases, project_id);
        let event =
            match CallEvent::parse(&fields, aliases, Some(RECOVERED_MOMENT.as_str()), normalize) {
                Ok(event) => event,
                Err(e) => {
                    listing.unreadable.push(e);
                    continue;
                }
            };
        let finished = event
            .disposition
            .as_ref()
            .is_some_and(|d| !d.is_in_flight());
        if !finished {
            if let Some(date) = event.date {
                listing.earliest_unfinished = Some(
                    listing
                        .earliest_unfinished
                        .map_or(date.local, |t| t.min(date.local)),
                );
            }
            continue;
        }
        listing.finished.push(ListedCall {
            call_id: event.call_id.clone(),
            dedupe_key: event.dedupe_key(),
            known_as: known_keys(&event),
            fields,
        });
    }
    listing
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::call::testing::ua;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn row(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test rows are objects"),
        }
    }

    #[test]
    fn windows_start_an_overlap_before_the_point_and_reach_now() {
        let w = windows(
            at("2026-01-01 10:00:00"),
            at("2026-01-01 10:05:00"),
            Duration::from_secs(600),
        );
        assert_eq!(
            w,
            vec![Window {
                from: at("2026-01-01 09:50:00"),
                to: at("2026-01-01 10:05:00")
            }]
        );
    }

    #[test]
    fn a_long_gap_is_cut_into_adjacent_day_windows() {
        let w = windows(
            at("2026-01-01 00:00:00"),
            at("2026-01-03 12:00:00"),
            Duration::ZERO,
        );
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].to, at("2026-01-02 00:00:00"));
        assert_eq!(w[1].from, at("2026-01-02 00:00:01"));
        assert_eq!(w[2].to, at("2026-01-03 12:00:00"));
    }

    #[test]
    fn nothing_to_list_when_the_point_is_ahead() {
        assert!(
            windows(
                at("2026-01-01 10:00:00"),
                at("2026-01-01 09:00:00"),
                Duration::from_secs(60)
            )
            .is_empty()
        );
    }

    #[test]
    fn split_halves_cover_the_window_without_sharing_a_second() {
        let w = Window {
            from: at("2026-01-01 10:00:00"),
            to: at("2026-01-01 10:00:09"),
        };
        let (a, b) = w.split().unwrap();
        assert_eq!((a.from, a.to), (w.from, at("2026-01-01 10:00:04")));
        assert_eq!((b.from, b.to), (at("2026-01-01 10:00:05"), w.to));
        let one = Window {
            from: w.from,
            to: w.from,
        };
        assert_eq!(one.split(), None);
        let two = Window {
            from: w.from,
            to: at("2026-01-01 10:00:01"),
        };
        let (a, b) = two.split().unwrap();
        assert_eq!(
            (a.from, a.to, b.from, b.to),
            (w.from, w.from, two.to, two.to)
        );
    }

    #[test]
    fn a_full_answer_is_taken_as_cut() {
        assert!(!is_full(CALLS_PER_REQUEST_CAP - 1));
        assert!(is_full(CALLS_PER_REQUEST_CAP));
    }

    #[test]
    fn an_unfinished_call_holds_the_point_but_not_forever() {
        let w = Window {
            from: at("2026-01-01 09:00:00"),
            to: at("2026-01-01 10:00:00"),
        };
        assert_eq!(next_point(&w, None), w.to);
        assert_eq!(
            next_point(&w, Some(at("2026-01-01 09:30:00"))),
            at("2026-01-01 09:30:00")
        );
        assert_eq!(
            next_point(&w, Some(at("2025-12-31 00:00:00"))),
            at("2026-01-01 04:00:00")
        );
    }

    #[test]
    fn a_listed_call_becomes_the_after_call_webhook_with_its_dedupe_key() {
        let aliases = FieldAliases::default();
        let listing = read_listing(
            &[row(json!({
                "uniqueid": "ua1_-1.2", "calldate": "2026-01-01T10:00:00+0200",
                "caller": "380981234567", "dst": "380441112233", "call_type": "in",
                "disposition": "ANSWERED", "billsec": 30, "waittime": "5",
                "employee_number": "1027", "connected_with": "shop_alina", "utm_source": ""
            }))],
            &aliases,
            Some("12345"),
            &ua,
        );
        assert!(listing.unreadable.is_empty());
        let call = &listing.finished[0];
        assert_eq!(call.dedupe_key, "ua1_-1.2|end|staff1027");
        assert_eq!(call.fields["uniqueid"], "ua1_-1.2");
        assert_eq!(call.fields["employee_number"], "1027");
        assert_eq!(call.fields["project_id"], "12345");
        assert!(
            !call.fields.contains_key("utm_source"),
            "empty values left out"
        );
        for k in [
            "ua1_-1.2|end|staff1027",
            "ua1_-1.2|end|shop_alina",
            "ua1_-1.2|end|-",
            "ua1_-1.2|missed|staff1027",
            "ua1_-1.2|missed|-",
        ] {
            assert!(call.known_as.iter().any(|x| x == k), "{k}");
        }
        // The webhook the worker would have got parses to the same key.
        let webhook = CallEvent::parse(&call.fields, &aliases, None, &ua).unwrap();
        assert_eq!(webhook.dedupe_key(), call.dedupe_key);
    }

    #[test]
    fn configured_field_names_are_what_the_queued_fields_use() {
        let aliases: FieldAliases =
            toml::from_str("call_id = [\"id\"]\ncaller = [\"phone\"]").unwrap();
        let listing = read_listing(
            &[row(
                json!({"uniqueid": "7", "caller": "0981234567", "disposition": "NO ANSWER"}),
            )],
            &aliases,
            None,
            &ua,
        );
        let call = &listing.finished[0];
        assert_eq!(call.fields["id"], "7");
        assert_eq!(call.fields["phone"], "0981234567");
        assert_eq!(call.dedupe_key, "7|end|-");
    }

    #[test]
    fn calls_still_going_on_are_held_and_bad_rows_reported() {
        let listing = read_listing(
            &[
                row(
                    json!({"uniqueid": "1", "calldate": "2026-01-01 10:05:00", "disposition": "IN PROGRESS"}),
                ),
                row(
                    json!({"uniqueid": "2", "calldate": "2026-01-01 10:01:00", "disposition": "calling"}),
                ),
                row(json!({"uniqueid": "3", "calldate": "2026-01-01 10:02:00"})),
                row(json!({"calldate": "2026-01-01 10:03:00", "disposition": "ANSWERED"})),
                row(json!({"uniqueid": "5", "calldate": "yesterday", "disposition": "ANSWERED"})),
                row(
                    json!({"uniqueid": "6", "calldate": "2026-01-01 10:04:00", "disposition": "BUSY"}),
                ),
            ],
            &FieldAliases::default(),
            None,
            &ua,
        );
        assert_eq!(listing.earliest_unfinished, Some(at("2026-01-01 10:01:00")));
        assert_eq!(listing.unreadable.len(), 2);
        let ids: Vec<&str> = listing
            .finished
            .iter()
            .map(|c| c.call_id.as_str())
            .collect();
        assert_eq!(ids, ["6"]);
    }
}
