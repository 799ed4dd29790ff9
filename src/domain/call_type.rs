//! The one call-type vocabulary (SPEC §4, PROTOCOLS §1.2): what a webhook's `call_type`
//! and a routing rule's `call_type` matcher may say, read by one parser ([`CallType::parse`]).
//!
//! `in`, `out`, `callback` (counts as incoming), `transitin` / `transitout` (transit through
//! the PBX, counted as incoming / outgoing). The spellings `transit_in` / `transit_out` and
//! `inbound`, `incoming`, `outbound`, `outgoing` are accepted too (never observed, but
//! harmless); case and surrounding spaces do not matter. The event keeps the raw value.

use serde::{Deserialize, Serialize};

/// Ringostat call types (`call_type` / `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallType {
    In,
    Out,
    /// A callback ordered on the site: the client is called, but it counts as incoming.
    Callback,
    /// Transit through the PBX; treated as incoming.
    TransitIn,
    /// Transit through the PBX; treated as outgoing.
    TransitOut,
}

/// Which side the client is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The client called the shop: client = caller, line = dst.
    Incoming,
    /// The shop called the client: caller = the employee, client = dst.
    Outgoing,
}

impl CallType {
    /// Every accepted spelling (lowercase) and what it means; the canonical name of each
    /// type comes first.
    pub const SPELLINGS: &[(&str, CallType)] = &[
        ("in", CallType::In),
        ("out", CallType::Out),
        ("callback", CallType::Callback),
        ("transitin", CallType::TransitIn),
        ("transitout", CallType::TransitOut),
        ("inbound", CallType::In),
        ("incoming", CallType::In),
        ("outbound", CallType::Out),
        ("outgoing", CallType::Out),
        ("transit_in", CallType::TransitIn),
        ("transit_out", CallType::TransitOut),
    ];

    /// The canonical names, for error messages.
    pub const EXPECTED: &str = "in, out, callback, transitin or transitout";

    /// Parses a webhook's or a rule's value: any of [`CallType::SPELLINGS`], ASCII
    /// case-insensitive, surrounding spaces ignored.
    pub fn parse(raw: &str) -> Option<CallType> {
        let raw = raw.trim();
        CallType::SPELLINGS
            .iter()
            .find(|(spelling, _)| spelling.eq_ignore_ascii_case(raw))
            .map(|&(_, t)| t)
    }

    /// The canonical name (SPEC §4).
    pub fn as_str(self) -> &'static str {
        match self {
            CallType::In => "in",
            CallType::Out => "out",
            CallType::Callback => "callback",
            CallType::TransitIn => "transitin",
            CallType::TransitOut => "transitout",
        }
    }

    pub fn direction(self) -> Direction {
        match self {
            CallType::In | CallType::Callback | CallType::TransitIn => Direction::Incoming,
            CallType::Out | CallType::TransitOut => Direction::Outgoing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_parses_whatever_its_case_and_the_canonical_name_round_trips() {
        for &(spelling, t) in CallType::SPELLINGS {
            assert_eq!(CallType::parse(spelling), Some(t), "{spelling}");
            assert_eq!(
                CallType::parse(&format!(" {} ", spelling.to_ascii_uppercase())),
                Some(t),
                "{spelling}"
            );
            assert_eq!(CallType::parse(t.as_str()), Some(t));
        }
        assert_eq!(CallType::parse("sideways"), None);
        assert_eq!(CallType::parse(""), None);
    }

    #[test]
    fn transit_types_count_as_in_and_out() {
        assert_eq!(CallType::TransitIn.direction(), Direction::Incoming);
        assert_eq!(CallType::TransitOut.direction(), Direction::Outgoing);
        assert_eq!(CallType::Callback.direction(), Direction::Incoming);
    }
}
