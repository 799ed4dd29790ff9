//! Phone numbers in canonical E.164 form (SPEC §2).
//!
//! # Design
//!
//! * [`PhoneNormalizer`] turns free-form input (caller IDs from Ringostat, phones typed into
//!   retailCRM by hand) into a [`ParsedPhone`]: a canonical [`PhoneNumber`] plus an optional
//!   extension kept apart. It is the only place that *interprets* input; everything else
//!   compares canonical strings, so "the same number" means "the same E.164 string".
//! * Parsing and validation are delegated to `rlibphonenumber` (a port of Google's
//!   libphonenumber). A result is accepted only if libphonenumber says it `is_valid()`;
//!   `../shared/phone-corpus.tsv`, generated with the reference library, marks everything
//!   else `ERROR` (parse errors *and* parseable-but-invalid numbers alike).
//! * callgate adds two rules of its own, each tried only after libphonenumber found the
//!   input not to be a valid number, and each accepted only if the re-interpreted number is
//!   valid, so they can never override a valid library reading:
//!   1. *Old Ukrainian trunk `8`*: with region UA, `8 0XX XXX XX XX` (the pre-2010 long
//!      distance prefix) is read as `0XX XXX XX XX`.
//!   2. *Country code without plus*: 11–15 bare digits that are not valid in the default
//!      region are read as `+` followed by those digits (a foreign caller ID without `+`).
//! * Inputs that are recognisably not numbers (SIP logins, `anonymous`, letters) are
//!   rejected *before* libphonenumber sees them: the library would otherwise read letters as
//!   vanity digits (`1-800-FLOWERS`) and so make up a number.
//!
//! # Invariants
//!
//! * A [`PhoneNumber`] always holds `+` followed by [`MIN_E164_DIGITS`]..=[`MAX_E164_DIGITS`]
//!   digits, the first of which is not `0`. Its digits therefore pack losslessly into a
//!   `u64` ([`PhoneNumber::as_u64`]).
//! * `Debug`/`Display` of [`PhoneNumber`], [`ParsedPhone`] and [`PhoneNumberError`] never
//!   print the full number or the extension: these values reach logs.
//! * This module is pure: no I/O, no async runtime.

use std::{fmt, str::FromStr};

use rlibphonenumber::{
    PHONE_NUMBER_UTIL, ParseError, PhoneNumberFormat, PhoneNumberUtil, Region, ValidationError,
};
use serde::{Deserialize, Serialize};

/// Fewest digits (country code included) a canonical number may have. The shortest valid
/// numbers in libphonenumber's metadata have a 3-digit country code and a 4-digit national
/// number (Niue, Tokelau).
pub const MIN_E164_DIGITS: usize = 7;

/// Most digits (country code included) a canonical number may have (ITU-T E.164).
pub const MAX_E164_DIGITS: usize = 15;

/// Digits of a national number kept visible after the country code when masking.
const MASK_VISIBLE_HEAD: usize = 2;

/// Trailing digits kept visible when masking.
const MASK_VISIBLE_TAIL: usize = 2;

/// Shortest bare-digit input tried as "country code without plus". Shorter inputs are
/// national numbers in every plan we serve, and reading them as international would make
/// up numbers.
const MIN_DIGITS_FOR_MISSING_PLUS: usize = 11;

/// Words meaning "no caller ID" (compared case-insensitively). `undefined`/`null` are what
/// JavaScript-based PBX front ends send for a missing caller ID.
const ANONYMOUS_WORDS: &[&str] = &[
    "anonymous",
    "private",
    "restricted",
    "unknown",
    "unavailable",
    "withheld",
    "undefined",
    "null",
    "none",
];

/// Letter runs allowed inside a phone number: URI schemes and parameters of RFC 3966 `tel:`
/// URIs and extension markers libphonenumber understands. Any other letter makes the input
/// "not a number".
const ALLOWED_WORDS: &[&str] = &[
    "tel",
    "phone",
    "context",
    "isub",
    "ext",
    "extn",
    "extension",
    "x",
    "доб",
    "добавочный",
];

/// A canonical E.164 number (`+380981234567`). `Debug`/`Display` mask the middle digits.
///
/// Serializes as the E.164 string. Only [`PhoneNormalizer::parse`] interprets free-form input;
/// [`PhoneNumber::from_e164`] accepts only input that is already canonical.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Accepts only an already canonical `+` followed by 7–15 digits, not starting with `0`.
    ///
    /// This is a syntactic check (used when reading stored values back); it does not consult
    /// the numbering plan. Use [`PhoneNormalizer::parse`] for anything typed by a person.
    pub fn from_e164(s: &str) -> Result<Self, PhoneNumberError> {
        let digits = s.strip_prefix('+').ok_or(PhoneNumberError::NotE164)?;
        if is_e164_digits(digits) {
            Ok(PhoneNumber(s.to_owned()))
        } else {
            Err(PhoneNumberError::NotE164)
        }
    }

    /// Rebuilds a number packed by [`PhoneNumber::as_u64`].
    pub fn from_u64(packed: u64) -> Result<Self, PhoneNumberError> {
        let s = format!("+{packed}");
        if is_e164_digits(&s[1..]) {
            Ok(PhoneNumber(s))
        } else {
            Err(PhoneNumberError::NotE164)
        }
    }

    /// The canonical form, `+380981234567`.
    pub fn e164(&self) -> &str {
        &self.0
    }

    /// The digits without the leading `+`, `380981234567`.
    pub fn digits(&self) -> &str {
        &self.0[1..]
    }

    /// The digits as one integer, for compact indexes. Lossless and order-free of
    /// collisions because E.164 numbers never start with `0` and have at most 15 digits.
    pub fn as_u64(&self) -> u64 {
        self.digits()
            .bytes()
            .fold(0u64, |acc, b| acc * 10 + u64::from(b - b'0'))
    }

    /// The country calling code (`380`), if libphonenumber knows it.
    pub fn country_calling_code(&self) -> Option<u16> {
        self.country_code_len()
            .and_then(|len| self.digits()[..len].parse().ok())
    }

    /// The national significant number (`981234567` for `+380981234567`): what retailCRM's
    /// customer search matches best, since people type national formats there. `None` when
    /// the country calling code is unknown to libphonenumber.
    pub fn national_significant_number(&self) -> Option<&str> {
        self.country_code_len().map(|len| &self.digits()[len..])
    }

    /// The number for logs: country code, the first two national digits and the last two
    /// digits stay, the rest is `*` (`+38098*****67`). Short numbers are masked further so
    /// that at least half of the national number is hidden.
    pub fn masked(&self) -> String {
        let digits = self.digits();
        // Unknown country code: keep three digits, the longest a country code can be.
        let cc_len = self.country_code_len().unwrap_or(3);
        let national = &digits[cc_len..];
        let n = national.len();
        let (head, tail) = if n >= MASK_VISIBLE_HEAD + MASK_VISIBLE_TAIL + 3 {
            (MASK_VISIBLE_HEAD, MASK_VISIBLE_TAIL)
        } else {
            (0, usize::from(n >= 4))
        };
        let mut out = String::with_capacity(self.0.len());
        out.push('+');
        out.push_str(&digits[..cc_len]);
        out.push_str(&national[..head]);
        out.extend(std::iter::repeat_n('*', n - head - tail));
        out.push_str(&national[n - tail..]);
        out
    }

    /// Length of the country calling code. E.164 country codes form a prefix code, so at
    /// most one of the 1-, 2- and 3-digit prefixes is an assigned code.
    fn country_code_len(&self) -> Option<usize> {
        let digits = self.digits();
        (1..=3).find(|&len| {
            digits[..len]
                .parse::<i32>()
                .ok()
                .and_then(|cc| PHONE_NUMBER_UTIL.get_region_for_country_code(cc))
                .is_some()
        })
    }

    /// Trusted constructor for output of libphonenumber's E.164 formatter.
    fn from_formatted(e164: &str) -> Result<Self, PhoneNumberError> {
        // The formatter's output is canonical for valid numbers; checking keeps the type's
        // invariant independent of the library.
        PhoneNumber::from_e164(e164)
    }
}

fn is_e164_digits(digits: &str) -> bool {
    (MIN_E164_DIGITS..=MAX_E164_DIGITS).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

impl TryFrom<String> for PhoneNumber {
    type Error = PhoneNumberError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s.strip_prefix('+').is_some_and(is_e164_digits) {
            Ok(PhoneNumber(s))
        } else {
            Err(PhoneNumberError::NotE164)
        }
    }
}

impl From<PhoneNumber> for String {
    fn from(p: PhoneNumber) -> String {
        p.0
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Why an input is not a phone number. Messages never contain the input: they reach logs
/// and the `callgate normalize` CLI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneNumberError {
    /// Nothing but whitespace.
    #[error("empty: no phone number given")]
    Empty,
    /// `anonymous`, `unknown`, `null` and similar: the caller ID was withheld or missing.
    #[error("no caller ID: the number is anonymous, withheld or missing")]
    Anonymous,
    /// A SIP URI or login (`sip:alice@pbx`, `alice@pbx`, `"Alice" <alice>`, `shop_jena`).
    #[error("a SIP login, not a phone number")]
    SipLogin,
    /// Letters other than an extension marker or a `tel:` scheme.
    #[error("contains letters, not a phone number")]
    Letters,
    /// No number could be extracted (stray symbols such as `*#06#`, `++380`).
    #[error("not a phone number")]
    NotANumber,
    /// A leading `+` or international prefix followed by an unassigned country code.
    #[error("unknown country calling code")]
    InvalidCountryCode,
    /// Fewer digits than any number in the numbering plan.
    #[error("too short to be a phone number")]
    TooShort,
    /// More digits than any number in the numbering plan.
    #[error("too long to be a phone number")]
    TooLong,
    /// Plausible length, but no such number range in the numbering plan of `region`.
    #[error("not a valid phone number in {region}")]
    InvalidForRegion {
        /// Region whose plan was consulted (the main region of the country code).
        region: RegionCode,
    },
    /// [`PhoneNumber::from_e164`] got something that is not `+` and 7–15 digits.
    #[error("not a canonical E.164 number (`+` and 7 to 15 digits)")]
    NotE164,
}

/// A parsed input: the number and an extension kept apart.
///
/// `Debug` masks both (these values reach logs); `Display` shows the masked number only.
#[derive(Clone, PartialEq, Eq)]
pub struct ParsedPhone {
    /// The canonical number, without the extension.
    pub number: PhoneNumber,
    /// Extension digits (`12` from `доб. 12`), if one was given.
    pub extension: Option<String>,
}

impl fmt::Debug for ParsedPhone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedPhone")
            .field("number", &self.number)
            .field(
                "extension",
                &self.extension.as_ref().map(|e| MaskedExtension(e.len())),
            )
            .finish()
    }
}

impl fmt::Display for ParsedPhone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.number, f)
    }
}

/// Prints an extension of `n` digits as `n` stars.
struct MaskedExtension(usize);

impl fmt::Debug for MaskedExtension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for _ in 0..self.0 {
            f.write_str("*")?;
        }
        Ok(())
    }
}

/// A region (ISO 3166 alpha-2 code, `UA`) that libphonenumber has a numbering plan for.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RegionCode {
    region: Region,
    /// Upper-case ASCII letters, kept so that [`RegionCode::as_str`] can borrow.
    code: [u8; 2],
}

impl RegionCode {
    /// Parses a two-letter code, case-insensitively. Rejects codes without a numbering plan.
    pub fn parse(code: &str) -> Result<Self, UnknownRegion> {
        let unknown = || UnknownRegion(code.to_owned());
        let region = Region::from_code(code).map_err(|_| unknown())?;
        PHONE_NUMBER_UTIL
            .get_country_code_for_region(region)
            .ok_or_else(unknown)?;
        let b = code.as_bytes();
        Ok(RegionCode {
            region,
            code: [b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase()],
        })
    }

    /// The upper-case code, `UA`.
    pub fn as_str(&self) -> &str {
        // `code` holds two ASCII letters (checked by `Region::from_code`), so this never
        // falls back.
        std::str::from_utf8(&self.code).unwrap_or("??")
    }

    /// The region's country calling code (`380` for UA).
    pub fn country_calling_code(&self) -> i32 {
        // `parse` checked that the region has metadata.
        PHONE_NUMBER_UTIL
            .get_country_code_for_region(self.region)
            .unwrap_or(0)
    }
}

impl FromStr for RegionCode {
    type Err = UnknownRegion;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RegionCode::parse(s)
    }
}

impl fmt::Display for RegionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RegionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The configured region code is not one libphonenumber has a numbering plan for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown region code {0:?}: expected a two-letter ISO 3166 code such as UA")]
pub struct UnknownRegion(pub String);

/// Normalizes free-form input with a default region (`phone.default_region`).
#[derive(Debug, Clone)]
pub struct PhoneNormalizer {
    region: RegionCode,
}

impl PhoneNormalizer {
    /// A normalizer reading national numbers as numbers of `default_region` (`UA`).
    pub fn new(default_region: &str) -> Result<Self, UnknownRegion> {
        Ok(PhoneNormalizer {
            region: RegionCode::parse(default_region)?,
        })
    }

    /// The default region, upper-case (`UA`).
    pub fn default_region(&self) -> &str {
        self.region.as_str()
    }

    /// The default region as a [`RegionCode`].
    pub fn region(&self) -> RegionCode {
        self.region
    }

    /// Parses `input` with the default region.
    pub fn parse(&self, input: &str) -> Result<ParsedPhone, PhoneNumberError> {
        self.parse_in(input, self.region)
    }

    /// Parses `input`, reading national numbers as numbers of `region`.
    pub fn parse_in(
        &self,
        input: &str,
        region: RegionCode,
    ) -> Result<ParsedPhone, PhoneNumberError> {
        let text = classify(input)?;
        parse_with_library(text, region)
    }
}

/// Rejects inputs that are recognisably not numbers and unwraps SIP URIs whose user part is
/// a telephone number. Returns the text to hand to libphonenumber.
fn classify(input: &str) -> Result<&str, PhoneNumberError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(PhoneNumberError::Empty);
    }
    if !text
        .bytes()
        .any(|b| b.is_ascii_alphabetic() || b >= 0x80 || b == b'@' || b == b'<')
    {
        // Digits and punctuation only: the common case, nothing to classify.
        return Ok(text);
    }
    if is_anonymous(text) {
        return Err(PhoneNumberError::Anonymous);
    }
    // `"Alice" <sip:alice@pbx>`: only the address in angle brackets matters.
    let mut addr = match (text.find('<'), text.rfind('>')) {
        (Some(open), Some(close)) if open < close => text[open + 1..close].trim(),
        _ => text,
    };
    let mut sip = addr.len() != text.len();
    for scheme in ["sip:", "sips:"] {
        // `get`, not indexing: the text may be Cyrillic (`Скрытый номер`), and a byte offset
        // inside a multi-byte character must read as "no scheme", not panic.
        if let Some(head) = addr.get(..scheme.len())
            && head.eq_ignore_ascii_case(scheme)
        {
            addr = &addr[scheme.len()..];
            sip = true;
        }
    }
    if let Some(at) = addr.find('@') {
        addr = &addr[..at];
        sip = true;
    }
    if sip {
        // `sip:+380981234567@pbx;user=phone`: the user part is a telephone number.
        let user = addr.split(';').next().unwrap_or_default().trim();
        if is_anonymous(user) {
            return Err(PhoneNumberError::Anonymous);
        }
        let phone_like = user.bytes().any(|b| b.is_ascii_digit())
            && user
                .bytes()
                .all(|b| b.is_ascii_digit() || b" +-.()".contains(&b));
        return if phone_like {
            Ok(user)
        } else {
            Err(PhoneNumberError::SipLogin)
        };
    }
    if is_login(text) {
        return Err(PhoneNumberError::SipLogin);
    }
    let stray_letters = text
        .split(|c: char| !c.is_alphabetic())
        .filter(|w| !w.is_empty())
        .any(|w| {
            !ALLOWED_WORDS
                .iter()
                .any(|a| a.eq_ignore_ascii_case(w) || *a == w.to_lowercase())
        });
    if stray_letters {
        return Err(PhoneNumberError::Letters);
    }
    Ok(text)
}

fn is_anonymous(text: &str) -> bool {
    ANONYMOUS_WORDS.iter().any(|w| w.eq_ignore_ascii_case(text))
}

/// A bare account name such as `shop_jena` or `alice`: starts with a letter, then letters,
/// digits, `_`, `.` or `-`, and is not just an extension marker.
fn is_login(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

thread_local! {
    /// This thread's own libphonenumber for parsing. Its regexes are compiled lazily per
    /// instance, so each thread matches with regexes no other thread uses: a regex's cache
    /// pool then takes its owner-thread fast path, where one instance shared by every thread
    /// (`PHONE_NUMBER_UTIL`) sent all but one thread through the pool's slower, locked path
    /// on every match (load-tests/RESULTS.md, 2026-11-29). The metadata is built in; loading
    /// it cannot fail for outside input.
    static UTIL: PhoneNumberUtil =
        PhoneNumberUtil::new().expect("libphonenumber's built-in metadata loads");
}

fn parse_with_library(text: &str, region: RegionCode) -> Result<ParsedPhone, PhoneNumberError> {
    UTIL.with(|util| {
        let mut number = util
            .parse(text, Some(region.region))
            .map_err(map_parse_error)?;
        let extension = number.extension.take().filter(|e| !e.is_empty());
        if !util.is_valid_number(&number) {
            number = retry_with_callgate_rules(util, text, region, &number)
                .ok_or_else(|| invalid_reason(util, &number))?;
        }
        let e164 = util.format(&number, PhoneNumberFormat::E164);
        Ok(ParsedPhone {
            number: PhoneNumber::from_formatted(&e164)?,
            extension,
        })
    })
}

/// callgate's own rules (see the module docs), tried on a number libphonenumber parsed but
/// found invalid. Returns a valid re-reading or `None`.
fn retry_with_callgate_rules(
    util: &PhoneNumberUtil,
    text: &str,
    region: RegionCode,
    number: &rlibphonenumber::PhoneNumber,
) -> Option<rlibphonenumber::PhoneNumber> {
    // Only inputs written without `+`/IDD: libphonenumber then put the whole digit string
    // into the national number, with the region's country code.
    let lead = text.find(|c: char| c.is_ascii_digit() || c == '+')?;
    let first = text[lead..].chars().next()?;
    if first == '+' || number.country_code != region.country_calling_code() {
        return None;
    }
    let nsn = number.national_number;
    // Rule 1: old Ukrainian trunk `8` before `0XX`: 11 digits `80XXXXXXXXX`. Dropping the
    // `8` from the text (not from the digits) keeps any extension.
    if region.region == Region::UA && first == '8' && nsn / 1_000_000_000 == 80 {
        let rest = format!("{}{}", &text[..lead], &text[lead + 1..]);
        if let Ok(candidate) = util.parse(&rest, Some(region.region))
            && util.is_valid_number(&candidate)
        {
            return Some(candidate);
        }
    }
    // Rule 2: an international number whose `+` was dropped. Only for text that starts
    // with the digits (no `tel:`), and long enough not to be a national number.
    let plain_start = text[..lead].chars().all(|c| c.is_whitespace() || c == '(');
    if plain_start
        && first != '0'
        && nsn.checked_ilog10()? + 1 >= MIN_DIGITS_FOR_MISSING_PLUS as u32
        && let Ok(candidate) = util.parse(format!("+{text}"), None)
        && util.is_valid_number(&candidate)
    {
        return Some(candidate);
    }
    None
}

fn map_parse_error(e: ParseError) -> PhoneNumberError {
    match e {
        ParseError::InvalidCountryCode => PhoneNumberError::InvalidCountryCode,
        ParseError::NotANumber(_) => PhoneNumberError::NotANumber,
        ParseError::TooShortAfterIdd | ParseError::TooShortNsn => PhoneNumberError::TooShort,
        ParseError::TooLongNsn => PhoneNumberError::TooLong,
    }
}

/// Why libphonenumber considers a parsed number invalid.
fn invalid_reason(
    util: &PhoneNumberUtil,
    number: &rlibphonenumber::PhoneNumber,
) -> PhoneNumberError {
    match util.is_possible_number_with_reason(number) {
        Err(ValidationError::TooShort) => PhoneNumberError::TooShort,
        Err(ValidationError::TooLong) => PhoneNumberError::TooLong,
        Err(ValidationError::InvalidCountryCode) => PhoneNumberError::InvalidCountryCode,
        Ok(_) | Err(ValidationError::InvalidLength) => {
            match util
                .get_region_for_country_code(number.country_code)
                .and_then(|r| RegionCode::parse(&r.to_string()).ok())
            {
                Some(region) => PhoneNumberError::InvalidForRegion { region },
                None => PhoneNumberError::InvalidCountryCode,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ua() -> PhoneNormalizer {
        PhoneNormalizer::new("UA").unwrap()
    }

    fn e164_in(region: &str, input: &str) -> Result<String, PhoneNumberError> {
        ua().parse_in(input, RegionCode::parse(region).unwrap())
            .map(|p| p.number.e164().to_owned())
    }

    #[test]
    fn accepted_inputs_normalize_to_e164() {
        let cases = [
            ("UA", "098 123 45 67", "+380981234567"),
            ("UA", "0981234567", "+380981234567"),
            ("UA", "(098) 123-45-67", "+380981234567"),
            ("UA", "098.123.45.67", "+380981234567"),
            ("UA", "380981234567", "+380981234567"),
            ("UA", "+380981234567", "+380981234567"),
            ("UA", "+38 (098) 123-45-67", "+380981234567"),
            ("UA", "00380981234567", "+380981234567"),
            ("UA", "tel:+380981234567", "+380981234567"),
            ("UA", "  +380981234567\t", "+380981234567"),
            // callgate's own rule: the old Ukrainian long-distance trunk `8`.
            ("UA", "8 098 123 45 67", "+380981234567"),
            ("UA", "80981234567", "+380981234567"),
            ("UA", "8 (044) 111-22-33", "+380441112233"),
            // Russian trunk `8`, Kazakh numbers.
            ("RU", "8 (495) 268-06-49", "+74952680649"),
            ("RU", "89161234567", "+79161234567"),
            ("KZ", "8 (701) 123-45-67", "+77011234567"),
            ("KZ", "+7 701 123 45 67", "+77011234567"),
            // Foreign numbers with a UA default region.
            ("UA", "+48 512 345 678", "+48512345678"),
            ("UA", "0048512345678", "+48512345678"),
            ("UA", "+7 (495) 268-06-49", "+74952680649"),
            // callgate's own rule: a foreign country code without `+`.
            ("UA", "48512345678", "+48512345678"),
            ("UA", "74952680649", "+74952680649"),
            // SIP URI whose user part is a telephone number.
            (
                "UA",
                "sip:+380981234567@pbx.example;user=phone",
                "+380981234567",
            ),
            ("UA", "\"Olga\" <sip:0981234567@pbx>", "+380981234567"),
        ];
        for (region, input, expected) in cases {
            assert_eq!(
                e164_in(region, input).as_deref(),
                Ok(expected),
                "{input:?} in {region}"
            );
        }
    }

    #[test]
    fn non_numbers_are_typed_errors() {
        use PhoneNumberError::*;
        let ua_region = RegionCode::parse("UA").unwrap();
        let cases = [
            ("", Empty),
            ("   \t", Empty),
            ("anonymous", Anonymous),
            ("Anonymous", Anonymous),
            ("unknown", Anonymous),
            ("null", Anonymous),
            ("sip:anonymous@anonymous.invalid", Anonymous),
            ("sip:alice", SipLogin),
            ("sip:alice@pbx.example", SipLogin),
            ("alice@pbx", SipLogin),
            ("\"login\" <login>", SipLogin),
            ("shop_jena", SipLogin),
            ("abc123", SipLogin),
            ("098 123 45 67 Olga", Letters),
            ("1-800-FLOWERS", Letters),
            ("12", TooShort),
            ("0", NotANumber),
            ("*#06#", NotANumber),
            ("++380", TooShort),
            ("98765432109876543210", TooLong),
            ("+38098123456789012345", TooLong),
            ("+0000000000", InvalidCountryCode),
            ("+380 00 123 45 67", InvalidForRegion { region: ua_region }),
        ];
        for (input, expected) in cases {
            assert_eq!(ua().parse(input), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn text_in_any_script_is_an_error_not_a_panic() {
        // Byte offsets 4 and 5 (the `sip:`/`sips:` probes) fall inside Cyrillic letters.
        for input in [
            "Скрытый номер",
            "Скр",
            "Анонім",
            "номер 098 123 45 67",
            "日本語テキスト",
            "é",
        ] {
            assert!(ua().parse(input).is_err(), "{input:?}");
        }
        assert!(ua().parse("<sips:Скрытый@pbx>").is_err());
    }

    #[test]
    fn legacy_ua_trunk_rule_applies_only_in_ua() {
        // In Belarus `8 0…` is the library's own trunk form, not callgate's rule.
        assert_eq!(e164_in("BY", "80294913610").as_deref(), Ok("+375294913610"));
        assert!(e164_in("PL", "80981234567").is_err());
    }

    #[test]
    fn extensions_are_split_off() {
        let cases = [
            ("UA", "098 123 45 67 доб. 12", "+380981234567", "12"),
            ("RU", "+7 916 123-45-67 доб. 12", "+79161234567", "12"),
            ("UA", "+380981234567 ext. 5", "+380981234567", "5"),
            ("UA", "+380981234567;ext=5", "+380981234567", "5"),
            ("UA", "+380981234567 x5", "+380981234567", "5"),
            ("UA", "8 098 123 45 67 ext 7", "+380981234567", "7"),
        ];
        for (region, input, number, ext) in cases {
            let parsed = ua()
                .parse_in(input, RegionCode::parse(region).unwrap())
                .unwrap();
            assert_eq!(parsed.number.e164(), number, "{input:?}");
            assert_eq!(parsed.extension.as_deref(), Some(ext), "{input:?}");
        }
        assert_eq!(ua().parse("0981234567").unwrap().extension, None);
    }

    #[test]
    fn debug_and_display_mask_the_number_and_extension() {
        let parsed = ua().parse("+380981234567 доб. 4321").unwrap();
        assert_eq!(parsed.number.masked(), "+38098*****67");
        for shown in [
            format!("{:?}", parsed.number),
            format!("{}", parsed.number),
            format!("{parsed:?}"),
            format!("{parsed}"),
        ] {
            assert!(!shown.contains("380981234567"), "{shown}");
            assert!(!shown.contains("1234567"), "{shown}");
            assert!(!shown.contains("4321"), "{shown}");
            assert!(shown.contains("+38098*****67"), "{shown}");
        }
        assert_eq!(
            PhoneNumber::from_e164("+74952680649").unwrap().masked(),
            "+749******49"
        );
        // Short numbers still hide at least half of the national number.
        assert_eq!(
            PhoneNumber::from_e164("+6834002").unwrap().masked(),
            "+683***2"
        );
    }

    #[test]
    fn from_e164_accepts_only_canonical_strings() {
        assert!(PhoneNumber::from_e164("+380981234567").is_ok());
        for bad in [
            "380981234567",
            "+0981234567",
            "+38 098",
            "+123456",
            "+1234567890123456",
            "",
        ] {
            assert_eq!(
                PhoneNumber::from_e164(bad),
                Err(PhoneNumberError::NotE164),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn serde_uses_the_e164_string() {
        let n = PhoneNumber::from_e164("+380981234567").unwrap();
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(json, "\"+380981234567\"");
        assert_eq!(serde_json::from_str::<PhoneNumber>(&json).unwrap(), n);
        assert!(serde_json::from_str::<PhoneNumber>("\"0981234567\"").is_err());
    }

    #[test]
    fn packs_into_u64_and_splits_national_number() {
        let n = PhoneNumber::from_e164("+380981234567").unwrap();
        assert_eq!(n.as_u64(), 380_981_234_567);
        assert_eq!(PhoneNumber::from_u64(n.as_u64()), Ok(n.clone()));
        assert_eq!(n.country_calling_code(), Some(380));
        assert_eq!(n.national_significant_number(), Some("981234567"));
        let us = PhoneNumber::from_e164("+12015550123").unwrap();
        assert_eq!(us.national_significant_number(), Some("2015550123"));
    }

    #[test]
    fn example_numbers_of_every_region_round_trip_through_from_e164() {
        let normalizer = ua();
        for region in PHONE_NUMBER_UTIL.get_supported_regions() {
            let Ok(example) = PHONE_NUMBER_UTIL.get_example_number(region) else {
                continue;
            };
            let e164 = example.format_as(PhoneNumberFormat::E164).into_owned();
            let parsed = normalizer.parse(&e164).unwrap();
            assert_eq!(parsed.number.e164(), e164, "{region}");
            assert_eq!(PhoneNumber::from_e164(&e164).as_ref(), Ok(&parsed.number));
        }
    }

    #[test]
    fn unknown_regions_are_rejected() {
        assert!(PhoneNormalizer::new("XX").is_err());
        assert!(PhoneNormalizer::new("UKR").is_err());
        assert_eq!(PhoneNormalizer::new("ua").unwrap().default_region(), "UA");
    }
}
