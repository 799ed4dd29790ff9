use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};

use super::*;
use crate::domain::{
    call::{
        CallEvent, CallType,
        testing::{event, ua},
    },
    lookup::LookupPolicy,
    manager::ManagerId,
    phone_number::{PhoneNormalizer, PhoneNumber},
};

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
fn rules_accept_every_call_type_a_webhook_accepts_and_match_it() {
    // `transit_in` was accepted from webhooks but refused in rules.
    let now = at(2024, 7, 31, 12, 0);
    let spellings = CallType::SPELLINGS.iter().map(|(s, _)| *s);
    for spelling in spellings.chain(["transit_in", "TransitOut", " Incoming "]) {
        let webhook = call(json!({ "call_type": spelling }));
        let r = rules(&format!(
            "[[rule]]\nname = \"typed\"\ncall_type = {spelling:?}\nignore = true\n"
        ));
        let ctx = MatchContext::for_event(&webhook, Some("shop1"), Some(true), now);
        assert_eq!(fired(&r, &ctx), Some("typed"), "{spelling:?}");
    }
    let transit = call(json!({ "call_type": "transitin" }));
    let r = rules("[[rule]]\nname = \"out\"\ncall_type = \"out\"\nignore = true\n");
    let ctx = MatchContext::for_event(&transit, Some("shop1"), Some(true), now);
    assert_eq!(fired(&r, &ctx), None, "transitin is not out");
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
