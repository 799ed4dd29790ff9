//! Ringostat call events (SPEC §4, PROTOCOLS §1.2–1.3): from a webhook payload to a typed
//! [`CallEvent`].
//!
//! # Design
//! - **One input shape.** The HTTP layer turns a query string, a form body or a JSON body
//!   into one `serde_json::Map`; [`CallEvent::parse`] only ever sees that map.
//! - **Flattening.** Fields may sit at the root or under `additional_call_data` (an object,
//!   a JSON string holding an object, or form keys `additional_call_data[dst]`). All of them
//!   are merged into one flat map; **a root field wins** over a nested field of the same
//!   name, because the root is what the user configured explicitly.
//! - **Aliases.** Field names are chosen per webhook in Ringostat's UI, so every logical
//!   field is read through an ordered list of accepted names ([`FieldAliases`], config
//!   `[ringostat.fields]`). The first name present with a non-empty value wins. Fields named
//!   by no list are kept in [`CallEvent::extra`], never refused.
//! - **Values.** Strings and numbers are accepted for every scalar (`"billsec": 11`,
//!   `"waittime": "12"`); `null` and `""` count as absent. A value that is present but
//!   cannot mean what its field means is a [`PayloadError`] naming the payload key.
//! - **Phone numbers** are normalized by a function the caller passes in
//!   ([`Normalize`]): the domain does not pick the region, and tests need no real
//!   normalizer. A caller that is not a number is kept as `Err` beside its raw text; it is
//!   never an error of the payload (the call is still logged, SPEC §2).
//! - **Dates** keep the wall-clock time as sent (Ringostat sends the project's local time)
//!   plus the UTC offset when the payload carried one ([`CallDate`]). callgate does not
//!   convert: a shop's Ringostat project and its CRM run in the same local time, and the
//!   offset stays available to whoever needs an instant.
//!
//! # Invariants
//! - A parsed event always has a non-empty call id.
//! - `duration == waittime + billsec` whenever `duration` was absent and both parts were
//!   present.
//! - `recording` is `Some` only when the recording flag said so (or, with no flag at all,
//!   when a URL was sent) *and* a URL is known.

use std::{collections::BTreeMap, fmt};

use chrono::{DateTime, FixedOffset, NaiveDateTime};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use super::call_type::{CallType, Direction};
use super::crm_model::{CallResult, UtmSource};
use super::phone_number::{PhoneNumber, PhoneNumberError};

/// Turns free-form text into a canonical number. The worker passes the configured
/// normalizer, e.g. `&|s| normalizer.parse(s).map(|p| p.number)`.
pub type Normalize<'a> = &'a dyn Fn(&str) -> Result<PhoneNumber, PhoneNumberError>;

/// The key under which some payloads nest their fields (PROTOCOLS §1.2).
pub const NESTED_KEY: &str = "additional_call_data";

/// A payload that cannot be a call event. `field` is the payload key at fault (or the
/// logical field name when it is missing altogether); both go into the 400 answer and the
/// quarantine record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{field}: {problem}")]
pub struct PayloadError {
    pub field: String,
    pub problem: String,
}

impl PayloadError {
    fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        PayloadError {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

// === FieldAliases ===

/// `[ringostat.fields]`: for each logical field, the payload names accepted for it, in
/// order of preference. The defaults accept the call-log export names, the Webhooks 2.0
/// names and cheap renamings seen in integrations (PROTOCOLS §1.2). A config list replaces
/// the default list of that field only; an unknown key is refused, so a typo in
/// `[ringostat.fields]` fails at start-up instead of silently never matching.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FieldAliases {
    /// Ringostat call id (required).
    pub call_id: Vec<String>,
    /// Call start.
    pub date: Vec<String>,
    /// The A party: the client for incoming calls, the employee's SIP for outgoing ones.
    pub caller: Vec<String>,
    /// The B party: the tracking number for incoming calls, the client for outgoing ones.
    pub dst: Vec<String>,
    pub call_type: Vec<String>,
    pub disposition: Vec<String>,
    /// Total duration including ringing, seconds.
    pub duration: Vec<String>,
    /// Talk time, seconds.
    pub billsec: Vec<String>,
    /// Wait (ringing) time, seconds.
    pub waittime: Vec<String>,
    /// Recording URL (usually `.ogg`).
    pub recording: Vec<String>,
    /// Recording URL of the `.wav` twin.
    pub recording_wav: Vec<String>,
    /// 0/1 flag: whether there is a recording.
    pub has_recording: Vec<String>,
    /// Ringostat staff id of the employee on this leg (`-1` = nobody).
    pub staff_id: Vec<String>,
    /// Who the call was connected with: a SIP login, a number or empty.
    pub connected_with: Vec<String>,
    pub utm_source: Vec<String>,
    pub utm_medium: Vec<String>,
    pub utm_campaign: Vec<String>,
    pub utm_content: Vec<String>,
    pub utm_term: Vec<String>,
    /// Google Analytics client id.
    pub ga_client_id: Vec<String>,
    /// Ringostat project id.
    pub project_id: Vec<String>,
    /// Link to the call card in Ringostat.
    pub call_card: Vec<String>,
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

impl Default for FieldAliases {
    fn default() -> Self {
        FieldAliases {
            call_id: names(&["uniqueid", "call_id"]),
            date: names(&["calldate", "call_date"]),
            // `caller_number` is the pure number; `caller` may hold a label or SIP caller.
            caller: names(&[
                "caller_number",
                "number_e164",
                "callers_number",
                "caller",
                "userfield",
                "phone",
                "caller_id",
            ]),
            dst: names(&["dst", "destination", "call_destination", "called_id"]),
            call_type: names(&["call_type", "type"]),
            disposition: names(&["disposition", "status", "call_status"]),
            duration: names(&["duration", "duration_call"]),
            billsec: names(&["billsec", "duration_conversation"]),
            waittime: names(&["waittime", "duration_waiting"]),
            recording: names(&["recording", "call_recording", "record_url"]),
            recording_wav: names(&["recording_wav"]),
            has_recording: names(&["has_recording", "recording_presence"]),
            staff_id: names(&["employee_number", "employee_id"]),
            connected_with: names(&["connected_with"]),
            utm_source: names(&["utm_source"]),
            utm_medium: names(&["utm_medium"]),
            utm_campaign: names(&["utm_campaign"]),
            utm_content: names(&["utm_content"]),
            utm_term: names(&["utm_term"]),
            ga_client_id: names(&["client_id", "ga_client_id", "ga"]),
            project_id: names(&["project_id"]),
            call_card: names(&["call_card", "call_card_link"]),
        }
    }
}

impl FieldAliases {
    fn all_lists(&self) -> [&[String]; 22] {
        [
            &self.call_id,
            &self.date,
            &self.caller,
            &self.dst,
            &self.call_type,
            &self.disposition,
            &self.duration,
            &self.billsec,
            &self.waittime,
            &self.recording,
            &self.recording_wav,
            &self.has_recording,
            &self.staff_id,
            &self.connected_with,
            &self.utm_source,
            &self.utm_medium,
            &self.utm_campaign,
            &self.utm_content,
            &self.utm_term,
            &self.ga_client_id,
            &self.project_id,
            &self.call_card,
        ]
    }

    /// Whether `key` is named by any list (so it is not an `extra` field).
    fn knows(&self, key: &str) -> bool {
        self.all_lists()
            .iter()
            .any(|list| list.iter().any(|n| n == key))
    }
}

// === Flattening and scalar reading ===

/// Merges `additional_call_data` into the root; root fields win.
fn flatten(map: &Map<String, Value>) -> Map<String, Value> {
    let mut flat = Map::new();
    let nested = match map.get(NESTED_KEY) {
        Some(Value::Object(o)) => Some(o.clone()),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(o)) => Some(o),
            _ => None,
        },
        _ => None,
    };
    if let Some(nested) = nested {
        flat.extend(nested);
    }
    // Form bodies may carry `additional_call_data[dst]=…`.
    let prefix = format!("{NESTED_KEY}[");
    for (k, v) in map {
        if let Some(inner) = k.strip_prefix(&prefix).and_then(|r| r.strip_suffix(']')) {
            flat.insert(inner.to_owned(), v.clone());
        }
    }
    for (k, v) in map {
        if k != NESTED_KEY && !k.starts_with(&prefix) {
            flat.insert(k.clone(), v.clone());
        }
    }
    flat
}

/// A field found in the payload: the key it was found under and its text.
struct Found {
    key: String,
    text: String,
}

/// The first alias present with a non-empty scalar value.
fn find(flat: &Map<String, Value>, aliases: &[String]) -> Result<Option<Found>, PayloadError> {
    for name in aliases {
        let text = match flat.get(name) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) => s.trim().to_owned(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => b.to_string(),
            Some(Value::Array(_) | Value::Object(_)) => {
                return Err(PayloadError::new(
                    name.as_str(),
                    "expected a string or a number, got a list or an object",
                ));
            }
        };
        if text.is_empty() {
            continue;
        }
        return Ok(Some(Found {
            key: name.clone(),
            text,
        }));
    }
    Ok(None)
}

fn find_text(
    flat: &Map<String, Value>,
    aliases: &[String],
) -> Result<Option<String>, PayloadError> {
    Ok(find(flat, aliases)?.map(|f| f.text))
}

/// Seconds: `11`, `"12"`, `"12.0"`.
fn find_seconds(
    flat: &Map<String, Value>,
    aliases: &[String],
) -> Result<Option<u32>, PayloadError> {
    let Some(f) = find(flat, aliases)? else {
        return Ok(None);
    };
    if let Ok(n) = f.text.parse::<u32>() {
        return Ok(Some(n));
    }
    match f.text.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 && x <= f64::from(u32::MAX) => {
            // Rounded on purpose: the CRM takes whole seconds.
            Ok(Some(x.round() as u32))
        }
        _ => Err(PayloadError::new(
            f.key,
            format!("expected a number of seconds, got {:?}", f.text),
        )),
    }
}

fn find_flag(flat: &Map<String, Value>, aliases: &[String]) -> Result<Option<bool>, PayloadError> {
    let Some(f) = find(flat, aliases)? else {
        return Ok(None);
    };
    match f.text.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" => Ok(Some(true)),
        "0" | "false" | "no" => Ok(Some(false)),
        _ => Err(PayloadError::new(
            f.key,
            format!("expected a 0/1 flag, got {:?}", f.text),
        )),
    }
}

/// UTM gaps Ringostat fills in for "no value".
const UTM_GAPS: [&str; 3] = ["(direct)", "(none)", "(not set)"];

fn find_utm(flat: &Map<String, Value>, aliases: &[String]) -> Result<Option<String>, PayloadError> {
    Ok(find_text(flat, aliases)?.filter(|v| !UTM_GAPS.contains(&v.to_ascii_lowercase().as_str())))
}

// === Dates ===

/// When a call started: the wall-clock time as sent (the shop's local time) and the UTC
/// offset when the payload gave one (`2019-06-02T09:13:43+0300`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallDate {
    pub local: NaiveDateTime,
    pub offset: Option<FixedOffset>,
}

impl CallDate {
    /// Accepts `2024-07-31 14:59:35`, `2024-07-31T14:59:35`, optional fractional seconds,
    /// and an optional offset `+0300`, `+03:00` or `Z`.
    pub fn parse(s: &str) -> Option<CallDate> {
        let s = s.trim();
        // One shape for the date/time separator, so each format is written once.
        let t = match s.as_bytes().get(10) {
            Some(b' ') => format!("{}T{}", &s[..10], &s[11..]),
            _ => s.to_owned(),
        };
        for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%.f%:z"] {
            if let Ok(dt) = DateTime::parse_from_str(&t, fmt) {
                return Some(CallDate {
                    local: dt.naive_local(),
                    offset: Some(*dt.offset()),
                });
            }
        }
        if let Ok(dt) = DateTime::parse_from_rfc3339(&t) {
            return Some(CallDate {
                local: dt.naive_local(),
                offset: Some(*dt.offset()),
            });
        }
        NaiveDateTime::parse_from_str(&t, "%Y-%m-%dT%H:%M:%S%.f")
            .ok()
            .map(|local| CallDate {
                local,
                offset: None,
            })
    }
}

// === Dispositions ===

/// A Ringostat call status, normalized (PROTOCOLS §1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DispositionKind {
    Answered,
    /// A target call (answered).
    Proper,
    /// A repeat call (answered).
    Repeated,
    NoAnswer,
    Busy,
    Voicemail,
    NoExtension,
    WrongExtension,
    ClientNoAnswer,
    Decline,
    Failed,
    NoForward,
    ForbiddenDestination,
    /// Anything else (`IN PROGRESS`, `CALLING`, new vendor values); the raw text is kept.
    Unknown,
}

/// The coarse outcome the planner works with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    Answered,
    Missed,
    /// The PBX could not put the call through (forwarding misconfigured, forbidden).
    Failed,
    Unknown,
}

impl CallOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Answered => "answered",
            CallOutcome::Missed => "missed",
            CallOutcome::Failed => "failed",
            CallOutcome::Unknown => "unknown",
        }
    }
}

/// A disposition as received and as understood.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disposition {
    pub kind: DispositionKind,
    /// Exactly as Ringostat sent it.
    pub raw: String,
}

/// Upper case, `_`, `-` and `+` as spaces, runs of spaces collapsed: `no-answer`,
/// `NO_ANSWER` and `No  Answer` are one value.
fn normalize_token(raw: &str) -> String {
    raw.to_ascii_uppercase()
        .replace(['_', '-', '+'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

impl Disposition {
    pub fn parse(raw: &str) -> Disposition {
        use DispositionKind::*;
        let kind = match normalize_token(raw).as_str() {
            "ANSWERED" => Answered,
            "PROPER" => Proper,
            "REPEATED" => Repeated,
            "NO ANSWER" | "NOANSWER" => NoAnswer,
            "BUSY" => Busy,
            "VOICEMAIL" | "VOICE MAIL" => Voicemail,
            "NO EXTENSION" => NoExtension,
            "WRONG EXTENSION" => WrongExtension,
            "CLIENT NO ANSWER" => ClientNoAnswer,
            "DECLINE" => Decline,
            "FAILED" => Failed,
            "NO FORWARD" => NoForward,
            "FORBIDDEN DESTINATION" | "FAILED FORBIDDEN DESTINATION" => ForbiddenDestination,
            _ => Unknown,
        };
        Disposition {
            kind,
            raw: raw.to_owned(),
        }
    }

    pub fn outcome(&self) -> CallOutcome {
        use DispositionKind::*;
        match self.kind {
            Answered | Proper | Repeated => CallOutcome::Answered,
            NoAnswer | Busy | Voicemail | NoExtension | WrongExtension | ClientNoAnswer
            | Decline => CallOutcome::Missed,
            Failed | NoForward | ForbiddenDestination => CallOutcome::Failed,
            Unknown => CallOutcome::Unknown,
        }
    }

    /// The `telephony/calls/upload` result.
    pub fn call_result(&self) -> CallResult {
        use DispositionKind::*;
        match self.kind {
            Answered | Proper | Repeated => CallResult::Answered,
            Busy => CallResult::Busy,
            NoAnswer | Voicemail | NoExtension | WrongExtension | ClientNoAnswer | Decline => {
                CallResult::NoAnswer
            }
            ForbiddenDestination => CallResult::NotAllowed,
            Failed | NoForward => CallResult::Failed,
            Unknown => CallResult::Unknown,
        }
    }
}

// === Event moments ===

/// When in the call's life the webhook fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventMoment {
    /// Before the call rings.
    Start,
    /// A manager picked up (no status or durations yet).
    Answer,
    /// After the call.
    End,
    /// After a missed call (an after-call event configured for missed calls only).
    Missed,
}

impl EventMoment {
    pub fn as_str(self) -> &'static str {
        match self {
            EventMoment::Start => "start",
            EventMoment::Answer => "answer",
            EventMoment::End => "end",
            EventMoment::Missed => "missed",
        }
    }

    /// Accepts the names of SPEC §4 and the ones integrators use (PROTOCOLS §1.2).
    pub fn parse(hint: &str) -> Option<EventMoment> {
        match hint.trim().to_ascii_lowercase().as_str() {
            "start" | "call_start" | "before_call" | "before_out_call" => Some(EventMoment::Start),
            "answer" | "call_answer" | "taking_call" | "pickup" => Some(EventMoment::Answer),
            "end" | "call_end" | "after_call" | "after_out_call" => Some(EventMoment::End),
            "missed" | "call_missed" => Some(EventMoment::Missed),
            _ => None,
        }
    }

    /// An after-call event: the call is over and everything about it is known.
    pub fn is_finished(self) -> bool {
        matches!(self, EventMoment::End | EventMoment::Missed)
    }
}

impl fmt::Display for EventMoment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === The event ===

/// A recording of the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recording {
    /// The main URL (`.ogg` usually; the `.wav` one when that is all there is).
    pub url: String,
    /// The `.wav` twin, when sent.
    pub wav_url: Option<String>,
}

/// One Ringostat webhook delivery, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct CallEvent {
    /// Ringostat call id; not always digits (`ua1_-1718037213.2974122`).
    pub call_id: String,
    pub moment: EventMoment,
    pub call_type: CallType,
    /// The call type exactly as sent (`None` when absent: then incoming is assumed).
    pub call_type_raw: Option<String>,
    pub date: Option<CallDate>,
    /// The A party as sent.
    pub caller_raw: Option<String>,
    /// The B party as sent.
    pub dst_raw: Option<String>,
    /// The client's side as sent (`caller` for incoming calls, `dst` for outgoing ones).
    pub client_raw: Option<String>,
    /// The client's number, or why it is not one (SIP login, `anonymous`, empty).
    pub client: Result<PhoneNumber, PhoneNumberError>,
    /// The shop's line the client dialled (incoming calls only), when it is a number.
    pub tracking_number: Option<PhoneNumber>,
    pub disposition: Option<Disposition>,
    pub billsec: Option<u32>,
    pub waittime: Option<u32>,
    /// Total, including ringing; `waittime + billsec` when not sent.
    pub duration: Option<u32>,
    pub recording: Option<Recording>,
    /// Ringostat staff id of the employee on this leg; `None` for `-1` (nobody).
    pub staff_id: Option<i64>,
    /// SIP login or number the call was connected with.
    pub connected_with: Option<String>,
    /// `connected_with` when it is a phone number.
    pub connected_with_number: Option<PhoneNumber>,
    /// UTM tags, `(direct)`/`(none)`/`(not set)` removed.
    pub utm: UtmSource,
    /// Google Analytics client id, bare.
    pub ga_client_id: Option<String>,
    pub project_id: Option<String>,
    pub call_card: Option<String>,
    /// Fields no alias list names, kept as sent.
    pub extra: BTreeMap<String, Value>,
}

/// Takes `x` out of `"label" <x>`, so a SIP caller with a display name is judged by its
/// address.
pub fn strip_label(raw: &str) -> &str {
    match (raw.rfind('<'), raw.rfind('>')) {
        (Some(open), Some(close)) if open < close => raw[open + 1..close].trim(),
        _ => raw,
    }
}

impl CallEvent {
    /// Parses one payload. `moment_hint` is the `?event=` of the webhook URL; without it the
    /// moment is inferred: a disposition or a duration (total or talk) means an after-call event, a staff
    /// id or `connected_with` without them the pick-up, nothing of these the start.
    pub fn parse(
        map: &Map<String, Value>,
        aliases: &FieldAliases,
        moment_hint: Option<&str>,
        normalize: Normalize<'_>,
    ) -> Result<CallEvent, PayloadError> {
        let flat = flatten(map);
        let a = aliases;

        let call_id = find_text(&flat, &a.call_id)?.ok_or_else(|| {
            PayloadError::new(
                "call_id",
                format!("missing: expected one of {}", a.call_id.join(", ")),
            )
        })?;

        let date = match find(&flat, &a.date)? {
            None => None,
            Some(f) => Some(CallDate::parse(&f.text).ok_or_else(|| {
                PayloadError::new(
                    f.key,
                    format!(
                        "expected a date like 2024-07-31 14:59:35 or 2019-06-02T09:13:43+0300, got {:?}",
                        f.text
                    ),
                )
            })?),
        };

        let (call_type, call_type_raw) = match find(&flat, &a.call_type)? {
            None => (CallType::In, None),
            Some(f) => match CallType::parse(&f.text) {
                Some(t) => (t, Some(f.text)),
                None => {
                    return Err(PayloadError::new(
                        f.key,
                        format!(
                            "unknown call type {:?}: expected {}",
                            f.text,
                            CallType::EXPECTED
                        ),
                    ));
                }
            },
        };

        let disposition = find_text(&flat, &a.disposition)?.map(|d| Disposition::parse(&d));
        let billsec = find_seconds(&flat, &a.billsec)?;
        let waittime = find_seconds(&flat, &a.waittime)?;
        let duration = match find_seconds(&flat, &a.duration)? {
            Some(d) => Some(d),
            None => match (waittime, billsec) {
                (Some(w), Some(b)) => Some(w.saturating_add(b)),
                _ => None,
            },
        };

        let recording_url = find_text(&flat, &a.recording)?;
        let wav_url = find_text(&flat, &a.recording_wav)?;
        let has_recording = find_flag(&flat, &a.has_recording)?
            .unwrap_or(recording_url.is_some() || wav_url.is_some());
        let recording = match (has_recording, recording_url, wav_url) {
            (false, _, _) | (true, None, None) => None,
            (true, Some(url), wav_url) => Some(Recording { url, wav_url }),
            (true, None, Some(wav)) => Some(Recording {
                url: wav.clone(),
                wav_url: Some(wav),
            }),
        };

        let staff_id = match find(&flat, &a.staff_id)? {
            None => None,
            Some(f) => match f.text.parse::<i64>() {
                Ok(-1) => None,
                Ok(id) => Some(id),
                Err(_) => {
                    return Err(PayloadError::new(
                        f.key,
                        format!(
                            "expected a staff id (a whole number, -1 for nobody), got {:?}",
                            f.text
                        ),
                    ));
                }
            },
        };
        let connected_with = find_text(&flat, &a.connected_with)?;
        let connected_with_number = connected_with.as_deref().and_then(|c| normalize(c).ok());

        let moment = match moment_hint.map(str::trim).filter(|h| !h.is_empty()) {
            Some(hint) => EventMoment::parse(hint).ok_or_else(|| {
                PayloadError::new(
                    "event",
                    format!("unknown event moment {hint:?}: expected start, answer, end or missed"),
                )
            })?,
            None if disposition.is_some() || duration.is_some() || billsec.is_some() => {
                EventMoment::End
            }
            None if staff_id.is_some() || connected_with.is_some() => EventMoment::Answer,
            None => EventMoment::Start,
        };

        let caller_raw = find_text(&flat, &a.caller)?;
        let dst_raw = find_text(&flat, &a.dst)?;
        let (client_raw, line_raw) = match call_type.direction() {
            Direction::Incoming => (caller_raw.clone(), dst_raw.clone()),
            Direction::Outgoing => (dst_raw.clone(), None),
        };
        let client = match client_raw.as_deref() {
            None => Err(PhoneNumberError::Empty),
            Some(raw) => normalize(strip_label(raw)),
        };
        let tracking_number = line_raw.as_deref().and_then(|l| normalize(l).ok());

        let utm = UtmSource {
            source: find_utm(&flat, &a.utm_source)?,
            medium: find_utm(&flat, &a.utm_medium)?,
            campaign: find_utm(&flat, &a.utm_campaign)?,
            keyword: find_utm(&flat, &a.utm_term)?,
            content: find_utm(&flat, &a.utm_content)?,
        };

        let extra = flat
            .iter()
            .filter(|(k, _)| !a.knows(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();

        Ok(CallEvent {
            call_id,
            moment,
            call_type,
            call_type_raw,
            date,
            caller_raw,
            dst_raw,
            client_raw,
            client,
            tracking_number,
            disposition,
            billsec,
            waittime,
            duration,
            recording,
            staff_id,
            connected_with,
            connected_with_number,
            utm,
            ga_client_id: find_text(&flat, &a.ga_client_id)?,
            project_id: find_text(&flat, &a.project_id)?,
            call_card: find_text(&flat, &a.call_card)?,
            extra,
        })
    }

    pub fn direction(&self) -> Direction {
        self.call_type.direction()
    }

    pub fn is_incoming(&self) -> bool {
        self.direction() == Direction::Incoming
    }

    /// The coarse outcome: from the disposition; a `?event=missed` event without one is
    /// missed; otherwise unknown.
    pub fn outcome(&self) -> CallOutcome {
        match (&self.disposition, self.moment) {
            (Some(d), _) => d.outcome(),
            (None, EventMoment::Missed) => CallOutcome::Missed,
            (None, _) => CallOutcome::Unknown,
        }
    }

    /// The `telephony/calls/upload` result.
    pub fn call_result(&self) -> CallResult {
        match (&self.disposition, self.moment) {
            (Some(d), _) => d.call_result(),
            (None, EventMoment::Missed) => CallResult::NoAnswer,
            (None, _) => CallResult::Unknown,
        }
    }

    /// Who is on the shop's side of this leg: the staff id, else `connected_with`
    /// (lower-cased). `None` when nobody answered.
    pub fn leg(&self) -> Option<String> {
        match (self.staff_id, &self.connected_with) {
            (Some(id), _) => Some(format!("staff{id}")),
            (None, Some(c)) => Some(c.to_lowercase()),
            (None, None) => None,
        }
    }

    /// Identity of this delivery for deduplication: `call id | moment | leg`.
    ///
    /// A redelivery of the same event yields the same key. The legs of a ring group or a
    /// transfer share the call id and the moment but not the employee, so each leg is its
    /// own event. Legs nobody answered (`employee_number = -1`, no `connected_with`) share
    /// the leg `-`: a second unanswered leg of one call adds nothing and is dropped as a
    /// duplicate, which is what S14 wants (one call-back per call, never one per leg).
    pub fn dedupe_key(&self) -> String {
        format!(
            "{}|{}|{}",
            self.call_id,
            self.moment,
            self.leg().unwrap_or_else(|| "-".to_owned())
        )
    }
}

/// Test helpers shared with the planner's tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// The real normalizer with the UA default region.
    pub fn ua(s: &str) -> Result<PhoneNumber, PhoneNumberError> {
        use std::sync::LazyLock;
        static UA: LazyLock<crate::domain::phone_number::PhoneNormalizer> = LazyLock::new(|| {
            crate::domain::phone_number::PhoneNormalizer::new("UA").expect("UA is a region")
        });
        UA.parse(s).map(|p| p.number)
    }

    /// Parses a JSON object payload with the default aliases.
    pub fn event(v: Value, hint: Option<&str>) -> CallEvent {
        let Value::Object(map) = v else {
            unreachable!("test payloads are objects")
        };
        CallEvent::parse(&map, &FieldAliases::default(), hint, &ua).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use serde_json::json;

    use super::*;

    use super::testing::ua;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test payloads are objects"),
        }
    }

    fn parse(v: Value, hint: Option<&str>) -> Result<CallEvent, PayloadError> {
        CallEvent::parse(&obj(v), &FieldAliases::default(), hint, &ua)
    }

    fn num(s: &str) -> PhoneNumber {
        PhoneNumber::from_e164(s).unwrap()
    }

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_opt(h, mi, s)
            .unwrap()
    }

    /// Ringostat's call-log naming with mixed value types, as in its export and webhooks.
    fn call_log_sample() -> Value {
        json!({
            "uniqueid": "ua1_-1718037213.2974122",
            "calldate": "2024-07-31 14:59:35",
            "caller": "380981234567",
            "dst": "380441112233",
            "call_type": "in",
            "disposition": "ANSWERED",
            "billsec": 11,
            "waittime": "12",
            "recording": "https://app.ringostat.com/recordings/ua1_1718037213.ogg?token=x",
            "recording_wav": "https://app.ringostat.com/recordings/ua1_1718037213.wav?token=x",
            "has_recording": "1",
            "employee_number": 4711,
            "connected_with": "shop_tatiana",
            "utm_source": "google",
            "utm_medium": "cpc",
            "utm_campaign": "(not set)",
            "utm_content": "(none)",
            "utm_term": "купить чайник",
            "client_id": "1169999034.1555555510",
            "landing": "https://shop.example/teapots",
            "proper_flag": "0"
        })
    }

    #[test]
    fn tatianas_call_in_call_log_naming_parses_with_mixed_types() {
        let e = parse(call_log_sample(), None).unwrap();
        assert_eq!(e.call_id, "ua1_-1718037213.2974122");
        assert_eq!(e.moment, EventMoment::End);
        assert_eq!(e.call_type, CallType::In);
        assert_eq!(e.direction(), Direction::Incoming);
        assert_eq!(
            e.date,
            Some(CallDate {
                local: at(2024, 7, 31, 14, 59, 35),
                offset: None
            })
        );
        assert_eq!(e.client, Ok(num("+380981234567")));
        assert_eq!(e.client_raw.as_deref(), Some("380981234567"));
        assert_eq!(e.tracking_number, Some(num("+380441112233")));
        assert_eq!(e.outcome(), CallOutcome::Answered);
        assert_eq!(e.call_result(), CallResult::Answered);
        assert_eq!(
            (e.billsec, e.waittime, e.duration),
            (Some(11), Some(12), Some(23))
        );
        let rec = e.recording.as_ref().unwrap();
        assert!(rec.url.ends_with(".ogg?token=x"));
        assert!(rec.wav_url.as_deref().unwrap().contains(".wav"));
        assert_eq!(e.staff_id, Some(4711));
        assert_eq!(e.connected_with.as_deref(), Some("shop_tatiana"));
        assert_eq!(e.connected_with_number, None);
        assert_eq!(e.utm.source.as_deref(), Some("google"));
        assert_eq!(e.utm.medium.as_deref(), Some("cpc"));
        assert_eq!(e.utm.campaign, None, "(not set) is a gap");
        assert_eq!(e.utm.content, None, "(none) is a gap");
        assert_eq!(e.utm.keyword.as_deref(), Some("купить чайник"));
        assert_eq!(e.ga_client_id.as_deref(), Some("1169999034.1555555510"));
        assert_eq!(e.extra.len(), 2);
        assert_eq!(e.extra["landing"], json!("https://shop.example/teapots"));
        assert_eq!(e.dedupe_key(), "ua1_-1718037213.2974122|end|staff4711");
    }

    #[test]
    fn alinas_call_in_webhooks_2_naming_all_strings_parses() {
        let e = parse(
            json!({
                "call_id": "1718037213.2974122",
                "call_date": "2024-07-31 15:02:10",
                "caller_number": "380671112233",
                "number_e164": "+380671112233",
                "destination": "380441112233",
                "type": "callback",
                "status": "PROPER",
                "duration_call": "95",
                "duration_conversation": "80",
                "duration_waiting": "15",
                "recording_presence": "1",
                "recording": "https://app.ringostat.com/recordings/1718037213.ogg",
                "employee": "Alina",
                "employee_id": "512",
                "connected_with": "380501234567",
                "project_id": "12345",
                "call_card_link": "https://app.ringostat.com/call-card/1",
                "scheme_name": "Main"
            }),
            Some("end"),
        )
        .unwrap();
        assert_eq!(e.call_id, "1718037213.2974122");
        assert_eq!(e.call_type, CallType::Callback);
        assert!(e.is_incoming(), "a callback counts as incoming");
        assert_eq!(e.call_type_raw.as_deref(), Some("callback"));
        assert_eq!(e.client, Ok(num("+380671112233")));
        assert_eq!(e.outcome(), CallOutcome::Answered);
        assert_eq!(
            (e.billsec, e.waittime, e.duration),
            (Some(80), Some(15), Some(95))
        );
        assert_eq!(e.staff_id, Some(512));
        assert_eq!(e.connected_with_number, Some(num("+380501234567")));
        assert_eq!(e.project_id.as_deref(), Some("12345"));
        assert_eq!(
            e.call_card.as_deref(),
            Some("https://app.ringostat.com/call-card/1")
        );
        assert!(e.extra.contains_key("employee") && e.extra.contains_key("scheme_name"));
    }

    #[test]
    fn fields_nested_under_additional_call_data_are_read_and_the_root_wins() {
        let e = parse(
            json!({
                "uniqueid": "ua-987h79879",
                "disposition": "NO ANSWER",
                "additional_call_data": {
                    "userfield": "0981234567",
                    "dst": "0441112233",
                    "call_type": "in",
                    "disposition": "ANSWERED"
                }
            }),
            None,
        )
        .unwrap();
        assert_eq!(e.client, Ok(num("+380981234567")));
        assert_eq!(e.tracking_number, Some(num("+380441112233")));
        assert_eq!(e.outcome(), CallOutcome::Missed, "root disposition wins");

        // The same nesting as a JSON string or as form keys.
        let as_string = parse(
            json!({"uniqueid": "1", "additional_call_data": "{\"userfield\":\"0981234567\"}"}),
            None,
        )
        .unwrap();
        assert_eq!(as_string.client, Ok(num("+380981234567")));
        let as_form = parse(
            json!({"uniqueid": "1", "additional_call_data[userfield]": "0981234567"}),
            None,
        )
        .unwrap();
        assert_eq!(as_form.client, Ok(num("+380981234567")));
    }

    #[test]
    fn outgoing_call_takes_the_client_from_dst_and_has_no_tracking_line() {
        let e = parse(
            json!({"uniqueid": "2", "call_type": "out", "caller": "shop_tatiana",
                   "dst": "380671112233", "disposition": "answered"}),
            None,
        )
        .unwrap();
        assert_eq!(e.direction(), Direction::Outgoing);
        assert_eq!(e.client, Ok(num("+380671112233")));
        assert_eq!(e.caller_raw.as_deref(), Some("shop_tatiana"));
        assert_eq!(e.tracking_number, None);
        let transit = parse(json!({"uniqueid": "3", "call_type": "transitout"}), None).unwrap();
        assert_eq!(transit.call_type, CallType::TransitOut);
        assert_eq!(transit.direction(), Direction::Outgoing);
        let transit_in = parse(json!({"uniqueid": "3", "call_type": "transitin"}), None).unwrap();
        assert_eq!(transit_in.direction(), Direction::Incoming);
    }

    #[test]
    fn a_sip_or_anonymous_caller_is_kept_raw_not_an_error() {
        for (caller, err) in [
            ("\"shop_jena\" <shop_jena>", PhoneNumberError::SipLogin),
            ("anonymous", PhoneNumberError::Anonymous),
            ("", PhoneNumberError::Empty),
        ] {
            let e = parse(json!({"uniqueid": "4", "caller": caller}), None).unwrap();
            assert_eq!(e.client, Err(err), "{caller}");
        }
        let labelled = parse(
            json!({"uniqueid": "4", "caller": "\"Ivan\" <380981234567>"}),
            None,
        )
        .unwrap();
        assert_eq!(labelled.client, Ok(num("+380981234567")));
    }

    #[test]
    fn every_disposition_maps_to_its_outcome_and_upload_result() {
        use CallOutcome as O;
        use CallResult as R;
        let table = [
            ("ANSWERED", O::Answered, R::Answered),
            ("proper", O::Answered, R::Answered),
            ("Repeated", O::Answered, R::Answered),
            ("NO ANSWER", O::Missed, R::NoAnswer),
            ("no_answer", O::Missed, R::NoAnswer),
            ("BUSY", O::Missed, R::Busy),
            ("VOICEMAIL", O::Missed, R::NoAnswer),
            ("NO EXTENSION", O::Missed, R::NoAnswer),
            ("wrong-extension", O::Missed, R::NoAnswer),
            ("CLIENT_NO_ANSWER", O::Missed, R::NoAnswer),
            ("DECLINE", O::Missed, R::NoAnswer),
            ("FAILED", O::Failed, R::Failed),
            ("NO-FORWARD", O::Failed, R::Failed),
            ("FORBIDDEN DESTINATION", O::Failed, R::NotAllowed),
            ("FAILED+FORBIDDEN+DESTINATION", O::Failed, R::NotAllowed),
            ("IN PROGRESS", O::Unknown, R::Unknown),
            ("SOMETHING NEW", O::Unknown, R::Unknown),
        ];
        for (raw, outcome, result) in table {
            let e = parse(json!({"uniqueid": "5", "disposition": raw}), None).unwrap();
            assert_eq!(e.outcome(), outcome, "{raw}");
            assert_eq!(e.call_result(), result, "{raw}");
            assert_eq!(e.disposition.unwrap().raw, raw, "raw kept");
        }
    }

    #[test]
    fn iso_dates_keep_local_time_and_the_offset() {
        let plus3 = FixedOffset::east_opt(3 * 3600).unwrap();
        for raw in [
            "2019-06-02T09:13:43+0300",
            "2019-06-02T09:13:43+03:00",
            "2019-06-02 09:13:43+03:00",
        ] {
            let e = parse(json!({"uniqueid": "6", "calldate": raw}), None).unwrap();
            assert_eq!(
                e.date,
                Some(CallDate {
                    local: at(2019, 6, 2, 9, 13, 43),
                    offset: Some(plus3)
                }),
                "{raw}"
            );
        }
        let utc = CallDate::parse("2019-06-02T06:13:43Z").unwrap();
        assert_eq!(utc.offset, FixedOffset::east_opt(0));
        let naive_iso = CallDate::parse("2019-06-02T09:13:43").unwrap();
        assert_eq!(
            (naive_iso.local, naive_iso.offset),
            (at(2019, 6, 2, 9, 13, 43), None)
        );
    }

    #[test]
    fn missing_call_id_is_an_error_naming_the_field() {
        let err = parse(json!({"caller": "380981234567", "call_id": ""}), None).unwrap_err();
        assert_eq!(err.field, "call_id");
        assert!(err.problem.contains("uniqueid"), "{err}");
    }

    #[test]
    fn bad_values_are_errors_naming_the_payload_key() {
        let cases = [
            (
                json!({"uniqueid": "7", "calldate": "31.07.2024 14:59"}),
                "calldate",
            ),
            (
                json!({"uniqueid": "7", "call_date": "yesterday"}),
                "call_date",
            ),
            (json!({"uniqueid": "7", "billsec": "eleven"}), "billsec"),
            (
                json!({"uniqueid": "7", "duration_waiting": "-3"}),
                "duration_waiting",
            ),
            (
                json!({"uniqueid": "7", "has_recording": "maybe"}),
                "has_recording",
            ),
            (
                json!({"uniqueid": "7", "employee_number": "tatiana"}),
                "employee_number",
            ),
            (
                json!({"uniqueid": "7", "call_type": "sideways"}),
                "call_type",
            ),
            (
                json!({"uniqueid": "7", "caller": ["380981234567"]}),
                "caller",
            ),
        ];
        for (payload, field) in cases {
            let err = parse(payload, None).unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
        let err = parse(json!({"uniqueid": "7"}), Some("sometime")).unwrap_err();
        assert_eq!(err.field, "event");
    }

    #[test]
    fn the_recording_flag_decides_not_the_url() {
        // Ringostat's own sample: a URL on a NO ANSWER call with has_recording "0".
        let e = parse(
            json!({"uniqueid": "8", "disposition": "NO ANSWER", "has_recording": "0",
                   "recording": "https://app.ringostat.com/recordings/x.ogg"}),
            None,
        )
        .unwrap();
        assert_eq!(e.recording, None);
        let flag_no_url = parse(json!({"uniqueid": "8", "has_recording": 1}), None).unwrap();
        assert_eq!(flag_no_url.recording, None);
        let wav_only = parse(
            json!({"uniqueid": "8", "recording_presence": true,
                   "recording_wav": "https://app.ringostat.com/recordings/x.wav"}),
            None,
        )
        .unwrap();
        assert!(wav_only.recording.unwrap().url.ends_with(".wav"));
        let no_flag = parse(
            json!({"uniqueid": "8", "recording": "https://app.ringostat.com/recordings/x.ogg"}),
            None,
        )
        .unwrap();
        assert!(
            no_flag.recording.is_some(),
            "without a flag the URL is all we have"
        );
    }

    #[test]
    fn moments_come_from_the_hint_or_are_inferred() {
        let start = parse(json!({"uniqueid": "9", "caller": "0981234567"}), None).unwrap();
        assert_eq!(start.moment, EventMoment::Start);
        let pickup = parse(
            json!({"uniqueid": "9", "employee_id": "512", "connected_with": "shop_alina"}),
            None,
        )
        .unwrap();
        assert_eq!(pickup.moment, EventMoment::Answer);
        let nobody = parse(
            json!({"uniqueid": "9", "employee_number": -1, "billsec": 0}),
            None,
        )
        .unwrap();
        assert_eq!((nobody.moment, nobody.staff_id), (EventMoment::End, None));
        let missed = parse(json!({"uniqueid": "9"}), Some("missed")).unwrap();
        assert_eq!(missed.outcome(), CallOutcome::Missed);
        assert_eq!(
            parse(json!({"uniqueid": "9"}), Some("after_call"))
                .unwrap()
                .moment,
            EventMoment::End
        );
    }

    #[test]
    fn dedupe_key_separates_legs_but_not_redeliveries() {
        let leg = |staff: Value, cw: &str| {
            parse(
                json!({"uniqueid": "ua1_-1.2", "disposition": "ANSWERED",
                       "employee_number": staff, "connected_with": cw}),
                None,
            )
            .unwrap()
            .dedupe_key()
        };
        assert_eq!(
            leg(json!(4711), "shop_tatiana"),
            leg(json!("4711"), "shop_tatiana")
        );
        assert_ne!(
            leg(json!(4711), "shop_tatiana"),
            leg(json!(512), "shop_alina")
        );
        assert_ne!(leg(json!(-1), "shop_tatiana"), leg(json!(-1), "shop_alina"));
        assert_eq!(leg(json!(-1), ""), "ua1_-1.2|end|-");
        let start = parse(json!({"uniqueid": "ua1_-1.2"}), Some("start")).unwrap();
        assert_ne!(start.dedupe_key(), leg(json!(-1), ""));
    }

    #[test]
    fn field_aliases_can_be_overridden_per_field_from_config() {
        let aliases: FieldAliases =
            toml::from_str("caller = [\"phone\", \"caller_id\"]\ncall_id = [\"id\"]").unwrap();
        assert_eq!(
            aliases.dst,
            FieldAliases::default().dst,
            "other lists keep defaults"
        );
        let e = CallEvent::parse(
            &obj(json!({"id": "x1", "caller_id": "0981234567", "caller": "ignored"})),
            &aliases,
            None,
            &ua,
        )
        .unwrap();
        assert_eq!(e.call_id, "x1");
        assert_eq!(e.client, Ok(num("+380981234567")));
        assert!(
            e.extra.contains_key("caller"),
            "no longer an alias: kept as extra"
        );
    }
}
