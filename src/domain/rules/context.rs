//! What a rule is matched against: a lookup request or a call event ([`MatchContext`]).

use std::cell::Cell;

use chrono::{DateTime, Datelike, NaiveDateTime, Timelike, Utc, Weekday};
use chrono_tz::Tz;

use super::*;
use crate::domain::{
    call::{CallEvent, CallOutcome, CallType, Disposition, DispositionKind},
    phone_number::PhoneNumber,
};

// === Matching context ===

/// When the call happened, as far as the rules are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallTime {
    /// An instant; converted into each rule's timezone.
    Instant(DateTime<Utc>),
    /// A wall-clock time without an offset, taken as the rule's own local time.
    Wall(NaiveDateTime),
}

/// What a rule is matched against: built from a lookup request or a call event. A field that
/// is `None` makes every matcher on it fail.
#[derive(Debug, Clone, Default)]
pub struct MatchContext<'a> {
    /// The tracking number dialled, packed ([`PhoneNumber::as_u64`]).
    pub dst: Option<u64>,
    pub site: Option<&'a str>,
    pub call_type: Option<CallType>,
    pub outcome: Option<CallOutcome>,
    pub disposition: Option<DispositionKind>,
    /// The client's E.164 number.
    pub caller: Option<&'a str>,
    pub utm_source: Option<&'a str>,
    pub utm_medium: Option<&'a str>,
    pub utm_campaign: Option<&'a str>,
    pub customer_exists: Option<bool>,
    pub time: Option<CallTime>,
    /// The last (timezone, weekday, minute of day) computed.
    pub(super) local: Cell<Option<(Tz, Weekday, u16)>>,
}

impl<'a> MatchContext<'a> {
    /// A pre-call lookup: call type `in`, no disposition, customer existence unknown.
    pub fn for_lookup(
        caller: Option<&'a PhoneNumber>,
        dst: Option<&PhoneNumber>,
        site: Option<&'a str>,
        now: DateTime<Utc>,
    ) -> Self {
        MatchContext {
            dst: dst.map(PhoneNumber::as_u64),
            site,
            call_type: Some(CallType::In),
            caller: caller.map(PhoneNumber::e164),
            time: Some(CallTime::Instant(now)),
            ..MatchContext::default()
        }
    }

    /// A call event. `site` is the site told from `[[sites]]` (or `crm.default_site`);
    /// `customer_exists` comes from the CRM facts; `now` stands in when the event has no date.
    pub fn for_event(
        event: &'a CallEvent,
        site: Option<&'a str>,
        customer_exists: Option<bool>,
        now: DateTime<Utc>,
    ) -> Self {
        let time = match event.date {
            Some(d) => match d.offset {
                Some(offset) => match d.local.and_local_timezone(offset).single() {
                    Some(at) => CallTime::Instant(at.with_timezone(&Utc)),
                    None => CallTime::Wall(d.local),
                },
                None => CallTime::Wall(d.local),
            },
            None => CallTime::Instant(now),
        };
        let outcome = match event.outcome() {
            CallOutcome::Unknown if event.disposition.is_none() => None,
            o => Some(o),
        };
        MatchContext {
            dst: event.tracking_number.as_ref().map(PhoneNumber::as_u64),
            site,
            call_type: Some(event.call_type),
            outcome,
            disposition: event.disposition.as_ref().map(|d: &Disposition| d.kind),
            caller: event.client.as_ref().ok().map(PhoneNumber::e164),
            utm_source: event.utm.source.as_deref(),
            utm_medium: event.utm.medium.as_deref(),
            utm_campaign: event.utm.campaign.as_deref(),
            customer_exists,
            time: Some(time),
            local: Cell::new(None),
        }
    }

    pub(super) fn utm(&self, field: UtmField) -> Option<&'a str> {
        match field {
            UtmField::Source => self.utm_source,
            UtmField::Medium => self.utm_medium,
            UtmField::Campaign => self.utm_campaign,
        }
    }

    /// Weekday and minute of day in `tz`, cached for the last timezone asked.
    pub(super) fn local(&self, tz: Tz) -> Option<(Weekday, u16)> {
        if let Some((cached, day, minute)) = self.local.get()
            && cached == tz
        {
            return Some((day, minute));
        }
        let naive = match self.time? {
            CallTime::Instant(at) => at.with_timezone(&tz).naive_local(),
            CallTime::Wall(local) => local,
        };
        let minute = (naive.hour() * 60 + naive.minute()) as u16;
        let day = naive.weekday();
        self.local.set(Some((tz, day, minute)));
        Some((day, minute))
    }
}
