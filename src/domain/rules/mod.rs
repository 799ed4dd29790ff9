//! Routing rules (SPEC §5): the ordered list of "if the call looks like this, do that"
//! entries of the CRM's own "create orders in chosen statuses" settings, plus the lookup's
//! distribution scenarios (a rule may override `lookup.policy` or forward a call directly).
//!
//! # Format
//! TOML files; each file may set a default `timezone` and holds `[[rule]]` tables:
//!
//! ```toml
//! timezone = "Europe/Kyiv"          # default of this file's rules (else UTC)
//!
//! [[rule]]
//! name = "feedback line"            # required, unique across all files
//! dst = "+380 44 111 22 99"          # matchers: all given ones must match
//! create_order = false              # actions
//! task_text = "Feedback call from {phone}"
//! ```
//!
//! Matchers (each takes one value or a list; a list matches when any value does):
//! `dst` (the tracking number dialled, normalized with `phone.default_region` when the rules
//! are compiled), `site`, `call_type` (`in|out|callback|transitin|transitout`, any spelling
//! a webhook may send: [`crate::domain::call_type`]), `disposition` (the groups `answered|missed|failed`, or one Ringostat status such as
//! `"NO ANSWER"`, `"VOICEMAIL"`), `caller_prefix` (a prefix of the client's E.164 number;
//! spaces, dashes and parentheses are ignored, `380…` means `+380…`), `utm_source`,
//! `utm_medium`, `utm_campaign` (ASCII case-insensitive), `customer_exists` (bool),
//! `weekdays` (`"mon"`, `"mon-fri"`, `"fri-mon"` …) and `hours` (`"09:00-18:00"`, or
//! `"22:00-08:00"` across midnight; start inclusive, end exclusive) in the rule's
//! `timezone`. `weekdays` and `hours` are separate conditions on the local time: a rule with
//! `weekdays = "fri"` and `hours = "22:00-08:00"` matches Friday 23:00 and Friday 03:00, not
//! Saturday 03:00. A rule without matchers matches everything (a catch-all at the end).
//!
//! Actions: `order_status`, `create_order`, `assign_to` (a CRM user id), `task_text` and
//! `ignore` act in the planner; `lookup_policy` and `forward_to` act in the pre-call lookup;
//! `ignore = true` also answers "nobody" in the lookup. A rule must have at least one action.
//! `ignore = true` stands alone; `forward_to` and `lookup_policy` exclude each other;
//! `create_order = false` excludes `order_status`.
//!
//! # Order and evaluation
//! Files are taken in file-name order (byte-wise, so `10-…` before `20-…`), rules top to
//! bottom within a file; the **first matching rule wins**, over all rules, whatever actions
//! it has: its actions that do not apply in the current context are simply ignored. So a
//! planner-only rule matching a lookup shadows the rules below it there too (the lookup then
//! uses `lookup.policy`).
//!
//! A matcher that needs a field the context lacks does not match. The lookup context has
//! the caller, `dst`, `site` (the request's, else the `[[sites]]` entry whose tracking
//! numbers hold `dst`), UTM tags when the request carries them, call type `in` and the
//! current time; it has no disposition and does not know whether a customer exists, so
//! rules with `disposition` or `customer_exists` never match a lookup. An event lacks `dst`
//! for outgoing calls (there is no tracking number) and UTM tags that were not sent.
//!
//! The call's time is the event's `calldate`: with an offset it is an instant, converted to
//! the rule's timezone; without one it is taken as the wall-clock time of the rule's
//! timezone (Ringostat sends the project's local time). The lookup uses the current time.
//!
//! # Cost
//! Everything is parsed and normalized once ([`compile`]); evaluating a rule is a few
//! integer and byte comparisons, with no allocation. The local time of a timezone is computed
//! at most once per context and timezone in a row ([`MatchContext`] caches it).
//!
//! This module is pure: it never reads files (the edge passes `(file name, text)` pairs).
//!
//! Files: `format` (the TOML form, compiling and validating it), `matcher` (the compiled
//! rules, the `dst` index, explanations), `context` ([`MatchContext`]), `tests`.

mod context;
mod format;
mod matcher;
#[cfg(test)]
mod tests;

use std::fmt;

use chrono_tz::Tz;

pub use context::*;
pub use format::*;
pub use matcher::*;

/// The timezone of rules whose file and table name none.
pub const DEFAULT_TIMEZONE: Tz = Tz::UTC;

// === Errors ===

/// One problem in one rules file, at a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct RuleError {
    /// The file as given to [`compile`] (usually its path).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    pub message: String,
}

/// Every problem found in a set of rules files (compilation does not stop at the first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RulesError(pub Vec<RuleError>);

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}
