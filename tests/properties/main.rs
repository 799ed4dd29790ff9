//! Property tests (proptest) over arbitrary Unicode strings and JSON values: the phone
//! parser, the webhook payload in its four layouts, the lookup's input and the routing-rules
//! parser never panic, and normalization is idempotent and format-blind (issue 14, SPEC §2,
//! §3, §4, §5). Case counts are kept moderate (`PROPTEST_CASES` raises them for a long run);
//! the cargo-fuzz targets in `fuzz/` explore the same parsers for longer.

mod json;
mod lookup;
mod payload;
mod phone;
mod rules;

/// The case count of one property: `default`, or `PROPTEST_CASES` when that is set.
pub fn cases(default: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    proptest::test_runner::Config {
        cases,
        // A failure is reported with its minimal input; no regression files are written
        // into the source tree (each fixed failure gets a unit test instead).
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}
