//! The rule files: the raw TOML form, and compiling it into [`Rules`] with every problem
//! reported as `file:line` (validation).

use std::{collections::HashMap, fmt, ops::Range};

use chrono::Weekday;
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, de};
use toml::Spanned;

use super::*;
use crate::domain::{
    call::{CallOutcome, CallType, Disposition, DispositionKind},
    lookup::LookupPolicy,
    manager::ManagerId,
    phone_number::PhoneNormalizer,
    plan::RuleActions,
};

// === The raw (wire) form ===

/// One string or a list of strings.
#[derive(Debug, Clone)]
pub(super) struct OneOrMany(Vec<String>);

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
pub(super) struct RawFile {
    pub(super) timezone: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) rule: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub(super) name: Spanned<String>,
    // Matchers.
    pub(super) dst: Option<Spanned<OneOrMany>>,
    pub(super) site: Option<Spanned<OneOrMany>>,
    pub(super) call_type: Option<Spanned<OneOrMany>>,
    pub(super) disposition: Option<Spanned<OneOrMany>>,
    pub(super) caller_prefix: Option<Spanned<OneOrMany>>,
    pub(super) utm_source: Option<Spanned<OneOrMany>>,
    pub(super) utm_medium: Option<Spanned<OneOrMany>>,
    pub(super) utm_campaign: Option<Spanned<OneOrMany>>,
    pub(super) customer_exists: Option<bool>,
    pub(super) weekdays: Option<Spanned<OneOrMany>>,
    pub(super) hours: Option<Spanned<OneOrMany>>,
    pub(super) timezone: Option<Spanned<String>>,
    // Actions.
    pub(super) order_status: Option<Spanned<String>>,
    pub(super) create_order: Option<bool>,
    pub(super) assign_to: Option<Spanned<i64>>,
    pub(super) lookup_policy: Option<Spanned<String>>,
    pub(super) forward_to: Option<Spanned<String>>,
    pub(super) task_text: Option<Spanned<String>>,
    pub(super) ignore: Option<bool>,
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

pub(super) struct FileCtx<'a> {
    pub(super) file: &'a str,
    pub(super) text: &'a str,
    pub(super) errors: &'a mut Vec<RuleError>,
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

pub(super) fn parse_tz(fx: &mut FileCtx<'_>, tz: &Spanned<String>) -> Option<Tz> {
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
pub(super) fn values<'r>(
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
pub(super) fn compile_rule(
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
            match CallType::parse(raw) {
                Some(t) => types.push(t),
                None => fx.err(
                    v.span(),
                    format!(
                        "rule {n:?}: unknown call_type {raw:?}: expected {}",
                        CallType::EXPECTED
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
pub(super) fn parse_prefix(raw: &str) -> Option<String> {
    let compact: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
        .collect();
    let digits = compact.strip_prefix('+').unwrap_or(&compact);
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then(|| format!("+{digits}"))
}

pub(super) fn parse_day(raw: &str) -> Option<u32> {
    let day: Weekday = raw.trim().parse().ok()?;
    Some(day.num_days_from_monday())
}

/// `"mon"` or `"mon-fri"` (a range may wrap: `"fri-mon"`) → a weekday bit mask.
pub(super) fn parse_weekdays(raw: &str) -> Option<u8> {
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

pub(super) fn parse_clock(raw: &str, allow_24: bool) -> Option<u16> {
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
pub(super) fn parse_window(raw: &str) -> Result<TimeWindow, &'static str> {
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
