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
//! are compiled), `site`, `call_type` (`in|out|callback|transitin|transitout`, exact),
//! `disposition` (the groups `answered|missed|failed`, or one Ringostat status such as
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

use std::{cell::Cell, collections::HashMap, fmt, ops::Range};

use chrono::{DateTime, Datelike, NaiveDateTime, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, de};
use toml::Spanned;

use super::{
    call::{CallEvent, CallOutcome, CallType, Disposition, DispositionKind},
    lookup::LookupPolicy,
    manager::ManagerId,
    phone_number::{PhoneNormalizer, PhoneNumber},
    plan::RuleActions,
};

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

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

// === The raw (wire) form ===

/// One string or a list of strings.
#[derive(Debug, Clone)]
struct OneOrMany(Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_owned()]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    timezone: Option<Spanned<String>>,
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    // Matchers.
    dst: Option<Spanned<OneOrMany>>,
    site: Option<Spanned<OneOrMany>>,
    call_type: Option<Spanned<OneOrMany>>,
    disposition: Option<Spanned<OneOrMany>>,
    caller_prefix: Option<Spanned<OneOrMany>>,
    utm_source: Option<Spanned<OneOrMany>>,
    utm_medium: Option<Spanned<OneOrMany>>,
    utm_campaign: Option<Spanned<OneOrMany>>,
    customer_exists: Option<bool>,
    weekdays: Option<Spanned<OneOrMany>>,
    hours: Option<Spanned<OneOrMany>>,
    timezone: Option<Spanned<String>>,
    // Actions.
    order_status: Option<Spanned<String>>,
    create_order: Option<bool>,
    assign_to: Option<Spanned<i64>>,
    lookup_policy: Option<Spanned<String>>,
    forward_to: Option<Spanned<String>>,
    task_text: Option<Spanned<String>>,
    ignore: Option<bool>,
}

// === Compiled form ===

/// Which UTM tag a matcher reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UtmField {
    Source,
    Medium,
    Campaign,
}

/// A `disposition` matcher value: a coarse group or one exact Ringostat status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DispositionSel {
    Outcome(CallOutcome),
    Kind(DispositionKind),
}

/// `[start, end)` in minutes since local midnight; `start > end` crosses midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TimeWindow {
    start: u16,
    end: u16,
}

impl TimeWindow {
    fn contains(self, minute: u16) -> bool {
        if self.start < self.end {
            self.start <= minute && minute < self.end
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

impl fmt::Display for TimeWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

#[derive(Debug, Clone)]
enum Matcher {
    /// Packed E.164 numbers ([`PhoneNumber::as_u64`]).
    Dst(Vec<u64>),
    Site(Vec<String>),
    CallType(Vec<CallType>),
    Disposition(Vec<DispositionSel>),
    /// `+` and digits.
    CallerPrefix(Vec<String>),
    Utm(UtmField, Vec<String>),
    CustomerExists(bool),
    /// Bit `n` = weekday `n` days from Monday.
    Weekdays {
        mask: u8,
        tz: Tz,
    },
    Hours {
        windows: Vec<TimeWindow>,
        tz: Tz,
    },
}

impl Matcher {
    fn key(&self) -> &'static str {
        match self {
            Matcher::Dst(_) => "dst",
            Matcher::Site(_) => "site",
            Matcher::CallType(_) => "call_type",
            Matcher::Disposition(_) => "disposition",
            Matcher::CallerPrefix(_) => "caller_prefix",
            Matcher::Utm(UtmField::Source, _) => "utm_source",
            Matcher::Utm(UtmField::Medium, _) => "utm_medium",
            Matcher::Utm(UtmField::Campaign, _) => "utm_campaign",
            Matcher::CustomerExists(_) => "customer_exists",
            Matcher::Weekdays { .. } => "weekdays",
            Matcher::Hours { .. } => "hours",
        }
    }

    /// `Some(true|false)`, or `None` when the context lacks the field (no match).
    fn test(&self, ctx: &MatchContext<'_>) -> Option<bool> {
        Some(match self {
            Matcher::Dst(numbers) => numbers.contains(&ctx.dst?),
            Matcher::Site(sites) => {
                let site = ctx.site?;
                sites.iter().any(|s| s == site)
            }
            Matcher::CallType(types) => types.contains(&ctx.call_type?),
            Matcher::Disposition(sels) => {
                let outcome = ctx.outcome?;
                sels.iter().any(|s| match s {
                    DispositionSel::Outcome(o) => *o == outcome,
                    DispositionSel::Kind(k) => ctx.disposition == Some(*k),
                })
            }
            Matcher::CallerPrefix(prefixes) => {
                let caller = ctx.caller?;
                prefixes.iter().any(|p| caller.starts_with(p.as_str()))
            }
            Matcher::Utm(field, values) => {
                let value = ctx.utm(*field)?;
                values.iter().any(|v| v.eq_ignore_ascii_case(value))
            }
            Matcher::CustomerExists(want) => ctx.customer_exists? == *want,
            Matcher::Weekdays { mask, tz } => {
                let (day, _) = ctx.local(*tz)?;
                mask & (1 << day.num_days_from_monday()) != 0
            }
            Matcher::Hours { windows, tz } => {
                let (_, minute) = ctx.local(*tz)?;
                windows.iter().any(|w| w.contains(minute))
            }
        })
    }

    /// The expected values, for `explain`.
    fn expected(&self) -> String {
        let list = |v: Vec<String>| v.join(" | ");
        match self {
            Matcher::Dst(n) => list(n.iter().map(|n| format!("+{n}")).collect()),
            Matcher::Site(v) | Matcher::CallerPrefix(v) | Matcher::Utm(_, v) => list(v.clone()),
            Matcher::CallType(t) => list(t.iter().map(|t| call_type_name(*t).to_owned()).collect()),
            Matcher::Disposition(s) => list(
                s.iter()
                    .map(|s| match s {
                        DispositionSel::Outcome(o) => o.as_str().to_owned(),
                        DispositionSel::Kind(k) => format!("{k:?}"),
                    })
                    .collect(),
            ),
            Matcher::CustomerExists(b) => b.to_string(),
            Matcher::Weekdays { mask, tz } => format!(
                "{} ({tz})",
                list(
                    WEEKDAYS
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| mask & (1 << i) != 0)
                        .map(|(_, d)| d.to_string())
                        .collect()
                )
            ),
            Matcher::Hours { windows, tz } => format!(
                "{} ({tz})",
                list(windows.iter().map(ToString::to_string).collect())
            ),
        }
    }

    /// What the context has for this matcher, for `explain`.
    fn actual(&self, ctx: &MatchContext<'_>) -> Option<String> {
        match self {
            Matcher::Dst(_) => ctx.dst.map(|n| format!("+{n}")),
            Matcher::Site(_) => ctx.site.map(str::to_owned),
            Matcher::CallType(_) => ctx.call_type.map(|t| call_type_name(t).to_owned()),
            Matcher::Disposition(_) => ctx.outcome.map(|o| match ctx.disposition {
                Some(k) => format!("{} ({k:?})", o.as_str()),
                None => o.as_str().to_owned(),
            }),
            Matcher::CallerPrefix(_) => ctx.caller.map(str::to_owned),
            Matcher::Utm(field, _) => ctx.utm(*field).map(str::to_owned),
            Matcher::CustomerExists(_) => ctx.customer_exists.map(|b| b.to_string()),
            Matcher::Weekdays { tz, .. } => ctx.local(*tz).map(|(d, _)| d.to_string()),
            Matcher::Hours { tz, .. } => ctx
                .local(*tz)
                .map(|(_, m)| format!("{:02}:{:02}", m / 60, m % 60)),
        }
    }
}

fn call_type_name(t: CallType) -> &'static str {
    match t {
        CallType::In => "in",
        CallType::Out => "out",
        CallType::Callback => "callback",
        CallType::TransitIn => "transitin",
        CallType::TransitOut => "transitout",
    }
}

const WEEKDAYS: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

/// What a matched rule means for the pre-call lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupOverride<'a> {
    /// The rule has no lookup action: use `lookup.policy`.
    None,
    /// Decide with this policy instead of `lookup.policy`.
    Policy(LookupPolicy),
    /// Answer this destination at once (reason `rule`); `manager` is the rule's `assign_to`.
    Forward {
        destination: &'a str,
        manager: Option<ManagerId>,
    },
    /// `ignore = true`: answer nobody (reason `rule`).
    Nobody,
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique name.
    pub name: String,
    /// The file it came from, as given to [`compile`].
    pub file: String,
    /// The line of its `name`.
    pub line: usize,
    matchers: Vec<Matcher>,
    /// The planner-facing actions (also `name` and `ignore`).
    actions: RuleActions,
    lookup_policy: Option<LookupPolicy>,
    forward_to: Option<String>,
}

impl Rule {
    /// Whether every matcher matches `ctx`.
    pub fn matches(&self, ctx: &MatchContext<'_>) -> bool {
        self.matchers.iter().all(|m| m.test(ctx) == Some(true))
    }

    /// The actions for the planner, or `None` when the rule has none (a lookup-only rule
    /// does not touch the plan).
    pub fn planner_actions(&self) -> Option<&RuleActions> {
        let a = &self.actions;
        let any = a.ignore
            || a.order_status.is_some()
            || a.create_order.is_some()
            || a.assign_to.is_some()
            || a.task_text.is_some();
        any.then_some(a)
    }

    /// What the rule says to the lookup.
    pub fn lookup_override(&self) -> LookupOverride<'_> {
        if self.actions.ignore {
            LookupOverride::Nobody
        } else if let Some(destination) = &self.forward_to {
            LookupOverride::Forward {
                destination,
                manager: self.actions.assign_to,
            }
        } else if let Some(policy) = self.lookup_policy {
            LookupOverride::Policy(policy)
        } else {
            LookupOverride::None
        }
    }

    /// The actions as `key = value` lines, for `explain`.
    pub fn describe_actions(&self) -> Vec<String> {
        let a = &self.actions;
        let mut out = Vec::new();
        if a.ignore {
            out.push("ignore = true".to_owned());
        }
        if let Some(s) = &a.order_status {
            out.push(format!("order_status = {s:?}"));
        }
        if let Some(b) = a.create_order {
            out.push(format!("create_order = {b}"));
        }
        if let Some(m) = a.assign_to {
            out.push(format!("assign_to = {m}"));
        }
        if let Some(p) = self.lookup_policy {
            out.push(format!("lookup_policy = {:?}", p.as_str()));
        }
        if let Some(f) = &self.forward_to {
            out.push(format!("forward_to = {f:?}"));
        }
        if let Some(t) = &a.task_text {
            out.push(format!("task_text = {t:?}"));
        }
        out
    }
}

/// A compiled, ordered rule set. Cheap to evaluate; share it behind an `Arc`.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
    files: usize,
    /// Some rule matches on `site`: a lookup without one derives it from `dst`.
    needs_site: bool,
    index: DstIndex,
}

/// Which rules can match a call's `dst`. A shop writes many rules per tracking number; a rule
/// with a `dst` matcher is only a candidate for the numbers it lists, so a call is tested
/// against those and the rules without a `dst` matcher, in file order, and skips the rest.
#[derive(Debug, Clone, Default)]
struct DstIndex {
    /// Positions of the rules listing each number, ascending.
    by_dst: std::collections::HashMap<u64, Vec<usize>>,
    /// Positions of the rules without a `dst` matcher, ascending.
    any_dst: Vec<usize>,
}

impl DstIndex {
    fn new(rules: &[Rule]) -> Self {
        let mut index = DstIndex::default();
        for (position, rule) in rules.iter().enumerate() {
            let dst = rule.matchers.iter().find_map(|m| match m {
                Matcher::Dst(numbers) => Some(numbers),
                _ => None,
            });
            match dst {
                None => index.any_dst.push(position),
                Some(numbers) => {
                    for &n in numbers {
                        let listed = index.by_dst.entry(n).or_default();
                        if listed.last() != Some(&position) {
                            listed.push(position);
                        }
                    }
                }
            }
        }
        index
    }

    /// Positions of the rules that may match `dst`, ascending.
    fn candidates(&self, dst: Option<u64>) -> impl Iterator<Item = usize> + '_ {
        let listed = dst
            .and_then(|d| self.by_dst.get(&d))
            .map_or(&[][..], Vec::as_slice);
        let (mut any, mut listed) = (
            self.any_dst.iter().copied().peekable(),
            listed.iter().copied().peekable(),
        );
        std::iter::from_fn(move || match (any.peek(), listed.peek()) {
            (Some(&a), Some(&l)) if l < a => listed.next(),
            (Some(_), _) => any.next(),
            (None, _) => listed.next(),
        })
    }
}

/// Why one rule did or did not match, for `explain`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuleVerdict {
    pub name: String,
    pub file: String,
    pub line: usize,
    pub matched: bool,
    /// The failing conditions (`dst: +380441112233 is not +380441112299`); empty when it
    /// matched.
    pub misses: Vec<String>,
}

/// What [`Rules::explain`] found: the verdict of each rule from the top down to the one
/// that fires (the ones below it are never looked at).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Explanation {
    pub verdicts: Vec<RuleVerdict>,
    /// Index into `verdicts` of the rule that fires.
    pub fired: Option<usize>,
}

impl Rules {
    /// The rules, in evaluation order.
    pub fn all(&self) -> &[Rule] {
        &self.rules
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// How many files the rules came from.
    pub fn file_count(&self) -> usize {
        self.files
    }

    /// Whether any rule has a `dst` matcher (a lookup may skip normalizing `dst` otherwise).
    pub fn needs_dst(&self) -> bool {
        !self.index.by_dst.is_empty()
    }

    /// Whether any rule has a `site` matcher (a lookup that names no site may then derive it
    /// from its `dst` through `[[sites]]`).
    pub fn needs_site(&self) -> bool {
        self.needs_site
    }

    pub fn get(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// The first (top) rule that matches (only the candidates for the call's `dst` are
    /// tested: [`DstIndex`]).
    pub fn first_match(&self, ctx: &MatchContext<'_>) -> Option<&Rule> {
        self.index
            .candidates(ctx.dst)
            .map(|position| &self.rules[position])
            .find(|r| r.matches(ctx))
    }

    /// Every rule from the top to the first match, with why each one above it did not match.
    pub fn explain(&self, ctx: &MatchContext<'_>) -> Explanation {
        let mut verdicts = Vec::new();
        for rule in &self.rules {
            let misses: Vec<String> = rule
                .matchers
                .iter()
                .filter(|m| m.test(ctx) != Some(true))
                .map(|m| match m.actual(ctx) {
                    Some(actual) => format!("{}: {actual} is not {}", m.key(), m.expected()),
                    None => format!(
                        "{}: the call has no {} (wanted {})",
                        m.key(),
                        m.key(),
                        m.expected()
                    ),
                })
                .collect();
            let matched = misses.is_empty();
            verdicts.push(RuleVerdict {
                name: rule.name.clone(),
                file: rule.file.clone(),
                line: rule.line,
                matched,
                misses,
            });
            if matched {
                return Explanation {
                    fired: Some(verdicts.len() - 1),
                    verdicts,
                };
            }
        }
        Explanation {
            verdicts,
            fired: None,
        }
    }
}

// === Matching context ===

/// When the call happened, as far as the rules are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallTime {
    /// An instant; converted into each rule's timezone.
    Instant(DateTime<Utc>),
    /// A wall-clock time without an offset, taken as the rule's own local time.
    Wall(NaiveDateTime),
}

/// What a rule is matched against: built from a lookup request or a call event. A field that
/// is `None` makes every matcher on it fail.
#[derive(Debug, Clone, Default)]
pub struct MatchContext<'a> {
    /// The tracking number dialled, packed ([`PhoneNumber::as_u64`]).
    pub dst: Option<u64>,
    pub site: Option<&'a str>,
    pub call_type: Option<CallType>,
    pub outcome: Option<CallOutcome>,
    pub disposition: Option<DispositionKind>,
    /// The client's E.164 number.
    pub caller: Option<&'a str>,
    pub utm_source: Option<&'a str>,
    pub utm_medium: Option<&'a str>,
    pub utm_campaign: Option<&'a str>,
    pub customer_exists: Option<bool>,
    pub time: Option<CallTime>,
    /// The last (timezone, weekday, minute of day) computed.
    local: Cell<Option<(Tz, Weekday, u16)>>,
}

impl<'a> MatchContext<'a> {
    /// A pre-call lookup: call type `in`, no disposition, customer existence unknown.
    pub fn for_lookup(
        caller: Option<&'a PhoneNumber>,
        dst: Option<&PhoneNumber>,
        site: Option<&'a str>,
        now: DateTime<Utc>,
    ) -> Self {
        MatchContext {
            dst: dst.map(PhoneNumber::as_u64),
            site,
            call_type: Some(CallType::In),
            caller: caller.map(PhoneNumber::e164),
            time: Some(CallTime::Instant(now)),
            ..MatchContext::default()
        }
    }

    /// A call event. `site` is the site told from `[[sites]]` (or `crm.default_site`);
    /// `customer_exists` comes from the CRM facts; `now` stands in when the event has no date.
    pub fn for_event(
        event: &'a CallEvent,
        site: Option<&'a str>,
        customer_exists: Option<bool>,
        now: DateTime<Utc>,
    ) -> Self {
        let time = match event.date {
            Some(d) => match d.offset {
                Some(offset) => match d.local.and_local_timezone(offset).single() {
                    Some(at) => CallTime::Instant(at.with_timezone(&Utc)),
                    None => CallTime::Wall(d.local),
                },
                None => CallTime::Wall(d.local),
            },
            None => CallTime::Instant(now),
        };
        let outcome = match event.outcome() {
            CallOutcome::Unknown if event.disposition.is_none() => None,
            o => Some(o),
        };
        MatchContext {
            dst: event.tracking_number.as_ref().map(PhoneNumber::as_u64),
            site,
            call_type: Some(event.call_type),
            outcome,
            disposition: event.disposition.as_ref().map(|d: &Disposition| d.kind),
            caller: event.client.as_ref().ok().map(PhoneNumber::e164),
            utm_source: event.utm.source.as_deref(),
            utm_medium: event.utm.medium.as_deref(),
            utm_campaign: event.utm.campaign.as_deref(),
            customer_exists,
            time: Some(time),
            local: Cell::new(None),
        }
    }

    fn utm(&self, field: UtmField) -> Option<&'a str> {
        match field {
            UtmField::Source => self.utm_source,
            UtmField::Medium => self.utm_medium,
            UtmField::Campaign => self.utm_campaign,
        }
    }

    /// Weekday and minute of day in `tz`, cached for the last timezone asked.
    fn local(&self, tz: Tz) -> Option<(Weekday, u16)> {
        if let Some((cached, day, minute)) = self.local.get()
            && cached == tz
        {
            return Some((day, minute));
        }
        let naive = match self.time? {
            CallTime::Instant(at) => at.with_timezone(&tz).naive_local(),
            CallTime::Wall(local) => local,
        };
        let minute = (naive.hour() * 60 + naive.minute()) as u16;
        let day = naive.weekday();
        self.local.set(Some((tz, day, minute)));
        Some((day, minute))
    }
}

// === Compilation ===

/// What compilation checks rules against.
#[derive(Debug, Clone, Copy)]
pub struct CompileOptions<'a> {
    /// Normalizes `dst` (with `phone.default_region`).
    pub normalizer: &'a PhoneNormalizer,
    /// `[[managers]]` ids; when not empty, `assign_to` must be one of them. Empty: any
    /// positive id is accepted (the CRM is the judge), so the shipped examples validate with
    /// the default configuration.
    pub known_managers: &'a [ManagerId],
}

struct FileCtx<'a> {
    file: &'a str,
    text: &'a str,
    errors: &'a mut Vec<RuleError>,
}

impl FileCtx<'_> {
    fn err(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.errors.push(RuleError {
            file: self.file.to_owned(),
            line: line_of(self.text, span.start),
            message: message.into(),
        });
    }
}

/// Parses and validates rules files into one ordered [`Rules`]. `files` are `(name, text)`
/// pairs; they are sorted by name first (see the module docs). Every problem is reported,
/// each with its file and line.
pub fn compile(files: &[(String, String)], opts: &CompileOptions<'_>) -> Result<Rules, RulesError> {
    let mut order: Vec<&(String, String)> = files.iter().collect();
    order.sort_by(|a, b| a.0.cmp(&b.0));
    let mut errors = Vec::new();
    let mut rules: Vec<Rule> = Vec::new();
    let mut names: HashMap<String, (String, usize)> = HashMap::new();
    for (file, text) in order {
        let mut fx = FileCtx {
            file,
            text,
            errors: &mut errors,
        };
        let raw: RawFile = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                fx.err(e.span().unwrap_or(0..0), e.message().trim().to_owned());
                continue;
            }
        };
        let file_tz = match &raw.timezone {
            None => DEFAULT_TIMEZONE,
            Some(tz) => parse_tz(&mut fx, tz).unwrap_or(DEFAULT_TIMEZONE),
        };
        for r in raw.rule {
            let before = fx.errors.len();
            let rule = compile_rule(&mut fx, r, file_tz, opts);
            if fx.errors.len() > before {
                continue;
            }
            if let Some(rule) = rule {
                if let Some((f, l)) = names.get(&rule.name) {
                    let msg = format!(
                        "duplicate rule name {:?} (first defined at {f}:{l})",
                        rule.name
                    );
                    fx.errors.push(RuleError {
                        file: rule.file.clone(),
                        line: rule.line,
                        message: msg,
                    });
                    continue;
                }
                names.insert(rule.name.clone(), (rule.file.clone(), rule.line));
                rules.push(rule);
            }
        }
    }
    if errors.is_empty() {
        let needs_site = rules
            .iter()
            .any(|r| r.matchers.iter().any(|m| matches!(m, Matcher::Site(_))));
        Ok(Rules {
            index: DstIndex::new(&rules),
            rules,
            files: files.len(),
            needs_site,
        })
    } else {
        Err(RulesError(errors))
    }
}

fn parse_tz(fx: &mut FileCtx<'_>, tz: &Spanned<String>) -> Option<Tz> {
    match tz.get_ref().trim().parse::<Tz>() {
        Ok(tz) => Some(tz),
        Err(_) => {
            fx.err(
                tz.span(),
                format!(
                    "unknown timezone {:?}: expected an IANA name such as \"Europe/Kyiv\" or \"UTC\"",
                    tz.get_ref()
                ),
            );
            None
        }
    }
}

/// The values of a list matcher, refusing an empty list or an empty value.
fn values<'r>(
    fx: &mut FileCtx<'_>,
    rule: &str,
    key: &str,
    v: &'r Spanned<OneOrMany>,
) -> Option<&'r [String]> {
    let list = &v.get_ref().0;
    if list.is_empty() || list.iter().any(|s| s.trim().is_empty()) {
        fx.err(
            v.span(),
            format!("rule {rule:?}: {key} must not be empty or hold an empty value"),
        );
        return None;
    }
    Some(list)
}

/// Compiles one rule; problems go to `fx` (the result is then not used).
fn compile_rule(
    fx: &mut FileCtx<'_>,
    r: RawRule,
    file_tz: Tz,
    opts: &CompileOptions<'_>,
) -> Option<Rule> {
    let name = r.name.get_ref().trim().to_owned();
    let line = line_of(fx.text, r.name.span().start);
    if name.is_empty() {
        fx.err(r.name.span(), "a rule's name must not be empty");
        return None;
    }
    let n = name.as_str();
    let tz = match &r.timezone {
        Some(tz) => parse_tz(fx, tz)?,
        None => file_tz,
    };
    let mut matchers = Vec::new();

    if let Some(v) = &r.dst
        && let Some(list) = values(fx, n, "dst", v)
    {
        let mut numbers = Vec::with_capacity(list.len());
        for raw in list {
            match opts.normalizer.parse(raw) {
                Ok(p) => numbers.push(p.number.as_u64()),
                Err(e) => fx.err(
                    v.span(),
                    format!("rule {n:?}: dst {raw:?} is not a phone number: {e}"),
                ),
            }
        }
        matchers.push(Matcher::Dst(numbers));
    }
    if let Some(v) = &r.site
        && let Some(list) = values(fx, n, "site", v)
    {
        matchers.push(Matcher::Site(
            list.iter().map(|s| s.trim().to_owned()).collect(),
        ));
    }
    if let Some(v) = &r.call_type
        && let Some(list) = values(fx, n, "call_type", v)
    {
        let mut types = Vec::new();
        for raw in list {
            match raw.trim().to_ascii_lowercase().as_str() {
                "in" => types.push(CallType::In),
                "out" => types.push(CallType::Out),
                "callback" => types.push(CallType::Callback),
                "transitin" => types.push(CallType::TransitIn),
                "transitout" => types.push(CallType::TransitOut),
                _ => fx.err(
                    v.span(),
                    format!(
                        "rule {n:?}: unknown call_type {raw:?}: expected in, out, callback, transitin or transitout"
                    ),
                ),
            }
        }
        matchers.push(Matcher::CallType(types));
    }
    if let Some(v) = &r.disposition
        && let Some(list) = values(fx, n, "disposition", v)
    {
        let mut sels = Vec::new();
        for raw in list {
            let sel = match raw.trim().to_ascii_lowercase().as_str() {
                "answered" => DispositionSel::Outcome(CallOutcome::Answered),
                "missed" => DispositionSel::Outcome(CallOutcome::Missed),
                "failed" => DispositionSel::Outcome(CallOutcome::Failed),
                _ => match Disposition::parse(raw).kind {
                    DispositionKind::Unknown => {
                        fx.err(
                            v.span(),
                            format!(
                                "rule {n:?}: unknown disposition {raw:?}: expected answered, missed, failed or a Ringostat status (NO ANSWER, BUSY, VOICEMAIL, PROPER, …)"
                            ),
                        );
                        continue;
                    }
                    kind => DispositionSel::Kind(kind),
                },
            };
            sels.push(sel);
        }
        matchers.push(Matcher::Disposition(sels));
    }
    if let Some(v) = &r.caller_prefix
        && let Some(list) = values(fx, n, "caller_prefix", v)
    {
        let mut prefixes = Vec::new();
        for raw in list {
            match parse_prefix(raw) {
                Some(p) => prefixes.push(p),
                None => fx.err(
                    v.span(),
                    format!(
                        "rule {n:?}: caller_prefix {raw:?} must be digits with an optional leading + (\"+380 67\")"
                    ),
                ),
            }
        }
        matchers.push(Matcher::CallerPrefix(prefixes));
    }
    for (field, key, value) in [
        (UtmField::Source, "utm_source", &r.utm_source),
        (UtmField::Medium, "utm_medium", &r.utm_medium),
        (UtmField::Campaign, "utm_campaign", &r.utm_campaign),
    ] {
        if let Some(v) = value
            && let Some(list) = values(fx, n, key, v)
        {
            matchers.push(Matcher::Utm(
                field,
                list.iter().map(|s| s.trim().to_owned()).collect(),
            ));
        }
    }
    if let Some(b) = r.customer_exists {
        matchers.push(Matcher::CustomerExists(b));
    }
    if let Some(v) = &r.weekdays
        && let Some(list) = values(fx, n, "weekdays", v)
    {
        let mut mask = 0u8;
        for raw in list {
            match parse_weekdays(raw) {
                Some(m) => mask |= m,
                None => fx.err(
                    v.span(),
                    format!(
                        "rule {n:?}: bad weekdays {raw:?}: expected a day (mon … sun) or a range such as \"mon-fri\""
                    ),
                ),
            }
        }
        matchers.push(Matcher::Weekdays { mask, tz });
    }
    if let Some(v) = &r.hours
        && let Some(list) = values(fx, n, "hours", v)
    {
        let mut windows = Vec::new();
        for raw in list {
            match parse_window(raw) {
                Ok(w) => windows.push(w),
                Err(why) => fx.err(
                    v.span(),
                    format!("rule {n:?}: bad time window {raw:?}: {why}"),
                ),
            }
        }
        matchers.push(Matcher::Hours { windows, tz });
    }

    // Actions.
    let text = |fx: &mut FileCtx<'_>, key: &str, v: &Option<Spanned<String>>| match v {
        Some(s) if s.get_ref().trim().is_empty() => {
            fx.err(s.span(), format!("rule {n:?}: {key} must not be empty"));
            None
        }
        Some(s) => Some(s.get_ref().clone()),
        None => None,
    };
    let order_status = text(fx, "order_status", &r.order_status).map(|s| s.trim().to_owned());
    let forward_to = text(fx, "forward_to", &r.forward_to).map(|s| s.trim().to_owned());
    let task_text = text(fx, "task_text", &r.task_text);
    let lookup_policy = match &r.lookup_policy {
        None => None,
        Some(p) => match p.get_ref().trim().parse::<LookupPolicy>() {
            Ok(policy) => Some(policy),
            Err(e) => {
                fx.err(p.span(), format!("rule {n:?}: {e}"));
                None
            }
        },
    };
    let assign_to = match &r.assign_to {
        None => None,
        Some(id) => {
            let raw = *id.get_ref();
            match u64::try_from(raw).ok().filter(|&v| v > 0).map(ManagerId) {
                None => {
                    fx.err(
                        id.span(),
                        format!("rule {n:?}: assign_to must be a positive CRM user id, got {raw}"),
                    );
                    None
                }
                Some(m) if !opts.known_managers.is_empty() && !opts.known_managers.contains(&m) => {
                    fx.err(
                        id.span(),
                        format!("rule {n:?}: assign_to = {m} is not one of the [[managers]]"),
                    );
                    None
                }
                Some(m) => Some(m),
            }
        }
    };
    let ignore = r.ignore.unwrap_or(false);
    let planner_or_lookup = order_status.is_some()
        || r.create_order.is_some()
        || r.assign_to.is_some()
        || task_text.is_some()
        || r.lookup_policy.is_some()
        || r.forward_to.is_some();
    if ignore && planner_or_lookup {
        fx.err(
            r.name.span(),
            format!("rule {n:?}: ignore = true cannot be combined with other actions"),
        );
    }
    if !ignore && !planner_or_lookup {
        fx.err(
            r.name.span(),
            format!(
                "rule {n:?} has no action: give order_status, create_order, assign_to, lookup_policy, forward_to, task_text or ignore = true"
            ),
        );
    }
    if r.forward_to.is_some() && r.lookup_policy.is_some() {
        fx.err(
            r.name.span(),
            format!("rule {n:?}: forward_to and lookup_policy exclude each other"),
        );
    }
    if r.create_order == Some(false) && r.order_status.is_some() {
        fx.err(
            r.name.span(),
            format!("rule {n:?}: create_order = false leaves no order for order_status"),
        );
    }
    Some(Rule {
        actions: RuleActions {
            name: name.clone(),
            order_status,
            create_order: r.create_order,
            assign_to,
            task_text,
            ignore,
        },
        name,
        file: fx.file.to_owned(),
        line,
        matchers,
        lookup_policy,
        forward_to,
    })
}

/// `+380 67`, `380-67`, `(+380) 67` → `+38067`; `None` when anything but digits remains.
fn parse_prefix(raw: &str) -> Option<String> {
    let compact: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
        .collect();
    let digits = compact.strip_prefix('+').unwrap_or(&compact);
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then(|| format!("+{digits}"))
}

fn parse_day(raw: &str) -> Option<u32> {
    let day: Weekday = raw.trim().parse().ok()?;
    Some(day.num_days_from_monday())
}

/// `"mon"` or `"mon-fri"` (a range may wrap: `"fri-mon"`) → a weekday bit mask.
fn parse_weekdays(raw: &str) -> Option<u8> {
    match raw.split_once('-') {
        None => parse_day(raw).map(|d| 1 << d),
        Some((a, b)) => {
            let (start, end) = (parse_day(a)?, parse_day(b)?);
            let mut mask = 0u8;
            let mut d = start;
            loop {
                mask |= 1 << d;
                if d == end {
                    break;
                }
                d = (d + 1) % 7;
            }
            Some(mask)
        }
    }
}

fn parse_clock(raw: &str, allow_24: bool) -> Option<u16> {
    let (h, m) = raw.trim().split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) if allow_24 => Some(24 * 60),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

/// `"HH:MM-HH:MM"`; the end may be `24:00`; equal ends are refused.
fn parse_window(raw: &str) -> Result<TimeWindow, &'static str> {
    const SHAPE: &str = "expected HH:MM-HH:MM, e.g. \"09:00-18:00\" or \"22:00-08:00\"";
    let (a, b) = raw.split_once('-').ok_or(SHAPE)?;
    let start = parse_clock(a, false).ok_or(SHAPE)?;
    let end = parse_clock(b, true).ok_or(SHAPE)?;
    if start == end % (24 * 60) {
        return Err(
            "start and end are the same time: the window is empty or the whole day (drop hours for all day)",
        );
    }
    Ok(TimeWindow {
        start,
        end: end % (24 * 60),
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::{Value, json};

    use super::*;
    use crate::domain::call::testing::{event, ua};

    fn normalizer() -> PhoneNormalizer {
        PhoneNormalizer::new("UA").expect("UA is a region")
    }

    fn compile_with(files: &[(&str, &str)], managers: &[ManagerId]) -> Result<Rules, RulesError> {
        let n = normalizer();
        let files: Vec<(String, String)> = files
            .iter()
            .map(|(f, t)| ((*f).to_owned(), (*t).to_owned()))
            .collect();
        compile(
            &files,
            &CompileOptions {
                normalizer: &n,
                known_managers: managers,
            },
        )
    }

    fn rules(text: &str) -> Rules {
        compile_with(&[("r.toml", text)], &[]).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The one error of a bad file, as `file:line: message`.
    fn error(text: &str) -> String {
        let e = compile_with(&[("bad.toml", text)], &[]).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        e.to_string()
    }

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn lookup_ctx<'a>(caller: &'a PhoneNumber, dst: Option<&PhoneNumber>) -> MatchContext<'a> {
        MatchContext::for_lookup(Some(caller), dst, None, at(2024, 7, 31, 12, 0))
    }

    fn fired<'r>(rules: &'r Rules, ctx: &MatchContext<'_>) -> Option<&'r str> {
        rules.first_match(ctx).map(|r| r.name.as_str())
    }

    fn call(extra: Value) -> CallEvent {
        let mut base = json!({
            "uniqueid": "c1",
            "calldate": "2024-07-31 14:59:35",
            "caller": "0981234567",
            "dst": "380441112233",
            "call_type": "in",
            "disposition": "ANSWERED",
            "billsec": 30,
        });
        if let (Value::Object(b), Value::Object(e)) = (&mut base, extra) {
            b.extend(e);
        }
        event(base, None)
    }

    #[test]
    fn the_dst_index_fires_the_same_rule_as_testing_every_rule_in_order() {
        // Rules on dst (one number listed twice, two rules sharing a number) interleaved
        // with rules on other fields, so the first match can come from either list.
        let rules = rules(
            r#"
[[rule]]
name = "a: dst 01"
dst = ["+380441110001", "+380441110001"]
caller_prefix = "+38067"
create_order = false
[[rule]]
name = "b: caller 067"
caller_prefix = "+38067"
create_order = false
[[rule]]
name = "c: dst 02"
dst = "+380441110002"
create_order = false
[[rule]]
name = "d: campaign"
utm_campaign = "vip"
create_order = false
[[rule]]
name = "e: dst 01 or 03"
dst = ["+380441110001", "+380441110003"]
create_order = false
[[rule]]
name = "f: everything"
create_order = false
"#,
        );
        let n = |s: &str| PhoneNumber::from_e164(s).unwrap();
        let callers = [n("+380671234567"), n("+380981234567")];
        let dsts = [
            None,
            Some(n("+380441110001")),
            Some(n("+380441110002")),
            Some(n("+380441110003")),
            Some(n("+380449999999")),
        ];
        let mut fired_names = std::collections::BTreeSet::new();
        for caller in &callers {
            for dst in &dsts {
                for campaign in [None, Some("vip")] {
                    let mut ctx = lookup_ctx(caller, dst.as_ref());
                    ctx.utm_campaign = campaign;
                    let linear = rules.all().iter().find(|r| r.matches(&ctx));
                    let indexed = rules.first_match(&ctx);
                    assert_eq!(
                        indexed.map(|r| &r.name),
                        linear.map(|r| &r.name),
                        "caller {caller:?}, dst {dst:?}, campaign {campaign:?}"
                    );
                    fired_names.extend(indexed.map(|r| r.name.clone()));
                }
            }
        }
        // Every rule fired for some call, so the comparison covered both lists.
        assert_eq!(fired_names.len(), 6, "{fired_names:?}");
    }

    // --- errors, each with file:line ---

    #[test]
    fn an_unknown_key_is_an_error_at_its_line() {
        let e = error("[[rule]]\nname = \"a\"\ncreate_order = false\ncolour = \"red\"\n");
        assert!(e.starts_with("bad.toml:4:"), "{e}");
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn a_toml_syntax_error_is_an_error_at_its_line() {
        let e = error("[[rule]]\nname = \"a\"\ncreate_order = fals\n");
        assert!(e.starts_with("bad.toml:3:"), "{e}");
    }

    #[test]
    fn a_bad_number_is_an_error_at_its_line() {
        let e = error("[[rule]]\nname = \"a\"\n\ndst = \"12ab\"\ncreate_order = false\n");
        assert!(e.starts_with("bad.toml:4:"), "{e}");
        assert!(e.contains("not a phone number"), "{e}");
    }

    #[test]
    fn bad_time_windows_are_errors_at_their_line() {
        for bad in ["25:00-08:00", "22:00", "22:00-22:00", "9-18", "09:60-10:00"] {
            let e = error(&format!(
                "[[rule]]\nname = \"a\"\nhours = \"{bad}\"\ncreate_order = false\n"
            ));
            assert!(e.starts_with("bad.toml:3:"), "{bad}: {e}");
            assert!(e.contains("bad time window"), "{bad}: {e}");
        }
        let e = error("[[rule]]\nname = \"a\"\nweekdays = \"mon-funday\"\ncreate_order = false\n");
        assert!(
            e.starts_with("bad.toml:3:") && e.contains("weekdays"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_timezone_is_an_error_at_its_line() {
        let e = error("timezone = \"Europe/Atlantis\"\n[[rule]]\nname = \"a\"\nignore = true\n");
        assert!(e.starts_with("bad.toml:1:"), "{e}");
        assert!(e.contains("unknown timezone"), "{e}");
        let e = error("[[rule]]\nname = \"a\"\nignore = true\ntimezone = \"Kyiv\"\n");
        assert!(e.starts_with("bad.toml:4:"), "{e}");
    }

    #[test]
    fn duplicate_names_are_an_error_naming_both_places() {
        let e = compile_with(
            &[
                ("a.toml", "[[rule]]\nname = \"x\"\nignore = true\n"),
                ("b.toml", "\n[[rule]]\nname = \"x\"\nignore = true\n"),
            ],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "b.toml:3: duplicate rule name \"x\" (first defined at a.toml:2)"
        );
    }

    #[test]
    fn bad_values_and_contradictions_are_refused() {
        let cases = [
            ("assign_to = -3", "positive"),
            ("assign_to = 0", "positive"),
            ("lookup_policy = \"round_robin\"", "unknown lookup policy"),
            ("call_type = \"sideways\"", "unknown call_type"),
            ("disposition = \"HUNG UP\"", "unknown disposition"),
            ("caller_prefix = \"+380 6x\"", "caller_prefix"),
            ("site = []", "must not be empty"),
            ("order_status = \" \"", "must not be empty"),
            ("dst = 380441112233", "a string or a list of strings"),
        ];
        for (line, want) in cases {
            let e = error(&format!(
                "[[rule]]\nname = \"a\"\n{line}\ntask_text = \"t\"\n"
            ));
            assert!(e.starts_with("bad.toml:3:"), "{line}: {e}");
            assert!(e.contains(want), "{line}: {e}");
        }
        for (body, want) in [
            (
                "ignore = true\norder_status = \"cancel\"",
                "cannot be combined",
            ),
            (
                "create_order = false\norder_status = \"cancel\"",
                "leaves no order",
            ),
            (
                "forward_to = \"a\"\nlookup_policy = \"owner\"",
                "exclude each other",
            ),
            ("dst = \"0441112233\"", "has no action"),
        ] {
            let e = error(&format!("[[rule]]\nname = \"a\"\n{body}\n"));
            assert!(e.starts_with("bad.toml:2:"), "{body}: {e}");
            assert!(e.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn assign_to_must_be_a_configured_manager_when_managers_are_configured() {
        let text = "[[rule]]\nname = \"a\"\nassign_to = 99\n";
        assert!(compile_with(&[("r.toml", text)], &[]).is_ok());
        let e = compile_with(&[("r.toml", text)], &[ManagerId(27)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("r.toml:3:") && e.contains("not one of the [[managers]]"),
            "{e}"
        );
    }

    #[test]
    fn every_error_of_every_file_is_reported() {
        let e = compile_with(
            &[
                ("a.toml", "[[rule]]\nname = \"a\"\nbogus = 1\n"),
                (
                    "b.toml",
                    "[[rule]]\nname = \"b\"\nhours = \"x\"\nignore = true\n",
                ),
            ],
            &[],
        )
        .unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
    }

    // --- matchers ---

    #[test]
    fn dst_compares_normalized_numbers() {
        let r = rules("[[rule]]\nname = \"fb\"\ndst = \"044 111 22 99\"\ncreate_order = false\n");
        let caller = ua("0981234567").unwrap();
        let same = ua("+38 (044) 111-22-99").unwrap();
        let other = ua("0441112233").unwrap();
        assert_eq!(fired(&r, &lookup_ctx(&caller, Some(&same))), Some("fb"));
        assert_eq!(fired(&r, &lookup_ctx(&caller, Some(&other))), None);
        assert_eq!(
            fired(&r, &lookup_ctx(&caller, None)),
            None,
            "no dst: no match"
        );
    }

    #[test]
    fn caller_prefix_accepts_written_prefixes() {
        let r = rules(
            "[[rule]]\nname = \"kyivstar\"\ncaller_prefix = [\"+380 67\", \"380 (96)\"]\nignore = true\n",
        );
        let ks = ua("067 111 22 33").unwrap();
        let ks2 = ua("096 111 22 33").unwrap();
        let vf = ua("050 111 22 33").unwrap();
        assert_eq!(fired(&r, &lookup_ctx(&ks, None)), Some("kyivstar"));
        assert_eq!(fired(&r, &lookup_ctx(&ks2, None)), Some("kyivstar"));
        assert_eq!(fired(&r, &lookup_ctx(&vf, None)), None);
    }

    #[test]
    fn event_matchers_read_the_event_and_the_facts() {
        let r = rules(
            r#"
[[rule]]
name = "google vip existing"
site = "shop1"
call_type = "in"
disposition = ["missed", "PROPER"]
utm_source = "Google"
utm_medium = "cpc"
utm_campaign = "vip"
customer_exists = true
assign_to = 27
"#,
        );
        let e = call(
            json!({"disposition": "NO ANSWER", "utm_source": "google", "utm_medium": "cpc", "utm_campaign": "VIP"}),
        );
        let now = at(2024, 7, 31, 12, 0);
        let ctx = MatchContext::for_event(&e, Some("shop1"), Some(true), now);
        assert_eq!(fired(&r, &ctx), Some("google vip existing"));
        // Each matcher on its own can fail the rule.
        let ctx = MatchContext::for_event(&e, Some("shop2"), Some(true), now);
        assert_eq!(fired(&r, &ctx), None, "site");
        let ctx = MatchContext::for_event(&e, Some("shop1"), Some(false), now);
        assert_eq!(fired(&r, &ctx), None, "customer_exists");
        let ctx = MatchContext::for_event(&e, Some("shop1"), None, now);
        assert_eq!(fired(&r, &ctx), None, "customer_exists unknown");
        let answered =
            call(json!({"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "vip"}));
        let ctx = MatchContext::for_event(&answered, Some("shop1"), Some(true), now);
        assert_eq!(
            fired(&r, &ctx),
            None,
            "disposition ANSWERED is neither missed nor PROPER"
        );
        let proper = call(
            json!({"disposition": "proper", "utm_source": "google", "utm_medium": "cpc", "utm_campaign": "vip"}),
        );
        let ctx = MatchContext::for_event(&proper, Some("shop1"), Some(true), now);
        assert_eq!(fired(&r, &ctx), Some("google vip existing"));
        let out = call(
            json!({"call_type": "out", "disposition": "NO ANSWER", "utm_source": "google", "utm_medium": "cpc", "utm_campaign": "vip"}),
        );
        let ctx = MatchContext::for_event(&out, Some("shop1"), Some(true), now);
        assert_eq!(fired(&r, &ctx), None, "call_type");
        let no_utm = call(json!({"disposition": "NO ANSWER"}));
        let ctx = MatchContext::for_event(&no_utm, Some("shop1"), Some(true), now);
        assert_eq!(fired(&r, &ctx), None, "no UTM tags");
    }

    #[test]
    fn the_lookup_context_lacks_disposition_and_customer_existence() {
        let r = rules(
            "[[rule]]\nname = \"missed\"\ndisposition = \"missed\"\nforward_to = \"x\"\n[[rule]]\nname = \"known\"\ncustomer_exists = true\nforward_to = \"y\"\n[[rule]]\nname = \"incoming\"\ncall_type = \"in\"\nforward_to = \"z\"\n",
        );
        let caller = ua("0981234567").unwrap();
        assert_eq!(fired(&r, &lookup_ctx(&caller, None)), Some("incoming"));
    }

    #[test]
    fn windows_cross_midnight_in_the_rules_timezone() {
        let r = rules(
            "timezone = \"Europe/Kyiv\"\n[[rule]]\nname = \"night\"\nhours = \"22:00-08:00\"\nignore = true\n",
        );
        let caller = ua("0981234567").unwrap();
        // Kyiv is UTC+3 in summer: 19:00 UTC = 22:00 local.
        for (h, mi, want) in [
            (18, 59, false),
            (19, 0, true),
            (23, 30, true),
            (4, 59, true),
            (5, 0, false),
            (12, 0, false),
        ] {
            let ctx = MatchContext::for_lookup(Some(&caller), None, None, at(2024, 7, 31, h, mi));
            assert_eq!(r.first_match(&ctx).is_some(), want, "{h:02}:{mi:02} UTC");
        }
        // Winter time (UTC+2): 20:00 UTC = 22:00 local.
        let ctx = MatchContext::for_lookup(Some(&caller), None, None, at(2024, 1, 15, 20, 0));
        assert!(r.first_match(&ctx).is_some());
        let ctx = MatchContext::for_lookup(Some(&caller), None, None, at(2024, 1, 15, 19, 59));
        assert!(r.first_match(&ctx).is_none());
    }

    #[test]
    fn weekdays_are_local_days_and_a_rule_timezone_overrides_the_files() {
        let r = rules(
            "timezone = \"UTC\"\n[[rule]]\nname = \"weekend\"\nweekdays = [\"sat\", \"sun\"]\ntimezone = \"Asia/Tokyo\"\nignore = true\n",
        );
        let caller = ua("0981234567").unwrap();
        // Friday 2024-08-02 16:00 UTC is Saturday 01:00 in Tokyo.
        let ctx = MatchContext::for_lookup(Some(&caller), None, None, at(2024, 8, 2, 16, 0));
        assert!(r.first_match(&ctx).is_some());
        let ctx = MatchContext::for_lookup(Some(&caller), None, None, at(2024, 8, 2, 14, 0));
        assert!(r.first_match(&ctx).is_none());
        assert_eq!(parse_weekdays("fri-mon"), Some(0b111_0001));
        assert_eq!(parse_weekdays("Mon-Fri"), Some(0b001_1111));
    }

    #[test]
    fn an_event_date_with_an_offset_is_an_instant_and_without_one_the_local_time() {
        let r = rules(
            "timezone = \"Europe/Kyiv\"\n[[rule]]\nname = \"night\"\nhours = \"22:00-08:00\"\nignore = true\n",
        );
        let now = at(2024, 7, 31, 12, 0);
        let wall = call(json!({"calldate": "2024-07-31 23:10:00"}));
        assert!(
            r.first_match(&MatchContext::for_event(&wall, None, None, now))
                .is_some()
        );
        // 23:10 in UTC is 02:10 in Kyiv: still night.
        let utc = call(json!({"calldate": "2024-07-31T23:10:00+00:00"}));
        assert!(
            r.first_match(&MatchContext::for_event(&utc, None, None, now))
                .is_some()
        );
        // 12:00 UTC is 15:00 in Kyiv.
        let noon = call(json!({"calldate": "2024-07-31T12:00:00Z"}));
        assert!(
            r.first_match(&MatchContext::for_event(&noon, None, None, now))
                .is_none()
        );
    }

    #[test]
    fn the_first_match_wins_across_files_in_file_name_order() {
        let r = compile_with(
            &[
                ("20-b.toml", "[[rule]]\nname = \"second\"\norder_status = \"new\"\n"),
                (
                    "10-a.toml",
                    "[[rule]]\nname = \"first\"\ncall_type = \"out\"\nignore = true\n[[rule]]\nname = \"also first file\"\ncall_type = \"in\"\norder_status = \"cancel\"\n",
                ),
            ],
            &[],
        )
        .unwrap();
        let names: Vec<&str> = r.all().iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["first", "also first file", "second"]);
        let caller = ua("0981234567").unwrap();
        let ctx = lookup_ctx(&caller, None);
        let rule = r.first_match(&ctx).unwrap();
        assert_eq!(rule.name, "also first file");
        // A planner-only rule shadows the rest in the lookup too, and leaves the policy alone.
        assert_eq!(rule.lookup_override(), LookupOverride::None);
        assert_eq!(
            rule.planner_actions().unwrap().order_status.as_deref(),
            Some("cancel")
        );
    }

    #[test]
    fn lookup_overrides_and_planner_actions() {
        let r = rules(
            "[[rule]]\nname = \"f\"\nutm_campaign = \"a\"\nforward_to = \"sip1\"\nassign_to = 27\n[[rule]]\nname = \"p\"\nutm_campaign = \"b\"\nlookup_policy = \"last_talked\"\n[[rule]]\nname = \"i\"\nutm_campaign = \"c\"\nignore = true\n",
        );
        let f = r.get("f").unwrap();
        assert_eq!(
            f.lookup_override(),
            LookupOverride::Forward {
                destination: "sip1",
                manager: Some(ManagerId(27))
            }
        );
        assert_eq!(f.planner_actions().unwrap().assign_to, Some(ManagerId(27)));
        let p = r.get("p").unwrap();
        assert_eq!(
            p.lookup_override(),
            LookupOverride::Policy(LookupPolicy::LastTalked)
        );
        assert!(
            p.planner_actions().is_none(),
            "lookup-only rules do not touch the plan"
        );
        let i = r.get("i").unwrap();
        assert_eq!(i.lookup_override(), LookupOverride::Nobody);
        assert!(i.planner_actions().unwrap().ignore);
    }

    #[test]
    fn explain_says_why_each_rule_above_did_not_match() {
        let r = rules(
            "[[rule]]\nname = \"fb\"\ndst = \"0441112299\"\ncreate_order = false\n[[rule]]\nname = \"vip\"\nutm_campaign = \"vip\"\ncustomer_exists = true\nassign_to = 27\n[[rule]]\nname = \"all\"\norder_status = \"new\"\n[[rule]]\nname = \"never reached\"\nignore = true\n",
        );
        let e = call(json!({"utm_campaign": "summer"}));
        let ctx = MatchContext::for_event(&e, None, None, at(2024, 7, 31, 12, 0));
        let x = r.explain(&ctx);
        assert_eq!(x.fired, Some(2));
        assert_eq!(x.verdicts.len(), 3);
        assert_eq!(
            x.verdicts[0].misses,
            ["dst: +380441112233 is not +380441112299"]
        );
        assert_eq!(
            x.verdicts[1].misses,
            [
                "utm_campaign: summer is not vip",
                "customer_exists: the call has no customer_exists (wanted true)"
            ]
        );
        assert!(x.verdicts[2].matched);
    }

    #[test]
    fn two_hundred_rules_load_and_the_one_that_matches_fires_after_the_others_are_tried() {
        // Not a timing test (those live in load-tests/): 200 rules, each for its own tracking
        // line; a call to the last one's line walks all 200 and fires exactly that one, and a
        // call to no rule's line walks all 200 and fires none.
        let mut text = String::from("timezone = \"Europe/Kyiv\"\n");
        for i in 0..200 {
            text.push_str(&format!(
                "[[rule]]\nname = \"r{i}\"\ndst = \"+3804411{i:05}\"\nhours = \"09:00-18:00\"\nforward_to = \"s{i}\"\n"
            ));
        }
        let r = rules(&text);
        assert_eq!(r.len(), 200);
        let names: Vec<String> = (0..200).map(|i| format!("r{i}")).collect();
        assert_eq!(
            r.all().iter().map(|r| &r.name).collect::<Vec<_>>(),
            names.iter().collect::<Vec<_>>()
        );
        let caller = ua("0981234567").unwrap();
        let at_nine = at(2024, 7, 31, 9, 0);

        let last_line = ua("+380441100199").unwrap();
        let ctx = MatchContext::for_lookup(Some(&caller), Some(&last_line), None, at_nine);
        assert_eq!(fired(&r, &ctx), Some("r199"));
        assert_eq!(
            r.first_match(&ctx).map(|rule| rule.lookup_override()),
            Some(LookupOverride::Forward {
                destination: "s199",
                manager: None
            })
        );
        let x = r.explain(&ctx);
        assert_eq!(x.fired, Some(199));
        assert_eq!(
            x.verdicts.len(),
            200,
            "every rule up to the match was tried"
        );
        for (i, v) in x.verdicts[..199].iter().enumerate() {
            assert_eq!(v.name, format!("r{i}"));
            assert!(!v.matched, "{v:?}");
            assert_eq!(
                v.misses,
                [format!("dst: +380441100199 is not +3804411{i:05}")],
                "r{i} was tried and missed on its line only"
            );
        }
        assert!(x.verdicts[199].matched && x.verdicts[199].misses.is_empty());

        let no_rules_line = ua("+380441100200").unwrap();
        let ctx = MatchContext::for_lookup(Some(&caller), Some(&no_rules_line), None, at_nine);
        assert_eq!(fired(&r, &ctx), None);
        let x = r.explain(&ctx);
        assert_eq!(x.fired, None);
        assert_eq!(x.verdicts.len(), 200);
        assert!(x.verdicts.iter().all(|v| !v.matched && v.misses.len() == 1));
    }

    // --- the shipped examples ---

    /// Every `*.toml` under `routing-rules/` (recursively), as `(path, text)`.
    fn shipped() -> Vec<(String, String)> {
        fn walk(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "toml") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    out.push((path.display().to_string(), text));
                }
            }
        }
        let mut out = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("routing-rules"),
            &mut out,
        );
        out
    }

    #[test]
    fn every_shipped_rules_file_parses_with_and_without_managers() {
        let files = shipped();
        assert!(files.len() >= 4, "{files:?}");
        for file in &files {
            let one = std::slice::from_ref(file);
            let n = normalizer();
            for managers in [&[][..], &[ManagerId(1), ManagerId(27), ManagerId(28)][..]] {
                let opts = CompileOptions {
                    normalizer: &n,
                    known_managers: managers,
                };
                compile(one, &opts).unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }

    #[test]
    fn each_example_rule_fires_on_its_example_event_and_no_other_rule_matches_it() {
        let n = normalizer();
        let opts = CompileOptions {
            normalizer: &n,
            known_managers: &[],
        };
        let r = compile(&shipped(), &opts).unwrap_or_else(|e| panic!("{e}"));
        // Kyiv summer time is UTC+3; 2024-07-31 is a Wednesday, 2024-08-03 a Saturday.
        let daytime = "2024-07-31 14:00:00";
        let cases: Vec<(&str, Value, Option<&str>)> = vec![
            (
                "feedback line: no order",
                json!({"dst": "380441112299", "calldate": daytime}),
                None,
            ),
            (
                "complaints line: order starts cancelled",
                json!({"dst": "+380441112298", "calldate": daytime}),
                None,
            ),
            (
                "vip campaign to Alina",
                json!({"utm_campaign": "vip", "calldate": daytime}),
                None,
            ),
            (
                "missed at night",
                json!({"disposition": "NO ANSWER", "billsec": 0, "calldate": "2024-07-31 22:15:00"}),
                None,
            ),
            (
                "missed at the weekend",
                json!({"disposition": "BUSY", "billsec": 0, "calldate": "2024-08-03 12:00:00"}),
                None,
            ),
            (
                "wholesale: pure distribution",
                json!({"calldate": daytime}),
                Some("wholesale"),
            ),
            (
                "boutique: always the owner",
                json!({"calldate": daytime}),
                Some("boutique"),
            ),
        ];
        assert_eq!(cases.len(), r.len(), "one example event per shipped rule");
        let now = at(2024, 7, 31, 12, 0);
        for (name, extra, site) in &cases {
            let e = call(extra.clone());
            let ctx = MatchContext::for_event(&e, *site, Some(false), now);
            let matching: Vec<&str> = r
                .all()
                .iter()
                .filter(|rule| rule.matches(&ctx))
                .map(|rule| rule.name.as_str())
                .collect();
            assert_eq!(matching, [*name], "{extra}");
        }
        // The neighbours of each: an ordinary daytime answered call from shop1 fires nothing,
        // and near misses stay misses.
        let near_misses = [
            json!({"dst": "380441112297", "calldate": daytime}),
            json!({"utm_campaign": "vip2", "calldate": daytime}),
            json!({"disposition": "NO ANSWER", "billsec": 0, "calldate": "2024-07-31 19:59:00"}),
            json!({"disposition": "NO ANSWER", "billsec": 0, "calldate": "2024-08-01 09:00:00"}),
            json!({"call_type": "out", "disposition": "NO ANSWER", "billsec": 0, "calldate": "2024-07-31 23:00:00"}),
            json!({"disposition": "ANSWERED", "calldate": "2024-08-03 12:00:00"}),
        ];
        for extra in near_misses {
            let e = call(extra.clone());
            let ctx = MatchContext::for_event(&e, Some("shop1"), Some(false), now);
            assert_eq!(fired(&r, &ctx), None, "{extra}");
        }
        // The VIP rule also answers the lookup directly.
        let caller = ua("0981234567").unwrap();
        let mut ctx = lookup_ctx(&caller, None);
        ctx.utm_campaign = Some("vip");
        let rule = r.first_match(&ctx).unwrap();
        assert_eq!(
            rule.lookup_override(),
            LookupOverride::Forward {
                destination: "shop_alina",
                manager: Some(ManagerId(27))
            }
        );
    }
}
