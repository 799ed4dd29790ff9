//! The compiled form: matchers, rules, the rule set with its `dst` index, and the
//! explanation `rules explain` prints.

use std::fmt;

use chrono::Weekday;
use chrono_tz::Tz;

use super::*;
use crate::domain::{
    call::{CallOutcome, CallType, DispositionKind},
    lookup::LookupPolicy,
    manager::ManagerId,
    plan::RuleActions,
};

// === Compiled form ===

/// Which UTM tag a matcher reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UtmField {
    Source,
    Medium,
    Campaign,
}

/// A `disposition` matcher value: a coarse group or one exact Ringostat status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DispositionSel {
    Outcome(CallOutcome),
    Kind(DispositionKind),
}

/// `[start, end)` in minutes since local midnight; `start > end` crosses midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TimeWindow {
    pub(super) start: u16,
    pub(super) end: u16,
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
pub(super) enum Matcher {
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
            Matcher::CallType(t) => list(t.iter().map(|t| t.as_str().to_owned()).collect()),
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
            Matcher::CallType(_) => ctx.call_type.map(|t| t.as_str().to_owned()),
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

pub(super) const WEEKDAYS: [Weekday; 7] = [
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
    pub(super) matchers: Vec<Matcher>,
    /// The planner-facing actions (also `name` and `ignore`).
    pub(super) actions: RuleActions,
    pub(super) lookup_policy: Option<LookupPolicy>,
    pub(super) forward_to: Option<String>,
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
    pub(super) rules: Vec<Rule>,
    pub(super) files: usize,
    /// Some rule matches on `site`: a lookup without one derives it from `dst`.
    pub(super) needs_site: bool,
    pub(super) index: DstIndex,
}

/// Which rules can match a call's `dst`. A shop writes many rules per tracking number; a rule
/// with a `dst` matcher is only a candidate for the numbers it lists, so a call is tested
/// against those and the rules without a `dst` matcher, in file order, and skips the rest.
#[derive(Debug, Clone, Default)]
pub(super) struct DstIndex {
    /// Positions of the rules listing each number, ascending.
    pub(super) by_dst: std::collections::HashMap<u64, Vec<usize>>,
    /// Positions of the rules without a `dst` matcher, ascending.
    pub(super) any_dst: Vec<usize>,
}

impl DstIndex {
    pub(super) fn new(rules: &[Rule]) -> Self {
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
