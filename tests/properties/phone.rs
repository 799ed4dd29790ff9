//! The phone parser (SPEC §2): no input panics it; a number it accepts normalizes to itself;
//! every way of writing a valid number gives the one E.164.

use std::sync::LazyLock;

use callgate::domain::phone_number::{PhoneNormalizer, PhoneNumber, RegionCode};
use proptest::prelude::*;
use rlibphonenumber::{PHONE_NUMBER_UTIL, PhoneNumberFormat};

use crate::{cases, json};

static UA: LazyLock<PhoneNormalizer> =
    LazyLock::new(|| PhoneNormalizer::new("UA").expect("UA is known"));

/// A valid number of the reference corpus, with a region whose country code it has.
#[derive(Debug, Clone)]
struct Valid {
    e164: String,
    region: RegionCode,
    /// The national form as libphonenumber prints it (trunk prefix included).
    national: String,
    /// Whether the digits with the country code but without `+` are unambiguous in
    /// `region`: not also a valid national number there (`4915123404209` is one in DE,
    /// so there it stays a national number, as in the reference libphonenumber).
    bare_unambiguous: bool,
}

/// The corpus rows whose expected number is valid and belongs to the row's region.
static VALID: LazyLock<Vec<Valid>> = LazyLock::new(|| {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/phone-corpus.tsv");
    let corpus = std::fs::read_to_string(path).expect("the phone corpus is readable");
    let mut valid = Vec::new();
    for line in corpus.lines().skip(1) {
        let fields: Vec<&str> = line.split('\t').collect();
        let [_, region, expected] = fields[..] else {
            continue;
        };
        let Ok(region) = RegionCode::parse(region) else {
            continue;
        };
        let Ok(number) = PhoneNumber::from_e164(expected) else {
            continue;
        };
        if number.country_calling_code().map(i32::from) != Some(region.country_calling_code()) {
            continue;
        }
        let Ok(parsed) = PHONE_NUMBER_UTIL.parse(expected, None) else {
            continue;
        };
        let national = parsed.format_as(PhoneNumberFormat::National).to_string();
        let as_national = format!("+{}{}", region.country_calling_code(), &expected[1..]);
        let bare_unambiguous = PHONE_NUMBER_UTIL
            .parse(&as_national, None)
            .map_or(true, |n| !n.is_valid());
        valid.push(Valid {
            e164: expected.to_owned(),
            region,
            national,
            bare_unambiguous,
        });
    }
    assert!(valid.len() > 1000, "only {} valid corpus rows", valid.len());
    valid
});

fn valid() -> impl Strategy<Value = Valid> {
    (0..VALID.len()).prop_map(|i| VALID[i].clone())
}

/// `digits` regrouped at random points, joined by separators a human would type.
fn regrouped(digits: String) -> impl Strategy<Value = String> {
    let n = digits.len();
    (
        prop::collection::vec((any::<bool>(), 0..4usize), n),
        any::<bool>(),
        1..4usize,
    )
        .prop_map(move |(cuts, parens, head)| {
            const SEPARATORS: [&str; 4] = [" ", "-", ".", " - "];
            let mut out = String::new();
            let head = head.min(n);
            for (i, (c, (cut, sep))) in digits.chars().zip(cuts.iter().copied()).enumerate() {
                if parens && i == 0 {
                    out.push('(');
                }
                out.push(c);
                if parens && i + 1 == head {
                    out.push_str(") ");
                } else if cut && i + 1 < n {
                    out.push_str(SEPARATORS[sep]);
                }
            }
            out
        })
}

fn digits_of(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// A valid number written in one of the ways SPEC §2 accepts, with the region to read it in.
fn written(valid: Valid) -> impl Strategy<Value = (Valid, String, RegionCode)> {
    let cc_nsn = digits_of(&valid.e164);
    let national = digits_of(&valid.national);
    let region = valid.region;
    let ua = UA.region();
    let mut ways = vec![
        // National, in the number's own region.
        regrouped(national).prop_map(move |s| (s, region)).boxed(),
        // International with `+`, in any region.
        regrouped(cc_nsn.clone())
            .prop_map(move |s| (format!("+{s}"), ua))
            .boxed(),
        regrouped(cc_nsn.clone())
            .prop_map(move |s| (format!("+ {s}"), region))
            .boxed(),
        // `00` prefix (the IDD of the default region).
        regrouped(cc_nsn.clone())
            .prop_map(move |s| (format!("00{s}"), ua))
            .boxed(),
    ];
    if valid.bare_unambiguous {
        // International without `+`, in the number's own region.
        ways.push(regrouped(cc_nsn).prop_map(move |s| (s, region)).boxed());
    }
    prop::strategy::Union::new(ways).prop_map(move |(s, region)| (valid.clone(), s, region))
}

proptest! {
    #![proptest_config(cases(500))]

    #[test]
    fn no_string_panics_the_parser_and_what_it_accepts_normalizes_to_itself(input in json::text()) {
        if let Ok(parsed) = UA.parse(&input) {
            let e164 = parsed.number.e164();
            prop_assert!(e164.starts_with('+'), "{input:?} -> {e164}");
            let again = UA.parse(e164).ok().map(|p| p.number);
            prop_assert_eq!(again, Some(parsed.number.clone()), "{:?}", input);
            prop_assert_eq!(PhoneNumber::from_e164(e164).ok(), Some(parsed.number.clone()));
            // The packed form round-trips too (the owner index keys on it).
            let unpacked = PhoneNumber::from_u64(parsed.number.as_u64()).ok();
            prop_assert_eq!(unpacked, Some(parsed.number.clone()));
            prop_assert!(!parsed.number.masked().contains(parsed.number.digits()));
        }
        // The other entry points read outside data as well.
        let _ = PhoneNumber::from_e164(&input);
        let _ = RegionCode::parse(&input);
    }
}

proptest! {
    #![proptest_config(cases(300))]

    #[test]
    fn every_way_of_writing_a_valid_number_gives_its_one_e164(
        (valid, input, region) in valid().prop_flat_map(written)
    ) {
        let parsed = UA.parse_in(&input, region);
        prop_assert_eq!(
            parsed.as_ref().map(|p| p.number.e164()),
            Ok(valid.e164.as_str()),
            "{:?} in {}", input, region
        );
    }
}
