//! callgate's own call log: one entry per finished call (and per ignored or unknown one),
//! used by the `last_talked` policy, the admin API and the operators' reports.

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use super::{
    manager::{ManagerId, ManagerState},
    phone_number::PhoneNumber,
};

/// One finished call as callgate saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallLogEntry {
    /// Ringostat call id.
    pub call_id: String,
    pub date: NaiveDateTime,
    /// `None` when the caller was not a number (SIP login, `anonymous`).
    pub client_phone: Option<PhoneNumber>,
    /// The caller field exactly as received, when it was not a number.
    pub client_raw: Option<String>,
    pub incoming: bool,
    pub site: Option<String>,
    /// Tracking number dialled (external number).
    pub external_number: Option<String>,
    /// Manager who talked (answered), if any.
    pub manager_id: Option<ManagerId>,
    /// A [`CallOutcome`](super::call::CallOutcome) (`answered`, `missed`, `failed`, `unknown`).
    pub result: String,
    /// Disposition exactly as Ringostat sent it.
    pub disposition_raw: Option<String>,
    /// Several CRM customers had this number.
    pub ambiguous_customer: bool,
    /// Created date of the order the call was linked to, if any (`Y-m-d`).
    pub order_date: Option<String>,
    /// What callgate did with the call (e.g. `ignored: internal call`).
    pub note: Option<String>,
}

/// Admin filter over the call log (the CRM's own call report's filters plus manager, result,
/// time window and caller). Every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallLogFilter {
    pub site: Option<String>,
    pub external_number: Option<String>,
    pub order_date: Option<String>,
    pub manager_id: Option<ManagerId>,
    pub result: Option<String>,
    /// The caller: an E.164 number matches `client_phone`; anything else (a SIP login,
    /// `anonymous`) matches the caller field as received.
    pub caller: Option<String>,
    /// Ringostat call id.
    pub call_id: Option<String>,
    /// Calls at or after this moment.
    pub from: Option<NaiveDateTime>,
    /// Calls before this moment.
    pub to: Option<NaiveDateTime>,
}

impl CallLogFilter {
    pub fn matches(&self, e: &CallLogEntry) -> bool {
        self.site
            .as_ref()
            .is_none_or(|s| e.site.as_ref() == Some(s))
            && self
                .external_number
                .as_ref()
                .is_none_or(|s| e.external_number.as_ref() == Some(s))
            && self
                .order_date
                .as_ref()
                .is_none_or(|s| e.order_date.as_ref() == Some(s))
            && self.manager_id.is_none_or(|m| e.manager_id == Some(m))
            && self.result.as_ref().is_none_or(|s| &e.result == s)
            && self.caller.as_ref().is_none_or(|c| {
                e.client_phone.as_ref().is_some_and(|p| p.e164() == c)
                    || e.client_raw.as_ref() == Some(c)
            })
            && self.call_id.as_ref().is_none_or(|id| &e.call_id == id)
            && self.from.is_none_or(|from| e.date >= from)
            && self.to.is_none_or(|to| e.date < to)
    }
}

/// Where an entry sits in the call log: the call date (ms since the epoch, UTC) and the
/// store's append sequence. The log reads newest first, i.e. in descending position; a page
/// that starts strictly before a position never repeats nor skips an entry that was already
/// there, however many calls are appended meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallLogPosition {
    pub date_ms: i64,
    pub seq: u64,
}

/// A cursor that is not one callgate handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a call log cursor: {0:?}")]
pub struct BadCursor(pub String);

impl CallLogPosition {
    /// The opaque cursor handed to clients (`next_cursor`): the position in hexadecimal.
    pub fn to_cursor(self) -> String {
        format!("{:x}.{:x}", self.date_ms, self.seq)
    }

    /// Reads a cursor made by [`CallLogPosition::to_cursor`].
    pub fn parse_cursor(cursor: &str) -> Result<Self, BadCursor> {
        let bad = || BadCursor(cursor.chars().take(64).collect());
        let (date, seq) = cursor.split_once('.').ok_or_else(bad)?;
        Ok(CallLogPosition {
            date_ms: i64::from_str_radix(date, 16).map_err(|_| bad())?,
            seq: u64::from_str_radix(seq, 16).map_err(|_| bad())?,
        })
    }
}

/// A call log entry with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedCall {
    pub position: CallLogPosition,
    pub entry: CallLogEntry,
}

/// One step of what callgate did about a call (its decision trail), in the order it
/// happened. Numbers never appear here: the call's page shows them from the call log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrailStep {
    /// When, ms since the epoch.
    pub at_ms: u64,
    #[serde(flatten)]
    pub kind: TrailKind,
}

/// What a [`TrailStep`] records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum TrailKind {
    /// The pre-call lookup's answer that routed the call (SPEC §3), with the facts it used.
    Lookup {
        /// The first matching routing rule, `name (file:line)`.
        rule: Option<String>,
        /// The policy in force (`lookup.policy`, or the rule's).
        policy: Option<String>,
        /// Where the owner came from (`mirror`, `index`, `crm`).
        owner_source: Option<String>,
        /// The caller's customer and its responsible manager.
        customer_id: Option<u64>,
        owner: Option<ManagerId>,
        /// The owner's status and presence at that moment.
        owner_state: Option<ManagerState>,
        /// The manager who last talked to the caller (policy `last_talked`).
        last_talked: Option<ManagerId>,
        /// The answer: reason (`owner`, `owner_unavailable`, …), manager and destination.
        reason: String,
        manager_id: Option<ManagerId>,
        destination: Option<String>,
    },
    /// The planner's plan for one event of the call.
    Plan {
        /// The event (`start`, `answer`, `end`, …) as the planner saw it.
        event: String,
        /// SPEC §4 scenarios recognized.
        scenarios: Vec<String>,
        /// The CRM actions planned, by their stable keys.
        actions: Vec<String>,
        /// The routing rule whose planner actions applied, if any (`name (file:line)`).
        rule: Option<String>,
    },
    /// One CRM action carried out, with the ids the CRM gave.
    Action {
        action: String,
        customer_id: Option<u64>,
        order_id: Option<u64>,
        task_id: Option<u64>,
    },
    /// The event's CRM work failed and will be tried again.
    Retry {
        attempt: u32,
        error: String,
        delay_ms: u64,
    },
    /// The event's CRM work was parked as a dead letter.
    DeadLetter { reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_as_its_position() {
        let p = CallLogPosition {
            date_ms: 1_722_437_975_000,
            seq: 42,
        };
        assert_eq!(CallLogPosition::parse_cursor(&p.to_cursor()), Ok(p));
    }

    #[test]
    fn a_cursor_that_callgate_did_not_make_is_refused() {
        for bad in ["", "12", "x.1", "1.y", "1.2.3", "\u{444}.1", "-1.-1"] {
            assert!(CallLogPosition::parse_cursor(bad).is_err(), "{bad:?}");
        }
    }
}
