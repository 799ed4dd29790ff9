//! The shop's sites (`[[sites]]`, retailCRM store codes) and the one way a call or a lookup
//! is told its site: by the Ringostat project id, else by the tracking number dialled.
//!
//! The lookup (a request's `dst`), the worker and `rules explain` (a call event) all ask
//! [`Sites`]; a call none of the sites claims gets `crm.default_site` from the planner.

use super::{call::CallEvent, phone_number::PhoneNumber};

/// One `[[sites]]` entry, its tracking numbers normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// retailCRM store code.
    pub code: String,
    /// Ringostat project ids whose calls belong to this site.
    pub project_ids: Vec<String>,
    /// The site's tracking numbers (the shop's own numbers: never customers).
    pub tracking_numbers: Vec<PhoneNumber>,
}

/// Every configured site, in configuration order (the first claim wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sites(Vec<Site>);

impl Sites {
    pub fn new(sites: Vec<Site>) -> Self {
        Sites(sites)
    }

    pub fn all(&self) -> &[Site] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every site's tracking numbers.
    pub fn tracking_numbers(&self) -> impl Iterator<Item = &PhoneNumber> {
        self.0.iter().flat_map(|s| &s.tracking_numbers)
    }

    /// The site whose tracking numbers hold `number`.
    pub fn by_tracking_number(&self, number: &PhoneNumber) -> Option<&Site> {
        self.0.iter().find(|s| s.tracking_numbers.contains(number))
    }

    /// The site of a call: the one listing its Ringostat project id, else the one holding
    /// its tracking number. `None` when no site claims the call.
    pub fn of_call(
        &self,
        project_id: Option<&str>,
        tracking_number: Option<&PhoneNumber>,
    ) -> Option<&Site> {
        let by_project = project_id.and_then(|p| {
            self.0
                .iter()
                .find(|s| s.project_ids.iter().any(|id| id == p))
        });
        by_project.or_else(|| tracking_number.and_then(|n| self.by_tracking_number(n)))
    }

    /// The site of a call event (see [`Sites::of_call`]).
    pub fn of_event(&self, event: &CallEvent) -> Option<&Site> {
        self.of_call(event.project_id.as_deref(), event.tracking_number.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(e164: &str) -> PhoneNumber {
        PhoneNumber::from_e164(e164).unwrap()
    }

    fn sites() -> Sites {
        Sites::new(vec![
            Site {
                code: "shop-a".to_owned(),
                project_ids: vec!["100".to_owned()],
                tracking_numbers: vec![number("+380441112233")],
            },
            Site {
                code: "shop-b".to_owned(),
                project_ids: vec!["200".to_owned()],
                tracking_numbers: vec![number("+380441112299")],
            },
        ])
    }

    fn code(site: Option<&Site>) -> Option<&str> {
        site.map(|s| s.code.as_str())
    }

    #[test]
    fn the_project_id_wins_over_the_tracking_number() {
        let s = sites();
        let b_number = number("+380441112299");
        assert_eq!(
            code(s.of_call(Some("100"), Some(&b_number))),
            Some("shop-a")
        );
    }

    #[test]
    fn an_unknown_project_falls_back_to_the_tracking_number() {
        let s = sites();
        let b_number = number("+380441112299");
        assert_eq!(
            code(s.of_call(Some("999"), Some(&b_number))),
            Some("shop-b")
        );
        assert_eq!(code(s.of_call(None, Some(&b_number))), Some("shop-b"));
        assert_eq!(code(s.by_tracking_number(&b_number)), Some("shop-b"));
    }

    #[test]
    fn a_call_no_site_claims_has_no_site() {
        let s = sites();
        assert_eq!(
            code(s.of_call(Some("999"), Some(&number("+380671234567")))),
            None
        );
        assert_eq!(code(s.of_call(None, None)), None);
        assert_eq!(code(Sites::default().of_call(Some("100"), None)), None);
    }
}
