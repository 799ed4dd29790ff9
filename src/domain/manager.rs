//! Managers (CRM users who take calls) and the directory that maps them to telephony
//! destinations.
//!
//! The directory is built from config `[[managers]]` entries and kept current by
//! `retailcrm/user-status` callbacks and the CRM user sync. It is pure data: the lookup
//! service reads a snapshot of it on every pre-call lookup.

use std::{collections::HashMap, fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use super::phone_number::PhoneNumber;

/// A retailCRM user id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ManagerId(pub u64);

impl fmt::Display for ManagerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A manager's availability as retailCRM reports it (`free|busy|dinner|break`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ManagerStatus {
    /// Ready to take calls. The status a manager has until told otherwise.
    #[default]
    Free,
    Busy,
    Dinner,
    Break,
}

impl ManagerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ManagerStatus::Free => "free",
            ManagerStatus::Busy => "busy",
            ManagerStatus::Dinner => "dinner",
            ManagerStatus::Break => "break",
        }
    }
}

/// The value was not one of `free|busy|dinner|break`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown manager status {0:?}: expected free, busy, dinner or break")]
pub struct UnknownStatus(pub String);

impl FromStr for ManagerStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "free" => Ok(ManagerStatus::Free),
            "busy" => Ok(ManagerStatus::Busy),
            "dinner" => Ok(ManagerStatus::Dinner),
            "break" => Ok(ManagerStatus::Break),
            _ => Err(UnknownStatus(s.to_owned())),
        }
    }
}

/// The changing part of a manager: status and presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ManagerState {
    pub status: ManagerStatus,
    /// `None` when the CRM has not told us (config-only managers).
    pub online: Option<bool>,
}

impl ManagerState {
    /// Available for a routed call: `free`, and online when presence is known.
    pub fn is_available(&self) -> bool {
        self.status == ManagerStatus::Free && self.online != Some(false)
    }
}

/// One manager as configured: who they are in the CRM and in Ringostat, and where a call
/// for them goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manager {
    pub id: ManagerId,
    /// Ringostat staff id (`employee_number` / `employee_id` in webhooks).
    pub ringostat_staff_id: Option<i64>,
    /// SIP logins; the first one is the lookup destination.
    pub sip: Vec<String>,
    /// Extension code (retailCRM `manager.code`, telephony `additionalCodes`).
    pub code: Option<String>,
    /// The manager's own phone (never becomes a customer).
    pub phone: Option<PhoneNumber>,
}

impl Manager {
    /// Where a call for this manager is forwarded: the first SIP login, else the extension
    /// code, else the phone in E.164 without `+` (Ringostat's "international format").
    pub fn destination(&self) -> Option<String> {
        if let Some(sip) = self.sip.first() {
            return Some(sip.clone());
        }
        if let Some(code) = &self.code {
            return Some(code.clone());
        }
        self.phone
            .as_ref()
            .map(|p| p.e164().trim_start_matches('+').to_owned())
    }
}

/// Immutable index of configured managers by every identity Ringostat or the CRM may use.
#[derive(Debug, Clone, Default)]
pub struct ManagerDirectory {
    managers: Vec<Manager>,
    by_id: HashMap<ManagerId, usize>,
    by_staff_id: HashMap<i64, usize>,
    by_sip: HashMap<String, usize>,
    by_code: HashMap<String, usize>,
    by_phone: HashMap<PhoneNumber, usize>,
}

/// Two `[[managers]]` entries claim the same identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("managers {first} and {second} both use {what}")]
pub struct DuplicateManagerIdentity {
    pub first: ManagerId,
    pub second: ManagerId,
    pub what: String,
}

impl ManagerDirectory {
    pub fn new(managers: Vec<Manager>) -> Result<Self, DuplicateManagerIdentity> {
        let mut dir = ManagerDirectory::default();
        for (i, m) in managers.iter().enumerate() {
            let dup = |what: String, other: usize| DuplicateManagerIdentity {
                first: managers[other].id,
                second: m.id,
                what,
            };
            if let Some(&o) = dir.by_id.get(&m.id) {
                return Err(dup(format!("crm_user_id {}", m.id), o));
            }
            dir.by_id.insert(m.id, i);
            if let Some(s) = m.ringostat_staff_id {
                if let Some(&o) = dir.by_staff_id.get(&s) {
                    return Err(dup(format!("ringostat_staff_id {s}"), o));
                }
                dir.by_staff_id.insert(s, i);
            }
            for sip in &m.sip {
                let key = sip.to_ascii_lowercase();
                if let Some(&o) = dir.by_sip.get(&key) {
                    return Err(dup(format!("sip login {sip}"), o));
                }
                dir.by_sip.insert(key, i);
            }
            if let Some(c) = &m.code {
                if let Some(&o) = dir.by_code.get(c) {
                    return Err(dup(format!("code {c}"), o));
                }
                dir.by_code.insert(c.clone(), i);
            }
            if let Some(p) = &m.phone {
                if let Some(&o) = dir.by_phone.get(p) {
                    return Err(dup(format!("phone {p}"), o));
                }
                dir.by_phone.insert(p.clone(), i);
            }
        }
        dir.managers = managers;
        Ok(dir)
    }

    pub fn all(&self) -> &[Manager] {
        &self.managers
    }

    pub fn get(&self, id: ManagerId) -> Option<&Manager> {
        self.by_id.get(&id).map(|&i| &self.managers[i])
    }

    pub fn by_staff_id(&self, staff_id: i64) -> Option<&Manager> {
        self.by_staff_id.get(&staff_id).map(|&i| &self.managers[i])
    }

    pub fn by_sip(&self, login: &str) -> Option<&Manager> {
        self.by_sip
            .get(&login.trim().to_ascii_lowercase())
            .map(|&i| &self.managers[i])
    }

    pub fn by_code(&self, code: &str) -> Option<&Manager> {
        self.by_code.get(code.trim()).map(|&i| &self.managers[i])
    }

    pub fn by_phone(&self, phone: &PhoneNumber) -> Option<&Manager> {
        self.by_phone.get(phone).map(|&i| &self.managers[i])
    }
}
