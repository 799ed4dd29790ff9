//! Phone numbers in E.164 (SPEC §2). INTERFACE STUB: being implemented.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A canonical E.164 number (`+380981234567`). Debug/Display mask the middle digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Accepts only an already canonical `+` followed by 8–15 digits.
    pub fn from_e164(s: &str) -> Result<Self, PhoneNumberError> {
        let digits = s.strip_prefix('+').ok_or(PhoneNumberError::Invalid)?;
        if (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
            Ok(PhoneNumber(s.to_owned()))
        } else {
            Err(PhoneNumberError::Invalid)
        }
    }
    pub fn e164(&self) -> &str {
        &self.0
    }
    pub fn masked(&self) -> String {
        self.0.clone()
    }
}

impl TryFrom<String> for PhoneNumber {
    type Error = PhoneNumberError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        PhoneNumber::from_e164(&s)
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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneNumberError {
    #[error("empty")]
    Empty,
    #[error("not a valid phone number")]
    Invalid,
}

/// A parsed input: the number and an extension kept apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedPhone {
    pub number: PhoneNumber,
    pub extension: Option<String>,
}

/// Normalizes free-form input with a default region.
#[derive(Debug, Clone)]
pub struct PhoneNormalizer {
    region: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown region code {0:?}: expected a two-letter ISO 3166 code such as UA")]
pub struct UnknownRegion(pub String);

impl PhoneNormalizer {
    pub fn new(default_region: &str) -> Result<Self, UnknownRegion> {
        Ok(PhoneNormalizer {
            region: default_region.to_owned(),
        })
    }
    pub fn default_region(&self) -> &str {
        &self.region
    }
    pub fn parse(&self, input: &str) -> Result<ParsedPhone, PhoneNumberError> {
        self.parse_in(input, &self.region.clone())
    }
    pub fn parse_in(&self, input: &str, _region: &str) -> Result<ParsedPhone, PhoneNumberError> {
        Err(if input.is_empty() {
            PhoneNumberError::Empty
        } else {
            PhoneNumberError::Invalid
        })
    }
}
