//! The phone parser (SPEC §2): no input panics it, and a number it accepts normalizes to
//! itself (E.164 and the packed form round-trip).
#![no_main]

use std::sync::LazyLock;

use callgate::domain::phone_number::{PhoneNormalizer, PhoneNumber, RegionCode};
use libfuzzer_sys::fuzz_target;

static UA: LazyLock<PhoneNormalizer> = LazyLock::new(|| PhoneNormalizer::new("UA").unwrap());

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = UA.parse(input) {
        let e164 = parsed.number.e164();
        let again = UA.parse(e164).expect("an accepted number parses again");
        assert_eq!(again.number, parsed.number, "not idempotent: {input:?}");
        assert_eq!(PhoneNumber::from_e164(e164).ok(), Some(parsed.number.clone()));
        assert_eq!(
            PhoneNumber::from_u64(parsed.number.as_u64()).ok(),
            Some(parsed.number.clone())
        );
    }
    let _ = PhoneNumber::from_e164(input);
    let _ = RegionCode::parse(input);
});
