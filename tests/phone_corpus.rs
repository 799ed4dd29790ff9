//! SPEC §2: every row of `tests/data/phone-corpus.tsv` (input, default region, expected
//! E.164 or `ERROR`; generated with the reference libphonenumber) must normalize as listed.
//! `ERROR` means "no number": a parse error or a number libphonenumber finds invalid.

use callgate::domain::phone_number::{PhoneNormalizer, RegionCode};

#[test]
fn every_corpus_row_normalizes_as_the_reference_library_says() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/phone-corpus.tsv");
    let corpus = std::fs::read_to_string(path).expect("Failed to read the phone corpus.");
    let normalizer = PhoneNormalizer::new("UA").expect("UA is a known region");

    let mut rows = 0;
    let mut failures = Vec::new();
    for (line_no, line) in corpus.lines().enumerate().skip(1) {
        let mut fields = line.split('\t');
        let (Some(input), Some(region), Some(expected), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            panic!(
                "line {}: expected 3 tab-separated fields: {line:?}",
                line_no + 1
            );
        };
        rows += 1;
        let region = RegionCode::parse(region).expect("corpus regions are known");
        let actual = match normalizer.parse_in(input, region) {
            Ok(parsed) => parsed.number.e164().to_owned(),
            Err(e) => format!("ERROR ({e})"),
        };
        let ok = if expected == "ERROR" {
            actual.starts_with("ERROR")
        } else {
            actual == expected
        };
        if !ok {
            failures.push(format!(
                "line {}: {input:?} in {region}: expected {expected}, got {actual}",
                line_no + 1
            ));
        }
    }

    assert_eq!(rows, 3064, "the corpus lost or gained rows");
    assert!(
        failures.is_empty(),
        "{} of {rows} corpus rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
