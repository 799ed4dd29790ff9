//! The routing-rules parser (SPEC §5): arbitrary text, and well-formed TOML with arbitrary
//! values in the rule fields, never panics compilation; rules that compile never panic
//! matching, explaining or describing, whatever the call looks like.

use callgate::domain::{
    manager::ManagerId,
    phone_number::{PhoneNormalizer, PhoneNumber},
    rules::{CompileOptions, MatchContext, Rules, compile},
};
use chrono::{DateTime, Utc};
use proptest::prelude::*;

use crate::{cases, json};

/// The fields of a `[[rule]]` table (and the file's own `timezone`).
const FIELDS: &[&str] = &[
    "name",
    "dst",
    "site",
    "call_type",
    "disposition",
    "caller_prefix",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "customer_exists",
    "weekdays",
    "hours",
    "timezone",
    "order_status",
    "create_order",
    "assign_to",
    "lookup_policy",
    "forward_to",
    "task_text",
    "ignore",
];

/// Values that are almost right for some field.
const NEAR: &[&str] = &[
    "mon-fri",
    "fri-mon",
    "sun",
    "пн",
    "09:00-18:00",
    "22:00-08:00",
    "24:00-25:61",
    "9-5",
    "Europe/Kyiv",
    "Europe/Київ",
    "in",
    "callback",
    "answered",
    "NO ANSWER",
    "owner",
    "last_talked",
    "+380",
    "380",
    "+38 (044) 111-22-99",
    "Скрытый номер",
    "{phone}",
    "{",
    "shop_alina",
    "",
    " ",
    "-",
    ":",
    "00:00-00:00",
    "23:59-00:00",
];

fn toml_value() -> impl Strategy<Value = toml::Value> {
    let scalar = prop_oneof![
        3 => json::text().prop_map(toml::Value::String),
        2 => prop::sample::select(NEAR).prop_map(|s| toml::Value::String(s.to_owned())),
        1 => any::<i64>().prop_map(toml::Value::Integer),
        1 => any::<bool>().prop_map(toml::Value::Boolean),
        1 => any::<f64>().prop_map(toml::Value::Float),
    ];
    prop_oneof![
        4 => scalar.clone(),
        1 => prop::collection::vec(scalar, 0..4).prop_map(toml::Value::Array),
    ]
}

fn rule_table() -> impl Strategy<Value = toml::Table> {
    prop::collection::vec(
        (
            prop_oneof![9 => prop::sample::select(FIELDS).prop_map(str::to_owned), 1 => any::<String>()],
            toml_value(),
        ),
        0..8,
    )
    .prop_map(|pairs| pairs.into_iter().collect())
}

/// A rules file: well-formed TOML with arbitrary values, the same cut or spliced at random,
/// or any text at all.
fn file_text() -> impl Strategy<Value = String> {
    let well_formed = (
        prop::option::of(toml_value()),
        prop::collection::vec(rule_table(), 0..4),
    )
        .prop_map(|(timezone, rules)| {
            let mut file = toml::Table::new();
            if let Some(tz) = timezone {
                file.insert("timezone".to_owned(), tz);
            }
            let rules = rules.into_iter().map(toml::Value::Table).collect();
            file.insert("rule".to_owned(), toml::Value::Array(rules));
            toml::to_string(&file).unwrap_or_default()
        })
        .boxed();
    prop_oneof![
        4 => well_formed.clone(),
        2 => (well_formed, any::<prop::sample::Index>(), json::text()).prop_map(|(text, at, insert)| {
            let cut = at.index(text.len() + 1);
            let cut = (0..=cut).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
            format!("{}{insert}", &text[..cut])
        }),
        1 => any::<String>(),
    ]
}

/// What a call can look like to the rules.
#[derive(Debug, Clone)]
struct Call {
    caller: String,
    dst: String,
    site: Option<String>,
    utm: [Option<String>; 3],
    at: i64,
}

fn call() -> impl Strategy<Value = Call> {
    (
        prop_oneof![Just("+380501234567".to_owned()), json::phoneish()],
        prop_oneof![Just("+380441112299".to_owned()), json::phoneish()],
        prop::option::of(prop_oneof![Just("shop1".to_owned()), json::text()]),
        [
            prop::option::of(json::text()),
            prop::option::of(json::text()),
            prop::option::of(json::text()),
        ],
        -62_000_000_000i64..250_000_000_000,
    )
        .prop_map(|(caller, dst, site, utm, at)| Call {
            caller,
            dst,
            site,
            utm,
            at,
        })
}

fn evaluate(rules: &Rules, call: &Call, normalizer: &PhoneNormalizer) {
    let caller: Option<PhoneNumber> = normalizer.parse(&call.caller).ok().map(|p| p.number);
    let dst: Option<PhoneNumber> = normalizer.parse(&call.dst).ok().map(|p| p.number);
    let now = DateTime::<Utc>::from_timestamp(call.at, 0).unwrap_or_else(Utc::now);
    let mut ctx =
        MatchContext::for_lookup(caller.as_ref(), dst.as_ref(), call.site.as_deref(), now);
    ctx.utm_source = call.utm[0].as_deref();
    ctx.utm_medium = call.utm[1].as_deref();
    ctx.utm_campaign = call.utm[2].as_deref();
    if let Some(rule) = rules.first_match(&ctx) {
        let _ = (
            rule.lookup_override(),
            rule.planner_actions(),
            rule.describe_actions(),
        );
    }
    let _ = rules.explain(&ctx);
    let _ = (rules.needs_dst(), rules.needs_site(), rules.len());
}

proptest! {
    #![proptest_config(cases(250))]

    #[test]
    fn no_rules_text_panics_compilation_or_matching(
        files in prop::collection::vec((any::<String>(), file_text()), 1..3),
        known in prop::collection::vec(0u64..40, 0..3),
        calls in prop::collection::vec(call(), 1..4),
    ) {
        let files: Vec<(String, String)> = files
            .into_iter()
            .enumerate()
            .map(|(i, (name, text))| (format!("{i:02}-{name}"), text))
            .collect();
        let normalizer = PhoneNormalizer::new("UA").expect("UA is known");
        let known: Vec<ManagerId> = known.into_iter().map(ManagerId).collect();
        let opts = CompileOptions { normalizer: &normalizer, known_managers: &known };
        match compile(&files, &opts) {
            Ok(rules) => {
                for call in &calls {
                    evaluate(&rules, call, &normalizer);
                }
            }
            Err(errors) => {
                // Every problem names a file and a line within it.
                for e in &errors.0 {
                    let text = &files.iter().find(|(name, _)| *name == e.file).expect("a given file").1;
                    prop_assert!(e.line >= 1 && e.line <= text.lines().count().max(1) + 1, "{e:?}");
                }
                let _ = errors.to_string();
            }
        }
    }
}
