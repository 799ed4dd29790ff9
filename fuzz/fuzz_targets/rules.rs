//! The routing-rules parser (SPEC §5): any text compiles or is refused with file:line, never
//! a panic; rules that compile match, explain and describe any call without panicking.
#![no_main]

use std::sync::LazyLock;

use callgate::domain::{
    manager::ManagerId,
    phone_number::PhoneNormalizer,
    rules::{CompileOptions, MatchContext, compile},
};
use libfuzzer_sys::fuzz_target;

static UA: LazyLock<PhoneNormalizer> = LazyLock::new(|| PhoneNormalizer::new("UA").unwrap());

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let files = vec![("10-fuzz.toml".to_owned(), text.to_owned())];
    let known = [ManagerId(27), ManagerId(28)];
    let opts = CompileOptions {
        normalizer: &UA,
        known_managers: &known,
    };
    let Ok(rules) = compile(&files, &opts) else {
        return;
    };
    let caller = UA.parse("+380501234567").unwrap().number;
    let dst = UA.parse("+380441112299").unwrap().number;
    for (site, utm) in [(Some("shop1"), Some("google")), (None, Some(text)), (Some(text), None)] {
        let mut ctx =
            MatchContext::for_lookup(Some(&caller), Some(&dst), site, chrono::Utc::now());
        ctx.utm_source = utm;
        ctx.utm_campaign = utm;
        if let Some(rule) = rules.first_match(&ctx) {
            let _ = (rule.lookup_override(), rule.planner_actions(), rule.describe_actions());
        }
        let _ = rules.explain(&ctx);
    }
});
