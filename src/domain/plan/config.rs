//! What the planner takes from the configuration ([`PlannerConfig`], the task texts) and
//! from the matched routing rule ([`RuleActions`]).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::domain::{call::CallEvent, manager::ManagerId, phone_number::PhoneNumber, site::Sites};

/// `crm.create_on_incoming`: what an answered incoming call from a new number creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreateOnIncoming {
    #[default]
    CustomerAndOrder,
    /// Only the customer; orders are made by hand when the caller buys.
    Customer,
}

/// `crm.create_on_outgoing`: what an answered outgoing call to a new number creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreateOnOutgoing {
    #[default]
    Nothing,
    Customer,
    CustomerAndOrder,
}

/// Task texts. Placeholders: `{phone}` (the client, E.164), `{manager}` (the manager who
/// talked), `{count}` (missed calls so far), `{number}` (the tracking number).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskTexts {
    /// The closed task on whoever talked (S1–S4, S7, S10).
    pub closed_call: String,
    /// The open call-back task (S5, S6, S14).
    pub callback: String,
    /// The open task on the owner when another manager talked to their customer (S7).
    pub notify_owner: String,
    /// The task on the senior manager about an unknown tracking number (S8).
    pub check_tracking: String,
}

impl Default for TaskTexts {
    fn default() -> Self {
        TaskTexts {
            closed_call: "Call with {phone}".to_owned(),
            callback: "Call back {phone} (missed calls: {count})".to_owned(),
            notify_owner: "Your customer {phone} talked to {manager}".to_owned(),
            check_tracking: "Check the number {number}: calls to it map to no site or manager"
                .to_owned(),
        }
    }
}

pub(super) fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    vars.iter()
        .fold(template.to_owned(), |text, (name, value)| {
            text.replace(&format!("{{{name}}}"), value)
        })
}

/// What the planner needs from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannerConfig {
    pub create_on_incoming: CreateOnIncoming,
    pub create_on_outgoing: CreateOnOutgoing,
    /// `crm.senior_manager_id`: call-backs for callers with no owner (S5), unknown tracking
    /// numbers (S8), and the closed task when nobody else can take it.
    pub senior_manager_id: Option<ManagerId>,
    /// `crm.callback_window_min`: misses this close to the previous miss update the same
    /// call-back task (S14). Sliding: measured from the last miss.
    pub callback_window_min: u32,
    /// Status of orders made from calls when no rule says otherwise.
    pub default_order_status: String,
    /// `[[sites]]`: the site of a call, by project id, else by tracking number.
    pub sites: Sites,
    /// `crm.default_site`: the site of a call no `[[sites]]` entry claims.
    pub default_site: String,
    /// The shop's own numbers: tracking numbers of `[[sites]]`, `[[managers]]` phones and
    /// configured own lines. They never become customers; a tracking number not in this set
    /// is unknown (S8).
    pub own_numbers: HashSet<PhoneNumber>,
    pub texts: TaskTexts,
    /// Also send a `hangup` pop-up event to the manager after an answered call (off by
    /// default: start/answer webhooks do the pop-up).
    pub popup_after_call: bool,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        PlannerConfig {
            create_on_incoming: CreateOnIncoming::default(),
            create_on_outgoing: CreateOnOutgoing::default(),
            senior_manager_id: None,
            callback_window_min: 60,
            default_order_status: "new".to_owned(),
            sites: Sites::default(),
            default_site: "default".to_owned(),
            own_numbers: HashSet::new(),
            texts: TaskTexts::default(),
            popup_after_call: false,
        }
    }
}

impl PlannerConfig {
    /// The site of a call: the `[[sites]]` entry claiming it ([`Sites::of_event`]), else
    /// `crm.default_site`.
    pub fn site_of(&self, event: &CallEvent) -> &str {
        self.sites
            .of_event(event)
            .map_or(self.default_site.as_str(), |s| s.code.as_str())
    }
}

/// The actions of the routing rule that matched the event (SPEC §5).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RuleActions {
    /// The rule's name, for the log.
    pub name: String,
    /// Status of any order the call creates.
    pub order_status: Option<String>,
    /// `Some(false)`: never create an order; `Some(true)`: create one even where the config
    /// would not (only where a customer exists or is created).
    pub create_order: Option<bool>,
    /// Responsible manager of new customers and orders, and performer of call-back tasks
    /// for callers with no owner. Never changes an existing customer's owner.
    pub assign_to: Option<ManagerId>,
    /// Text of the closed call task and the call-back task.
    pub task_text: Option<String>,
    /// Send nothing to the CRM; log only.
    pub ignore: bool,
}
