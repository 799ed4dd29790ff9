//! The planner proper: one event, its facts, the configuration and the rule's actions in;
//! a [`Plan`] out (SPEC §4, S1–S14).

use chrono::{Duration, NaiveDateTime};

use super::{
    EXTERNAL_ID_PREFIX,
    actions::{
        Action, CustomerRef, LinkRef, OrderDraft, OrderRef, Plan, Scenario, TaskDraft, TaskPurpose,
    },
    config::{CreateOnIncoming, CreateOnOutgoing, PlannerConfig, RuleActions, fill},
    facts::{CrmFacts, CustomerFacts},
};
use crate::domain::{
    call::{CallEvent, CallOutcome, Direction, EventMoment},
    call_log::CallLogEntry,
    crm_model::{CallEventNotice, CallEventType, CallRecord, CallResult, NewCustomer},
    manager::ManagerId,
    phone_number::PhoneNumber,
};

/// Plans the CRM actions for one event. Pure: same inputs, same plan.
pub fn plan(
    event: &CallEvent,
    facts: &CrmFacts,
    cfg: &PlannerConfig,
    rule: Option<&RuleActions>,
) -> Plan {
    let mut p = Planner::new(event, facts, cfg, rule);
    p.run();
    p.finish()
}

struct Planner<'a> {
    event: &'a CallEvent,
    facts: &'a CrmFacts,
    cfg: &'a PlannerConfig,
    rule: Option<&'a RuleActions>,
    site: String,
    /// The client number when it may become/link to a customer: a number, not our own.
    client: Option<&'a PhoneNumber>,
    /// The most recently active matching customer.
    customer: Option<&'a CustomerFacts>,
    actions: Vec<Action>,
    scenarios: Vec<Scenario>,
    notes: Vec<String>,
    order_date: Option<NaiveDateTime>,
    upload: bool,
}

impl<'a> Planner<'a> {
    fn new(
        event: &'a CallEvent,
        facts: &'a CrmFacts,
        cfg: &'a PlannerConfig,
        rule: Option<&'a RuleActions>,
    ) -> Self {
        let client = event
            .client
            .as_ref()
            .ok()
            .filter(|n| !cfg.own_numbers.contains(n));
        // Several customers with one number: the most recently active one (SPEC §2).
        let customer = facts
            .customers
            .iter()
            .max_by_key(|c| (c.last_active_at.or(c.created_at), c.id));
        Planner {
            event,
            facts,
            cfg,
            rule,
            site: cfg.site_of(event).to_owned(),
            client,
            customer: customer.filter(|_| client.is_some()),
            actions: Vec::new(),
            scenarios: Vec::new(),
            notes: Vec::new(),
            order_date: None,
            upload: true,
        }
    }

    fn scenario(&mut self, s: Scenario) {
        if !self.scenarios.contains(&s) {
            self.scenarios.push(s);
        }
    }

    fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    fn run(&mut self) {
        if let Some(rule) = self.rule {
            self.scenario(Scenario::S11);
            self.note(format!("rule {:?}", rule.name));
            if rule.ignore {
                self.note("ignored by the rule");
                return;
            }
        }
        if self.facts.client_is_manager {
            self.scenario(Scenario::S9);
            self.note("internal call between managers");
            return;
        }
        match &self.event.client {
            Err(e) => self.note(format!("caller is not a phone number ({e})")),
            Ok(_) if self.client.is_none() => self.note("the shop's own number"),
            Ok(_) => {}
        }
        if let Some(c) = self.customer.filter(|_| self.facts.customers.len() > 1) {
            self.note(format!(
                "{} customers have this number; used {} (most recently active)",
                self.facts.customers.len(),
                c.id
            ));
        }
        if !self.event.moment.is_finished() {
            self.popup_in_call();
            return;
        }
        match (self.event.direction(), self.event.outcome()) {
            (Direction::Incoming, CallOutcome::Answered) => self.incoming_answered(),
            (Direction::Incoming, CallOutcome::Missed | CallOutcome::Failed) => {
                self.incoming_missed()
            }
            (Direction::Outgoing, CallOutcome::Answered) => self.outgoing_answered(),
            (_, outcome) => self.note(format!("{} call: nothing to do", outcome.as_str())),
        }
        self.check_tracking_number();
        self.upload_call();
    }

    // --- time, texts, references ---

    fn call_time(&self) -> NaiveDateTime {
        self.event.date.map_or(self.facts.now, |d| d.local)
    }

    fn phone_text(&self) -> String {
        match (&self.event.client, &self.event.client_raw) {
            (Ok(n), _) => n.e164().to_owned(),
            (Err(_), Some(raw)) => raw.clone(),
            (Err(_), None) => "unknown caller".to_owned(),
        }
    }

    /// Caller, recording and call card, one per line.
    fn commentary(&self, extra: Option<String>) -> String {
        let mut lines = vec![format!("Phone: {}", self.phone_text())];
        if let Some(line) = extra {
            lines.push(line);
        }
        if let Some(r) = &self.event.recording {
            lines.push(format!("Recording: {}", r.url));
        }
        if let Some(card) = &self.event.call_card {
            lines.push(format!("Call card: {card}"));
        }
        lines.join("\n")
    }

    fn rule_text(&self) -> Option<&'a str> {
        self.rule.and_then(|r| r.task_text.as_deref())
    }

    fn rule_assignee(&self) -> Option<ManagerId> {
        self.rule.and_then(|r| r.assign_to)
    }

    fn wants_order(&self, by_config: bool) -> bool {
        self.rule.and_then(|r| r.create_order).unwrap_or(by_config)
    }

    fn order_status(&self) -> String {
        self.rule
            .and_then(|r| r.order_status.clone())
            .unwrap_or_else(|| self.cfg.default_order_status.clone())
    }

    /// The customer's most recent open order, as a link.
    fn open_order_link(&mut self, c: &CustomerFacts) -> Option<LinkRef> {
        let order = c
            .orders
            .iter()
            .filter(|o| o.open)
            .max_by_key(|o| (o.created_at, o.id))?;
        self.order_date = order.created_at;
        Some(LinkRef::Order(OrderRef::Existing(order.id)))
    }

    /// The link of an existing customer's task: the open order, else the customer (S13).
    fn existing_link(&mut self, c: &CustomerFacts) -> LinkRef {
        match self.open_order_link(c) {
            Some(link) => link,
            None => {
                self.scenario(Scenario::S13);
                LinkRef::Customer(CustomerRef::Existing(c.id))
            }
        }
    }

    // --- creates ---

    fn ensure_customer(&mut self, number: &PhoneNumber, manager: Option<ManagerId>) {
        self.actions.push(Action::EnsureCustomer(NewCustomer {
            external_id: format!(
                "{EXTERNAL_ID_PREFIX}{}",
                number.e164().trim_start_matches('+')
            ),
            phones: vec![number.clone()],
            manager_id: manager,
            source: self.event.utm.clone(),
            ga_client_id: self.event.ga_client_id.clone(),
        }));
    }

    /// Creates the order when wanted and returns where the call's tasks hang.
    fn maybe_order(
        &mut self,
        number: &PhoneNumber,
        customer: CustomerRef,
        manager: Option<ManagerId>,
        wanted: bool,
    ) -> LinkRef {
        if !wanted {
            self.scenario(Scenario::S13);
            return LinkRef::Customer(customer);
        }
        self.order_date = Some(self.call_time());
        self.actions.push(Action::CreateOrder(OrderDraft {
            external_id: format!("{EXTERNAL_ID_PREFIX}{}", self.event.call_id),
            customer,
            manager_id: manager,
            status: self.order_status(),
            phone: number.clone(),
            source: self.event.utm.clone(),
            ga_client_id: self.event.ga_client_id.clone(),
        }));
        LinkRef::Order(OrderRef::Created)
    }

    /// The closed task on whoever talked; when the talker is unknown, on the owner, else
    /// the senior manager, so the talk is never lost.
    fn closed_task(&mut self, link: LinkRef, owner: Option<ManagerId>) {
        let Some(performer) = self
            .facts
            .answered_by
            .or(owner)
            .or(self.cfg.senior_manager_id)
        else {
            self.note("no manager for the closed task: set crm.senior_manager_id");
            return;
        };
        if self.facts.answered_by.is_none() {
            self.note("the answering manager is unknown");
        }
        let phone = self.phone_text();
        let text = match self.rule_text() {
            Some(t) => fill(t, &[("phone", &phone)]),
            None => fill(&self.cfg.texts.closed_call, &[("phone", &phone)]),
        };
        self.actions.push(Action::CreateTask {
            purpose: TaskPurpose::ClosedCall,
            task: TaskDraft {
                text,
                commentary: Some(self.commentary(None)),
                datetime: self.call_time(),
                performer_id: performer,
                complete: true,
                link,
                phone: self.client.cloned(),
            },
        });
    }

    /// S7: another manager talked to the owner's customer. Not when the owner talked on
    /// another leg of this very call (a transfer from the owner, S10).
    fn notify_owner(&mut self, owner: Option<ManagerId>, link: LinkRef) {
        let (Some(owner), Some(talker)) = (owner, self.facts.answered_by) else {
            return;
        };
        if owner == talker || self.facts.other_legs.talkers.contains(&owner) {
            return;
        }
        self.scenario(Scenario::S7);
        let phone = self.phone_text();
        let manager = self
            .facts
            .answered_by_name
            .clone()
            .unwrap_or_else(|| format!("manager #{talker}"));
        self.actions.push(Action::CreateTask {
            purpose: TaskPurpose::NotifyOwner,
            task: TaskDraft {
                text: fill(
                    &self.cfg.texts.notify_owner,
                    &[("phone", &phone), ("manager", &manager)],
                ),
                commentary: Some(self.commentary(None)),
                datetime: self.facts.now,
                performer_id: owner,
                complete: false,
                link,
                phone: self.client.cloned(),
            },
        });
    }

    // --- scenarios ---

    /// S1 (new number), S2 (open order), S3 (all orders closed), S7, S10, S14 (close).
    fn incoming_answered(&mut self) {
        let Some(number) = self.client else { return };
        if self.facts.other_legs.answered {
            self.scenario(Scenario::S10);
        }
        let owner = self.customer.and_then(|c| c.manager_id);
        let link = match self.customer {
            None => {
                self.scenario(Scenario::S1);
                let responsible = self.rule_assignee().or(self.facts.answered_by);
                self.ensure_customer(number, responsible);
                let by_config = self.cfg.create_on_incoming == CreateOnIncoming::CustomerAndOrder;
                self.maybe_order(
                    number,
                    CustomerRef::Created,
                    responsible,
                    self.wants_order(by_config),
                )
            }
            Some(c) => match self.open_order_link(c) {
                Some(link) => {
                    self.scenario(Scenario::S2);
                    link
                }
                None => {
                    self.scenario(Scenario::S3);
                    let responsible = self.rule_assignee().or(owner).or(self.facts.answered_by);
                    let by_config =
                        self.cfg.create_on_incoming == CreateOnIncoming::CustomerAndOrder;
                    self.maybe_order(
                        number,
                        CustomerRef::Existing(c.id),
                        responsible,
                        self.wants_order(by_config),
                    )
                }
            },
        };
        self.closed_task(link, owner);
        self.notify_owner(owner, link);
        self.complete_callback();
    }

    /// S14: an earlier leg of this same call left a call-back task; the call got through.
    fn complete_callback(&mut self) {
        let Some(cb) = &self.facts.open_callback else {
            return;
        };
        if cb.last_call_id != self.event.call_id {
            return;
        }
        self.scenario(Scenario::S14);
        let talker = self
            .facts
            .answered_by_name
            .clone()
            .or(self.facts.answered_by.map(|m| format!("manager #{m}")))
            .unwrap_or_else(|| "a manager".to_owned());
        self.actions.push(Action::CompleteCallbackTask {
            task_id: cb.task_id,
            commentary: self.commentary(Some(format!(
                "Answered by {talker} on another leg of the call"
            ))),
        });
    }

    /// S5 (no owner → senior manager), S6 (owner), S14 (one task per caller and window;
    /// not when another leg was answered). Failed calls (the PBX could not put the client
    /// through) count as missed here: the client still waits for a call back.
    fn incoming_missed(&mut self) {
        if self.facts.other_legs.answered {
            self.scenario(Scenario::S14);
            self.note("a missed leg of an answered call");
            // The answered leg uploads the call; a "no answer" record would contradict it.
            self.upload = false;
            return;
        }
        let Some(number) = self.client else { return };
        let owner = self.customer.and_then(|c| c.manager_id);
        let performer = match owner {
            Some(owner) => {
                self.scenario(Scenario::S6);
                Some(owner)
            }
            None => {
                self.scenario(Scenario::S5);
                self.rule_assignee().or(self.cfg.senior_manager_id)
            }
        };
        let Some(performer) = performer else {
            self.note("no manager for the call-back task: set crm.senior_manager_id");
            return;
        };
        let link = match self.customer {
            Some(c) => self.existing_link(c),
            None => LinkRef::None,
        };
        let window = Duration::minutes(i64::from(self.cfg.callback_window_min));
        let previous = self
            .facts
            .open_callback
            .as_ref()
            .filter(|cb| self.call_time() - cb.last_missed_at <= window);
        let count = match previous {
            // Another unanswered leg of a call already counted is not a new miss.
            Some(cb) if cb.last_call_id == self.event.call_id => cb.count,
            Some(cb) => cb.count.saturating_add(1),
            None => 1,
        };
        if previous.is_some() {
            self.scenario(Scenario::S14);
        }
        let phone = self.phone_text();
        let count_text = count.to_string();
        let vars = [("phone", phone.as_str()), ("count", count_text.as_str())];
        let text = match self.rule_text() {
            Some(t) => fill(t, &vars),
            None => fill(&self.cfg.texts.callback, &vars),
        };
        let last = format!(
            "Missed calls: {count}, last at {}",
            self.call_time().format("%Y-%m-%d %H:%M")
        );
        let task = TaskDraft {
            text,
            commentary: Some(self.commentary(Some(last))),
            datetime: self.facts.now,
            performer_id: performer,
            complete: false,
            link,
            phone: Some(number.clone()),
        };
        self.actions.push(Action::UpsertCallbackTask {
            existing: previous.map(|cb| cb.task_id),
            count,
            task,
        });
    }

    /// S4: a known customer gets the closed task; a new number gets what
    /// `crm.create_on_outgoing` says (nothing by default).
    fn outgoing_answered(&mut self) {
        let Some(number) = self.client else { return };
        self.scenario(Scenario::S4);
        let owner = self.customer.and_then(|c| c.manager_id);
        let link = match self.customer {
            Some(c) => self.existing_link(c),
            None => {
                let (customer, by_config) = match self.cfg.create_on_outgoing {
                    CreateOnOutgoing::Nothing => (false, false),
                    CreateOnOutgoing::Customer => (true, false),
                    CreateOnOutgoing::CustomerAndOrder => (true, true),
                };
                if !customer {
                    self.note("outgoing call to a number not in the CRM: nothing created");
                    return;
                }
                let responsible = self.rule_assignee().or(self.facts.answered_by);
                self.ensure_customer(number, responsible);
                self.maybe_order(
                    number,
                    CustomerRef::Created,
                    responsible,
                    self.wants_order(by_config),
                )
            }
        };
        self.closed_task(link, owner);
        self.notify_owner(owner, link);
    }

    /// S8: an incoming call to a number that is none of ours, whatever else happened. (The
    /// plan asks every time; the worker makes the task once a day per tracking number.)
    fn check_tracking_number(&mut self) {
        let Some(tracking) = &self.event.tracking_number else {
            return;
        };
        if self.cfg.own_numbers.contains(tracking) {
            return;
        }
        self.scenario(Scenario::S8);
        let Some(senior) = self.cfg.senior_manager_id else {
            self.note("unknown tracking number and no crm.senior_manager_id to tell");
            return;
        };
        let text = fill(
            &self.cfg.texts.check_tracking,
            &[("number", tracking.e164())],
        );
        self.actions.push(Action::CreateTask {
            purpose: TaskPurpose::CheckTracking,
            task: TaskDraft {
                text,
                commentary: Some(self.commentary(None)),
                datetime: self.facts.now,
                performer_id: senior,
                complete: false,
                link: LinkRef::None,
                phone: None,
            },
        });
    }

    /// S12: every finished call with a client number, linked by the CRM through the
    /// phone. The `externalId` is the call id; a second talker of the same call (S10) gets
    /// `<call id>:<leg>` so both talks are kept.
    fn upload_call(&mut self) {
        if !self.upload {
            return;
        }
        let Ok(number) = &self.event.client else {
            return;
        };
        self.scenario(Scenario::S12);
        let e = self.event;
        let answered = e.outcome() == CallOutcome::Answered;
        let external_id = match e.leg() {
            Some(leg) if answered && self.facts.other_legs.answered => {
                format!("{}:{leg}", e.call_id)
            }
            _ => e.call_id.clone(),
        };
        self.actions.push(Action::UploadCall(CallRecord {
            date: self.call_time(),
            incoming: e.is_incoming(),
            phone: number.e164().to_owned(),
            user_id: self.facts.answered_by,
            code: None,
            result: e.call_result(),
            duration: e.duration.unwrap_or(0),
            duration_waiting: e.waittime.unwrap_or(0),
            external_id,
            record_url: e.recording.as_ref().map(|r| r.url.clone()),
            source: e.utm.clone(),
            external_phone: e.tracking_number.as_ref().map(|t| t.e164().to_owned()),
            site: Some(self.site.clone()),
            ga_client_id: e.ga_client_id.clone(),
        }));
        if answered && self.cfg.popup_after_call {
            self.popup(CallEventType::Hangup, self.facts.answered_by);
        }
    }

    /// Start/answer events: the pop-up card to the owner (start) or the manager who picked
    /// up (answer), S1.
    fn popup_in_call(&mut self) {
        let user = match self.event.moment {
            EventMoment::Start => self.customer.and_then(|c| c.manager_id),
            _ => self.facts.answered_by,
        };
        let event_type = match self.event.direction() {
            Direction::Incoming => CallEventType::In,
            Direction::Outgoing => CallEventType::Out,
        };
        self.popup(event_type, user);
    }

    fn popup(&mut self, event_type: CallEventType, user: Option<ManagerId>) {
        let (Some(number), Some(user)) = (self.client, user) else {
            return;
        };
        let hangup_status = (event_type == CallEventType::Hangup).then(|| {
            match self.event.call_result() {
                CallResult::Answered => "answered",
                CallResult::Busy => "busy",
                CallResult::Failed | CallResult::NotAllowed => "failed",
                CallResult::NoAnswer | CallResult::Unknown => "no answered",
            }
            .to_owned()
        });
        self.actions.push(Action::PopUp(CallEventNotice {
            phone: number.clone(),
            event_type,
            codes: Vec::new(),
            user_ids: vec![user],
            site: Some(self.site.clone()),
            external_phone: self
                .event
                .tracking_number
                .as_ref()
                .map(|t| t.e164().to_owned()),
            call_external_id: Some(self.event.call_id.clone()),
            hangup_status,
        }));
    }

    fn finish(self) -> Plan {
        let e = self.event;
        let log = e.moment.is_finished().then(|| CallLogEntry {
            call_id: e.call_id.clone(),
            date: self.call_time(),
            client_phone: e.client.as_ref().ok().cloned(),
            client_raw: e.client.as_ref().err().and(e.client_raw.clone()),
            incoming: e.is_incoming(),
            site: Some(self.site.clone()),
            external_number: e
                .tracking_number
                .as_ref()
                .map(|t| t.e164().to_owned())
                .or_else(|| e.is_incoming().then(|| e.dst_raw.clone()).flatten()),
            manager_id: self.facts.answered_by,
            result: e.outcome().as_str().to_owned(),
            disposition_raw: e.disposition.as_ref().map(|d| d.raw.clone()),
            ambiguous_customer: self.customer.is_some() && self.facts.customers.len() > 1,
            order_date: self.order_date.map(|d| d.format("%Y-%m-%d").to_string()),
            note: (!self.notes.is_empty()).then(|| self.notes.join("; ")),
        });
        Plan {
            site: self.site,
            actions: self.actions,
            scenarios: self.scenarios,
            log,
        }
    }
}
