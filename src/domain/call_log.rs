//! callgate's own call log: one entry per finished call (and per ignored or unknown one),
//! used by the `last_talked` policy, the admin API and the operators' reports.

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use super::{manager::ManagerId, phone_number::PhoneNumber};

/// One finished call as callgate saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallLogEntry {
    /// Ringostat call id.
    pub call_id: String,
    pub date: NaiveDateTime,
    /// `None` when the caller was not a number (SIP login, `anonymous`).
    pub client_phone: Option<PhoneNumber>,
    /// The caller field exactly as received, when it was not a number.
    pub client_raw: Option<String>,
    pub incoming: bool,
    pub site: Option<String>,
    /// Tracking number dialled (external number).
    pub external_number: Option<String>,
    /// Manager who talked (answered), if any.
    pub manager_id: Option<ManagerId>,
    /// `answered`, `missed`, `failed` or `unknown`.
    pub result: String,
    /// Disposition exactly as Ringostat sent it.
    pub disposition_raw: Option<String>,
    /// Several CRM customers had this number.
    pub ambiguous_customer: bool,
    /// Created date of the order the call was linked to, if any (`Y-m-d`).
    pub order_date: Option<String>,
    /// What callgate did with the call (e.g. `ignored: internal call`).
    pub note: Option<String>,
}

/// Admin filter over the call log. Every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallLogFilter {
    pub site: Option<String>,
    pub external_number: Option<String>,
    pub order_date: Option<String>,
    pub manager_id: Option<ManagerId>,
    pub result: Option<String>,
}

impl CallLogFilter {
    pub fn matches(&self, e: &CallLogEntry) -> bool {
        self.site
            .as_ref()
            .is_none_or(|s| e.site.as_ref() == Some(s))
            && self
                .external_number
                .as_ref()
                .is_none_or(|s| e.external_number.as_ref() == Some(s))
            && self
                .order_date
                .as_ref()
                .is_none_or(|s| e.order_date.as_ref() == Some(s))
            && self.manager_id.is_none_or(|m| e.manager_id == Some(m))
            && self.result.as_ref().is_none_or(|s| &e.result == s)
    }
}
