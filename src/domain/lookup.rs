//! The pre-call lookup decision (SPEC §3): given what is known about a caller and the
//! managers, whom to forward the call to. Pure; the I/O (index, CRM, deadline) lives in
//! `crate::lookup`.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use super::manager::{ManagerDirectory, ManagerId, ManagerState};

/// Lookup policies, after retailCRM's distribution scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LookupPolicy {
    /// The customer's responsible manager, whatever their status.
    Owner,
    /// The owner only while `free` (and online when known); otherwise nobody.
    #[default]
    OwnerIfAvailable,
    /// The manager who last talked to the caller, falling back to the owner.
    LastTalked,
    /// Never route by owner.
    IgnoreOwner,
}

impl LookupPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            LookupPolicy::Owner => "owner",
            LookupPolicy::OwnerIfAvailable => "owner_if_available",
            LookupPolicy::LastTalked => "last_talked",
            LookupPolicy::IgnoreOwner => "ignore_owner",
        }
    }
}

/// What a lookup does when the owner mirror has no customer for the caller, once the first
/// import is done (`lookup.on_miss`, SPEC §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnMiss {
    /// The mirror is the whole CRM: answer nobody without asking.
    #[default]
    Nobody,
    /// Ask the CRM within the deadline, as before the import.
    AskCrm,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown lookup policy {0:?}: expected owner, owner_if_available, last_talked or ignore_owner"
)]
pub struct UnknownPolicy(pub String);

impl FromStr for LookupPolicy {
    type Err = UnknownPolicy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "owner" => Ok(LookupPolicy::Owner),
            "owner_if_available" => Ok(LookupPolicy::OwnerIfAvailable),
            "last_talked" => Ok(LookupPolicy::LastTalked),
            "ignore_owner" => Ok(LookupPolicy::IgnoreOwner),
            other => Err(UnknownPolicy(other.to_owned())),
        }
    }
}

/// Why the lookup answered what it answered (the `reason` field of the JSON answer and a
/// metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LookupReason {
    /// Routed to the customer's responsible manager.
    Owner,
    /// Routed to the manager who last talked to the caller.
    LastTalked,
    /// A routing rule's `forward_to`.
    Rule,
    /// No customer or no responsible manager for this caller.
    None,
    /// The owner exists but is not free/online (policy `owner_if_available`).
    OwnerUnavailable,
    /// The owner is not in `[[managers]]`, so there is no destination for them.
    UnknownManager,
    /// Policy `ignore_owner`.
    IgnoreOwner,
    /// The caller is not a phone number (SIP login, anonymous, empty).
    NotANumber,
    /// The CRM did not answer within the deadline.
    Timeout,
    /// The CRM (or the store) failed, or the lookup itself did (a panic answers nobody).
    Unavailable,
}

impl LookupReason {
    /// Every reason, for metrics that pre-create one series per reason.
    pub const ALL: [LookupReason; 10] = [
        LookupReason::Owner,
        LookupReason::LastTalked,
        LookupReason::Rule,
        LookupReason::None,
        LookupReason::OwnerUnavailable,
        LookupReason::UnknownManager,
        LookupReason::IgnoreOwner,
        LookupReason::NotANumber,
        LookupReason::Timeout,
        LookupReason::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LookupReason::Owner => "owner",
            LookupReason::LastTalked => "last_talked",
            LookupReason::Rule => "rule",
            LookupReason::None => "none",
            LookupReason::OwnerUnavailable => "owner_unavailable",
            LookupReason::UnknownManager => "unknown_manager",
            LookupReason::IgnoreOwner => "ignore_owner",
            LookupReason::NotANumber => "not_a_number",
            LookupReason::Timeout => "timeout",
            LookupReason::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for LookupReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupDecision {
    pub destination: Option<String>,
    pub manager_id: Option<ManagerId>,
    pub reason: LookupReason,
}

impl LookupDecision {
    pub fn nobody(reason: LookupReason) -> Self {
        LookupDecision {
            destination: None,
            manager_id: None,
            reason,
        }
    }
}

/// What the lookup knows about the caller when it decides.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallerFacts {
    /// Responsible manager of the caller's customer.
    pub owner: Option<ManagerId>,
    /// Manager who last talked to the caller (callgate's call log).
    pub last_talked: Option<ManagerId>,
}

/// Decides whom to route to. `state` gives a manager's current status (a manager with no
/// known state counts as free).
pub fn decide(
    policy: LookupPolicy,
    facts: CallerFacts,
    directory: &ManagerDirectory,
    state: impl Fn(ManagerId) -> ManagerState,
) -> LookupDecision {
    let route =
        |id: ManagerId, reason: LookupReason| match directory.get(id).and_then(|m| m.destination())
        {
            Some(destination) => LookupDecision {
                destination: Some(destination),
                manager_id: Some(id),
                reason,
            },
            None => LookupDecision::nobody(LookupReason::UnknownManager),
        };
    match policy {
        LookupPolicy::IgnoreOwner => LookupDecision::nobody(LookupReason::IgnoreOwner),
        LookupPolicy::Owner => match facts.owner {
            Some(owner) => route(owner, LookupReason::Owner),
            None => LookupDecision::nobody(LookupReason::None),
        },
        LookupPolicy::OwnerIfAvailable => match facts.owner {
            Some(owner) if state(owner).is_available() => route(owner, LookupReason::Owner),
            Some(_) => LookupDecision::nobody(LookupReason::OwnerUnavailable),
            None => LookupDecision::nobody(LookupReason::None),
        },
        LookupPolicy::LastTalked => match facts.last_talked {
            Some(last) if directory.get(last).and_then(|m| m.destination()).is_some() => {
                route(last, LookupReason::LastTalked)
            }
            _ => match facts.owner {
                Some(owner) => route(owner, LookupReason::Owner),
                None => LookupDecision::nobody(LookupReason::None),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::manager::{Manager, ManagerStatus};

    fn directory() -> ManagerDirectory {
        let m = |id, sip: &str| Manager {
            id: ManagerId(id),
            ringostat_staff_id: None,
            sip: vec![sip.to_owned()],
            code: None,
            phone: None,
        };
        ManagerDirectory::new(vec![m(1, "alina"), m(2, "tatiana")]).unwrap()
    }

    fn at(status: ManagerStatus) -> impl Fn(ManagerId) -> ManagerState {
        move |_| ManagerState {
            status,
            online: None,
        }
    }

    #[test]
    fn owner_if_available_routes_to_a_free_owner_only() {
        let facts = CallerFacts {
            owner: Some(ManagerId(1)),
            last_talked: None,
        };
        let d = decide(
            LookupPolicy::OwnerIfAvailable,
            facts,
            &directory(),
            at(ManagerStatus::Free),
        );
        assert_eq!(d.destination.as_deref(), Some("alina"));
        assert_eq!(d.reason, LookupReason::Owner);
        for status in [
            ManagerStatus::Busy,
            ManagerStatus::Dinner,
            ManagerStatus::Break,
        ] {
            let d = decide(
                LookupPolicy::OwnerIfAvailable,
                facts,
                &directory(),
                at(status),
            );
            assert_eq!(d, LookupDecision::nobody(LookupReason::OwnerUnavailable));
        }
    }

    #[test]
    fn owner_if_available_treats_a_known_offline_owner_as_away() {
        let facts = CallerFacts {
            owner: Some(ManagerId(1)),
            last_talked: None,
        };
        let offline = |_| ManagerState {
            status: ManagerStatus::Free,
            online: Some(false),
        };
        let d = decide(LookupPolicy::OwnerIfAvailable, facts, &directory(), offline);
        assert_eq!(d.reason, LookupReason::OwnerUnavailable);
    }

    #[test]
    fn owner_policy_ignores_status() {
        let facts = CallerFacts {
            owner: Some(ManagerId(2)),
            last_talked: None,
        };
        let d = decide(
            LookupPolicy::Owner,
            facts,
            &directory(),
            at(ManagerStatus::Dinner),
        );
        assert_eq!(d.destination.as_deref(), Some("tatiana"));
        assert_eq!(d.manager_id, Some(ManagerId(2)));
    }

    #[test]
    fn last_talked_prefers_the_last_manager_then_falls_back_to_the_owner() {
        let dir = directory();
        let both = CallerFacts {
            owner: Some(ManagerId(1)),
            last_talked: Some(ManagerId(2)),
        };
        let d = decide(
            LookupPolicy::LastTalked,
            both,
            &dir,
            at(ManagerStatus::Free),
        );
        assert_eq!(
            (d.manager_id, d.reason),
            (Some(ManagerId(2)), LookupReason::LastTalked)
        );
        let owner_only = CallerFacts {
            owner: Some(ManagerId(1)),
            last_talked: None,
        };
        let d = decide(
            LookupPolicy::LastTalked,
            owner_only,
            &dir,
            at(ManagerStatus::Free),
        );
        assert_eq!(
            (d.manager_id, d.reason),
            (Some(ManagerId(1)), LookupReason::Owner)
        );
    }

    #[test]
    fn ignore_owner_never_routes_and_unknown_owner_has_no_destination() {
        let facts = CallerFacts {
            owner: Some(ManagerId(1)),
            last_talked: None,
        };
        let d = decide(
            LookupPolicy::IgnoreOwner,
            facts,
            &directory(),
            at(ManagerStatus::Free),
        );
        assert_eq!(d.reason, LookupReason::IgnoreOwner);
        let stranger = CallerFacts {
            owner: Some(ManagerId(99)),
            last_talked: None,
        };
        let d = decide(
            LookupPolicy::Owner,
            stranger,
            &directory(),
            at(ManagerStatus::Free),
        );
        assert_eq!(d, LookupDecision::nobody(LookupReason::UnknownManager));
    }
}
