//! The CRM vocabulary the domain speaks: ids, UTM tags, call records and results, and the
//! create/update commands the planner emits (SPEC §4). The shapes follow retailCRM API v5
//! (PROTOCOLS §2), but nothing here talks to a CRM: the `Crm` port in `crate::crm` takes
//! and returns these types, and its adapters map them onto the wire.

use std::fmt;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use super::{manager::ManagerId, phone_number::PhoneNumber};

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// A CRM customer id.
    CustomerId
);
id_type!(
    /// A CRM order id.
    OrderId
);
id_type!(
    /// A CRM task id.
    TaskId
);

/// UTM tags of a call, in retailCRM's `source` shape.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UtmSource {
    pub source: Option<String>,
    pub medium: Option<String>,
    pub campaign: Option<String>,
    pub keyword: Option<String>,
    pub content: Option<String>,
}

impl UtmSource {
    pub fn is_empty(&self) -> bool {
        self.source.is_none()
            && self.medium.is_none()
            && self.campaign.is_none()
            && self.keyword.is_none()
            && self.content.is_none()
    }
}

/// `customers/create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCustomer {
    /// Dedupe key: a retry after a crash finds the customer by it instead of creating a
    /// second one.
    pub external_id: String,
    pub phones: Vec<PhoneNumber>,
    pub manager_id: Option<ManagerId>,
    pub source: UtmSource,
    /// Google Analytics client id, bare (`1169999034.1555555510`).
    pub ga_client_id: Option<String>,
}

/// `orders/create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOrder {
    /// Dedupe key, as for customers.
    pub external_id: String,
    pub customer_id: CustomerId,
    pub manager_id: Option<ManagerId>,
    /// Status code; `None` lets the CRM use its default.
    pub status: Option<String>,
    /// Always `phone` for orders made from calls.
    pub order_method: String,
    pub phone: PhoneNumber,
    pub source: UtmSource,
    pub ga_client_id: Option<String>,
}

/// What a task hangs on. A task always has one: an order when there is one, else the
/// customer (S13), else nothing but the phone (unknown caller with no customer allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskLink {
    Order(OrderId),
    Customer(CustomerId),
    None,
}

/// `tasks/create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTask {
    pub text: String,
    pub commentary: Option<String>,
    /// Sent as `Y-m-d H:i`.
    pub datetime: NaiveDateTime,
    pub performer_id: ManagerId,
    pub complete: bool,
    pub link: TaskLink,
    pub phone: Option<PhoneNumber>,
}

/// The line callgate adds to the commentary of every task it creates, naming the call event
/// and the action it belongs to: `callgate:<16 hex digits>`, the start of the SHA-256 of the
/// event key and the action key (stable across restarts, no phone number or secret in it).
/// retailCRM tasks have no `externalId`; a create whose outcome is unknown (a crash or a
/// lost answer between `tasks/create` and its record) is resumed by looking for this mark.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskMark(String);

impl TaskMark {
    pub fn new(event_key: &str, action_key: &str) -> Self {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update(event_key.as_bytes());
        // A separator no key contains, so ("ab", "c") and ("a", "bc") differ.
        hash.update([0u8]);
        hash.update(action_key.as_bytes());
        let hex: String = hash.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        TaskMark(format!("callgate:{hex}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a task's commentary carries this mark as a line of its own.
    pub fn is_in(&self, commentary: &str) -> bool {
        commentary.lines().any(|line| line.trim() == self.0)
    }

    /// `commentary` with this mark as its last line.
    pub fn append_to(&self, commentary: Option<&str>) -> String {
        match commentary.map(str::trim_end).filter(|c| !c.is_empty()) {
            Some(c) => format!("{c}\n{}", self.0),
            None => self.0.clone(),
        }
    }
}

impl fmt::Display for TaskMark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `tasks/{id}/edit`: the fields callgate changes on its call-back task (S14); `None` leaves
/// a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskUpdate {
    pub text: Option<String>,
    pub commentary: Option<String>,
    /// `Some(true)` closes the task.
    pub complete: Option<bool>,
}

/// `telephony/call/event` type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallEventType {
    In,
    Out,
    Hangup,
}

/// `telephony/call/event` (the pop-up card).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallEventNotice {
    pub phone: PhoneNumber,
    pub event_type: CallEventType,
    pub codes: Vec<String>,
    pub user_ids: Vec<ManagerId>,
    pub site: Option<String>,
    pub external_phone: Option<String>,
    pub call_external_id: Option<String>,
    /// For `hangup`: `answered|busy|cancel|failed|no answered`.
    pub hangup_status: Option<String>,
}

/// `telephony/calls/upload` result vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallResult {
    #[serde(rename = "answered")]
    Answered,
    #[serde(rename = "busy")]
    Busy,
    #[serde(rename = "failed")]
    Failed,
    #[serde(rename = "no answer")]
    NoAnswer,
    #[serde(rename = "not allowed")]
    NotAllowed,
    #[serde(rename = "unknown")]
    Unknown,
}

impl CallResult {
    pub fn as_str(self) -> &'static str {
        match self {
            CallResult::Answered => "answered",
            CallResult::Busy => "busy",
            CallResult::Failed => "failed",
            CallResult::NoAnswer => "no answer",
            CallResult::NotAllowed => "not allowed",
            CallResult::Unknown => "unknown",
        }
    }
}

/// One call-history record for `telephony/calls/upload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Sent as `Y-m-d H:i:s`.
    pub date: NaiveDateTime,
    /// `in` or `out`.
    pub incoming: bool,
    pub phone: String,
    pub user_id: Option<ManagerId>,
    pub code: Option<String>,
    pub result: CallResult,
    pub duration: u32,
    pub duration_waiting: u32,
    /// PBX call id: the CRM's own dedupe key for uploaded calls.
    pub external_id: String,
    pub record_url: Option<String>,
    pub source: UtmSource,
    pub external_phone: Option<String>,
    pub site: Option<String>,
    pub ga_client_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::TaskMark;

    #[test]
    fn a_task_mark_is_short_stable_and_names_the_event_and_the_action() {
        let mark = TaskMark::new("ev:call-1:ANSWERED", "task:notify-owner");
        assert_eq!(
            mark,
            TaskMark::new("ev:call-1:ANSWERED", "task:notify-owner")
        );
        let s = mark.as_str();
        assert_eq!(s.len(), "callgate:".len() + 16, "{s}");
        assert!(s.starts_with("callgate:"), "{s}");
        assert!(
            s["callgate:".len()..]
                .chars()
                .all(|c| c.is_ascii_hexdigit()),
            "{s}"
        );
        assert_ne!(
            mark,
            TaskMark::new("ev:call-2:ANSWERED", "task:notify-owner")
        );
        assert_ne!(mark, TaskMark::new("ev:call-1:ANSWERED", "task:callback"));
        // The separator keeps the two keys apart.
        assert_ne!(TaskMark::new("ab", "c"), TaskMark::new("a", "bc"));
    }

    #[test]
    fn a_task_mark_is_found_only_as_a_line_of_its_own() {
        let mark = TaskMark::new("ev", "task:callback");
        let commentary = mark.append_to(Some("Client: +38098*****67\n"));
        assert_eq!(commentary, format!("Client: +38098*****67\n{mark}"));
        assert!(mark.is_in(&commentary));
        assert_eq!(mark.append_to(None), mark.as_str());
        assert_eq!(mark.append_to(Some("  ")), mark.as_str());
        assert!(
            !mark.is_in(&format!("{mark}0")),
            "a longer mark is another mark"
        );
        assert!(!mark.is_in(&format!("x{mark}")));
        assert!(!TaskMark::new("ev", "task:other").is_in(&commentary));
    }
}
