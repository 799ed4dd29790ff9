//! Cost of evaluating routing rules on the lookup's hot path: 200 rules, none matching (the
//! worst case: every rule is tried), measured per lookup context. Not a test; run with
//! `cargo run --release --example rules_bench`.

use std::time::Instant;

use callgate::domain::{
    phone_number::PhoneNormalizer,
    rules::{CompileOptions, MatchContext, compile},
};

fn main() {
    let normalizer = PhoneNormalizer::new("UA").expect("UA is a region");
    let mut text = String::from("timezone = \"Europe/Kyiv\"\n");
    for i in 0..200 {
        // A mix of matcher kinds; the time window is evaluated only when the others match.
        text.push_str(&format!(
            "[[rule]]\nname = \"r{i}\"\ndst = \"+3804411{i:05}\"\nutm_campaign = \"c{i}\"\ncaller_prefix = \"+38067\"\nhours = \"09:00-18:00\"\nforward_to = \"s{i}\"\n"
        ));
    }
    let rules = compile(
        &[("bench.toml".to_owned(), text)],
        &CompileOptions {
            normalizer: &normalizer,
            known_managers: &[],
        },
    )
    .expect("rules compile");
    let caller = normalizer.parse("0981234567").expect("number").number;
    let dst = normalizer.parse("0441234567").expect("number").number;
    let n = 1_000_000u32;
    let started = Instant::now();
    let mut hits = 0u32;
    for _ in 0..n {
        let mut ctx =
            MatchContext::for_lookup(Some(&caller), Some(&dst), Some("shop1"), chrono::Utc::now());
        ctx.utm_campaign = Some("summer");
        hits += u32::from(rules.first_match(std::hint::black_box(&ctx)).is_some());
    }
    let per = started.elapsed() / n;
    println!("200 rules, no match: {per:?} per lookup (hits {hits})");
}
