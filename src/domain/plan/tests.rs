//! The seed's cast: managers Tatiana and Alina and the senior manager; Alina's and
//! Tatiana's customers; a new caller. Each scenario test asserts the exact action list.

use std::collections::HashSet;

use chrono::{Duration, NaiveDate, NaiveDateTime};
use serde_json::{Value, json};

use super::*;
use crate::domain::{
    call::{CallEvent, testing},
    crm_model::{
        CallEventNotice, CallEventType, CallRecord, CallResult, CustomerId, NewCustomer, OrderId,
        TaskId, TaskLink, TaskMark, UtmSource,
    },
    manager::{Manager, ManagerDirectory, ManagerId},
    phone_number::PhoneNumber,
};

const SENIOR: ManagerId = ManagerId(1);
const TATIANA: ManagerId = ManagerId(7);
const ALINA: ManagerId = ManagerId(8);
const TATIANA_STAFF: i64 = 4711;
const ALINA_STAFF: i64 = 512;

const CALL_ID: &str = "ua1_-1718037213.2974122";
const NEW_CALLER: &str = "+380981234567";
const ALINAS_CUSTOMER: &str = "+380671112233";
const TATIANAS_CUSTOMER: &str = "+380501112233";
const SHOP_LINE: &str = "+380441112233";
const TATIANAS_MOBILE: &str = "+380937654321";
const UNKNOWN_LINE: &str = "+380442223344";
const REC: &str = "https://app.ringostat.com/recordings/ua1_1718037213.ogg";
const GA: &str = "1169999034.1555555510";

fn n(s: &str) -> PhoneNumber {
    PhoneNumber::from_e164(s).unwrap()
}

fn at(h: u32, mi: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2024, 7, 31)
        .unwrap()
        .and_hms_opt(h, mi, 0)
        .unwrap()
}

/// The call started at 14:59:35; the worker plans at 15:05.
fn call_time() -> NaiveDateTime {
    at(14, 59) + Duration::seconds(35)
}

fn now() -> NaiveDateTime {
    at(15, 5)
}

fn cfg() -> PlannerConfig {
    PlannerConfig {
        senior_manager_id: Some(SENIOR),
        default_site: "shop".to_owned(),
        own_numbers: [SHOP_LINE, TATIANAS_MOBILE].into_iter().map(n).collect(),
        ..PlannerConfig::default()
    }
}

/// An after-call webhook: the new caller rang the shop line, Tatiana answered, with a
/// recording. `over` replaces fields (`null` removes one).
fn event(over: Value, hint: Option<&str>) -> CallEvent {
    let mut base = json!({
        "uniqueid": CALL_ID,
        "calldate": "2024-07-31 14:59:35",
        "caller": NEW_CALLER.trim_start_matches('+'),
        "dst": SHOP_LINE.trim_start_matches('+'),
        "call_type": "in",
        "disposition": "ANSWERED",
        "billsec": 95,
        "waittime": "5",
        "has_recording": "1",
        "recording": REC,
        "employee_number": TATIANA_STAFF,
        "connected_with": "shop_tatiana",
        "utm_source": "google",
        "utm_medium": "cpc",
        "client_id": GA,
    });
    if let (Value::Object(b), Value::Object(o)) = (&mut base, over) {
        for (k, v) in o {
            if v.is_null() {
                b.remove(&k);
            } else {
                b.insert(k, v);
            }
        }
    }
    testing::event(base, hint)
}

/// A missed call: nobody answered, no talk, no recording.
fn missed(caller: &str, over: Value) -> CallEvent {
    let mut e = json!({
        "caller": caller.trim_start_matches('+'),
        "disposition": "NO ANSWER",
        "billsec": 0,
        "waittime": 30,
        "has_recording": "0",
        "employee_number": -1,
        "connected_with": null,
    });
    if let (Value::Object(b), Value::Object(o)) = (&mut e, over) {
        b.extend(o);
    }
    event(e, None)
}

fn answered_by(m: ManagerId, name: &str) -> CrmFacts {
    CrmFacts {
        answered_by: Some(m),
        answered_by_name: Some(name.to_owned()),
        ..CrmFacts::new_number(now())
    }
}

fn nobody() -> CrmFacts {
    CrmFacts::new_number(now())
}

fn customer(id: u64, owner: ManagerId, orders: Vec<OrderFacts>) -> CustomerFacts {
    CustomerFacts {
        id: CustomerId(id),
        manager_id: Some(owner),
        created_at: Some(at(9, 0) - Duration::days(30)),
        last_active_at: Some(at(9, 0) - Duration::days(7)),
        orders,
    }
}

fn order(id: u64, open: bool) -> OrderFacts {
    OrderFacts {
        id: OrderId(id),
        open,
        manager_id: None,
        created_at: Some(at(10, 0) - Duration::days(7)),
    }
}

fn with_customer(mut f: CrmFacts, c: CustomerFacts) -> CrmFacts {
    f.customers = vec![c];
    f
}

// --- expected actions ---

fn commentary(phone: &str, extra: Option<&str>, recording: bool) -> Option<String> {
    let mut lines = vec![format!("Phone: {phone}")];
    lines.extend(extra.map(str::to_owned));
    if recording {
        lines.push(format!("Recording: {REC}"));
    }
    Some(lines.join("\n"))
}

fn new_customer(phone: &str, manager: ManagerId) -> Action {
    Action::EnsureCustomer(NewCustomer {
        external_id: format!("callgate-{}", phone.trim_start_matches('+')),
        phones: vec![n(phone)],
        manager_id: Some(manager),
        source: UtmSource {
            source: Some("google".to_owned()),
            medium: Some("cpc".to_owned()),
            ..UtmSource::default()
        },
        ga_client_id: Some(GA.to_owned()),
    })
}

fn new_order(phone: &str, customer: CustomerRef, manager: ManagerId, status: &str) -> Action {
    Action::CreateOrder(OrderDraft {
        external_id: format!("callgate-{CALL_ID}"),
        customer,
        manager_id: Some(manager),
        status: status.to_owned(),
        phone: n(phone),
        source: UtmSource {
            source: Some("google".to_owned()),
            medium: Some("cpc".to_owned()),
            ..UtmSource::default()
        },
        ga_client_id: Some(GA.to_owned()),
    })
}

fn closed_task(phone: &str, performer: ManagerId, link: LinkRef) -> Action {
    closed_task_text(&format!("Call with {phone}"), phone, performer, link)
}

fn closed_task_text(text: &str, phone: &str, performer: ManagerId, link: LinkRef) -> Action {
    Action::CreateTask {
        purpose: TaskPurpose::ClosedCall,
        task: TaskDraft {
            text: text.to_owned(),
            commentary: commentary(phone, None, true),
            datetime: call_time(),
            performer_id: performer,
            complete: true,
            link,
            phone: Some(n(phone)),
        },
    }
}

fn upload(phone: &str, user: Option<ManagerId>, result: CallResult) -> Action {
    let answered = result == CallResult::Answered;
    Action::UploadCall(CallRecord {
        date: call_time(),
        incoming: true,
        phone: phone.to_owned(),
        user_id: user,
        code: None,
        result,
        duration: if answered { 100 } else { 30 },
        duration_waiting: if answered { 5 } else { 30 },
        external_id: CALL_ID.to_owned(),
        record_url: answered.then(|| REC.to_owned()),
        source: UtmSource {
            source: Some("google".to_owned()),
            medium: Some("cpc".to_owned()),
            ..UtmSource::default()
        },
        external_phone: Some(SHOP_LINE.to_owned()),
        site: Some("shop".to_owned()),
        ga_client_id: Some(GA.to_owned()),
    })
}

fn callback(
    phone: &str,
    performer: ManagerId,
    link: LinkRef,
    existing: Option<TaskId>,
    count: u32,
    recording: bool,
) -> Action {
    let last = format!("Missed calls: {count}, last at 2024-07-31 14:59");
    Action::UpsertCallbackTask {
        existing,
        count,
        task: TaskDraft {
            text: format!("Call back {phone} (missed calls: {count})"),
            commentary: commentary(phone, Some(&last), recording),
            datetime: now(),
            performer_id: performer,
            complete: false,
            link,
            phone: Some(n(phone)),
        },
    }
}

fn assert_keys_unique(p: &Plan) {
    let keys = p.keys();
    let unique: HashSet<_> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "{keys:?}");
}

// --- S1–S14 ---

#[test]
fn s1_new_caller_answered_by_tatiana_gets_customer_order_and_closed_task() {
    let facts = answered_by(TATIANA, "Tatiana");

    let pickup = event(
        json!({"disposition": null, "billsec": null, "waittime": null}),
        Some("answer"),
    );
    let p = plan(&pickup, &facts, &cfg(), None);
    assert_eq!(
        p.actions,
        vec![Action::PopUp(CallEventNotice {
            phone: n(NEW_CALLER),
            event_type: CallEventType::In,
            codes: vec![],
            user_ids: vec![TATIANA],
            site: Some("shop".to_owned()),
            external_phone: Some(SHOP_LINE.to_owned()),
            call_external_id: Some(CALL_ID.to_owned()),
            hangup_status: None,
        })]
    );
    assert_eq!(p.log, None, "a pick-up is not a call yet");

    let p = plan(&event(json!({}), None), &facts, &cfg(), None);
    assert_eq!(
        p.actions,
        vec![
            new_customer(NEW_CALLER, TATIANA),
            new_order(NEW_CALLER, CustomerRef::Created, TATIANA, "new"),
            closed_task(NEW_CALLER, TATIANA, LinkRef::Order(OrderRef::Created)),
            upload(NEW_CALLER, Some(TATIANA), CallResult::Answered),
        ]
    );
    assert_eq!(p.scenarios, vec![Scenario::S1, Scenario::S12]);
    assert_eq!(p.keys(), ["customer", "order", "task:closed:7", "upload"]);
    let log = p.log.unwrap();
    assert_eq!(
        (
            log.manager_id,
            log.result.as_str(),
            log.order_date.as_deref()
        ),
        (Some(TATIANA), "answered", Some("2024-07-31"))
    );
}

#[test]
fn s2_alinas_customer_with_an_open_order_answered_by_alina_gets_only_a_closed_task() {
    let facts = with_customer(
        answered_by(ALINA, "Alina"),
        customer(201, ALINA, vec![order(300, false), order(301, true)]),
    );
    let e = event(
        json!({"caller": ALINAS_CUSTOMER, "employee_number": ALINA_STAFF, "connected_with": "shop_alina"}),
        None,
    );
    let p = plan(&e, &facts, &cfg(), None);
    assert_eq!(
        p.actions,
        vec![
            closed_task(
                ALINAS_CUSTOMER,
                ALINA,
                LinkRef::Order(OrderRef::Existing(OrderId(301)))
            ),
            upload(ALINAS_CUSTOMER, Some(ALINA), CallResult::Answered),
        ]
    );
    assert_eq!(p.scenarios, vec![Scenario::S2, Scenario::S12]);
}

#[test]
fn s3_alinas_customer_with_all_orders_closed_gets_a_new_order_for_alina() {
    let facts = with_customer(
        answered_by(ALINA, "Alina"),
        customer(201, ALINA, vec![order(300, false)]),
    );
    let e = event(
        json!({"caller": ALINAS_CUSTOMER, "employee_number": ALINA_STAFF}),
        None,
    );
    let p = plan(&e, &facts, &cfg(), None);
    assert_eq!(
        p.actions,
        vec![
            new_order(
                ALINAS_CUSTOMER,
                CustomerRef::Existing(CustomerId(201)),
                ALINA,
                "new"
            ),
            closed_task(ALINAS_CUSTOMER, ALINA, LinkRef::Order(OrderRef::Created)),
            upload(ALINAS_CUSTOMER, Some(ALINA), CallResult::Answered),
        ]
    );
    assert_eq!(p.scenarios, vec![Scenario::S3, Scenario::S12]);
}

#[test]
fn s3_when_tatiana_answers_the_new_order_still_goes_to_alina_who_worked_with_the_client() {
    let facts = with_customer(
        answered_by(TATIANA, "Tatiana"),
        customer(201, ALINA, vec![]),
    );
    let e = event(json!({"caller": ALINAS_CUSTOMER}), None);
    let p = plan(&e, &facts, &cfg(), None);
    let link = LinkRef::Order(OrderRef::Created);
    assert_eq!(
        p.actions[0],
        new_order(
            ALINAS_CUSTOMER,
            CustomerRef::Existing(CustomerId(201)),
            ALINA,
            "new"
        )
    );
    assert_eq!(p.actions[1], closed_task(ALINAS_CUSTOMER, TATIANA, link));
    assert_eq!(
        p.keys(),
        ["order", "task:closed:7", "task:notify-owner", "upload"]
    );
}

#[test]
fn s4_tatiana_calling_a_conference_contact_not_in_the_crm_creates_nothing_then_a_task_once_known() {
    let out = |over: Value| {
        let mut o = json!({"call_type": "out", "caller": "shop_tatiana", "dst": NEW_CALLER});
        if let (Value::Object(b), Value::Object(x)) = (&mut o, over) {
            b.extend(x);
        }
        event(o, None)
    };
    let expected_upload = |user| {
        let Action::UploadCall(mut r) = upload(NEW_CALLER, user, CallResult::Answered) else {
            unreachable!()
        };
        r.incoming = false;
        r.external_phone = None;
        Action::UploadCall(r)
    };

    let p = plan(
        &out(json!({})),
        &answered_by(TATIANA, "Tatiana"),
        &cfg(),
        None,
    );
    assert_eq!(p.actions, vec![expected_upload(Some(TATIANA))]);
    assert_eq!(p.scenarios, vec![Scenario::S4, Scenario::S12]);
    assert!(p.log.unwrap().note.unwrap().contains("nothing created"));

    // She created the customer and the order by hand; the next call gets the task.
    let known = with_customer(
        answered_by(TATIANA, "Tatiana"),
        customer(202, TATIANA, vec![order(310, true)]),
    );
    let p = plan(&out(json!({})), &known, &cfg(), None);
    assert_eq!(
        p.actions,
        vec![
            closed_task(
                NEW_CALLER,
                TATIANA,
                LinkRef::Order(OrderRef::Existing(OrderId(310)))
            ),
            expected_upload(Some(TATIANA)),
        ]
    );
}

#[test]
fn s4_create_on_outgoing_customer_and_order_creates_both_for_tatiana() {
    let cfg = PlannerConfig {
        create_on_outgoing: CreateOnOutgoing::CustomerAndOrder,
        ..cfg()
    };
    let e = event(
        json!({"call_type": "out", "caller": "shop_tatiana", "dst": NEW_CALLER}),
        None,
    );
    let p = plan(&e, &answered_by(TATIANA, "Tatiana"), &cfg, None);
    assert_eq!(p.keys(), ["customer", "order", "task:closed:7", "upload"]);
    assert_eq!(p.actions[0], new_customer(NEW_CALLER, TATIANA));
    assert_eq!(
        p.actions[2],
        closed_task(NEW_CALLER, TATIANA, LinkRef::Order(OrderRef::Created))
    );
    // An unanswered outgoing call creates nothing whatever the setting.
    let e = event(
        json!({"call_type": "out", "dst": NEW_CALLER, "disposition": "NO ANSWER"}),
        None,
    );
    assert_eq!(
        plan(&e, &answered_by(TATIANA, "Tatiana"), &cfg, None).keys(),
        ["upload"]
    );
}

#[test]
fn s5_weekend_missed_call_from_a_new_number_gives_the_senior_manager_a_call_back_task() {
    let p = plan(&missed(NEW_CALLER, json!({})), &nobody(), &cfg(), None);
    assert_eq!(
        p.actions,
        vec![
            callback(NEW_CALLER, SENIOR, LinkRef::None, None, 1, false),
            upload(NEW_CALLER, None, CallResult::NoAnswer),
        ]
    );
    assert_eq!(p.scenarios, vec![Scenario::S5, Scenario::S12]);
    assert_eq!(p.log.unwrap().result, "missed");
}

#[test]
fn s6_voicemail_from_tatianas_customer_gives_tatiana_a_call_back_task_with_the_message() {
    let facts = with_customer(nobody(), customer(203, TATIANA, vec![]));
    let e = missed(
        TATIANAS_CUSTOMER,
        json!({"disposition": "VOICEMAIL", "has_recording": "1", "recording": REC}),
    );
    let p = plan(&e, &facts, &cfg(), None);
    let Action::UploadCall(mut record) = upload(TATIANAS_CUSTOMER, None, CallResult::NoAnswer)
    else {
        unreachable!()
    };
    record.record_url = Some(REC.to_owned());
    assert_eq!(
        p.actions,
        vec![
            callback(
                TATIANAS_CUSTOMER,
                TATIANA,
                LinkRef::Customer(CustomerRef::Existing(CustomerId(203))),
                None,
                1,
                true
            ),
            Action::UploadCall(record),
        ]
    );
    assert_eq!(
        p.scenarios,
        vec![Scenario::S6, Scenario::S13, Scenario::S12]
    );
}

#[test]
fn s7_alinas_customer_answered_by_tatiana_while_alina_travels_notifies_alina() {
    let facts = with_customer(
        answered_by(TATIANA, "Tatiana"),
        customer(201, ALINA, vec![order(301, true)]),
    );
    let p = plan(
        &event(json!({"caller": ALINAS_CUSTOMER}), None),
        &facts,
        &cfg(),
        None,
    );
    let link = LinkRef::Order(OrderRef::Existing(OrderId(301)));
    assert_eq!(
        p.actions,
        vec![
            closed_task(ALINAS_CUSTOMER, TATIANA, link),
            Action::CreateTask {
                purpose: TaskPurpose::NotifyOwner,
                task: TaskDraft {
                    text: format!("Your customer {ALINAS_CUSTOMER} talked to Tatiana"),
                    commentary: commentary(ALINAS_CUSTOMER, None, true),
                    datetime: now(),
                    performer_id: ALINA,
                    complete: false,
                    link,
                    phone: Some(n(ALINAS_CUSTOMER)),
                },
            },
            upload(ALINAS_CUSTOMER, Some(TATIANA), CallResult::Answered),
        ]
    );
    assert_eq!(p.scenarios, vec![Scenario::S2, Scenario::S7, Scenario::S12]);
}

#[test]
fn s8_call_to_a_tracking_number_nobody_configured_asks_the_senior_manager_to_check_it() {
    let e = event(json!({"dst": UNKNOWN_LINE}), None);
    let p = plan(&e, &answered_by(TATIANA, "Tatiana"), &cfg(), None);
    let check = Action::CreateTask {
        purpose: TaskPurpose::CheckTracking,
        task: TaskDraft {
            text: format!("Check the number {UNKNOWN_LINE}: calls to it map to no site or manager"),
            commentary: commentary(NEW_CALLER, None, true),
            datetime: now(),
            performer_id: SENIOR,
            complete: false,
            link: LinkRef::None,
            phone: None,
        },
    };
    let Action::UploadCall(mut record) = upload(NEW_CALLER, Some(TATIANA), CallResult::Answered)
    else {
        unreachable!()
    };
    record.external_phone = Some(UNKNOWN_LINE.to_owned());
    assert_eq!(
        p.actions,
        vec![
            new_customer(NEW_CALLER, TATIANA),
            new_order(NEW_CALLER, CustomerRef::Created, TATIANA, "new"),
            closed_task(NEW_CALLER, TATIANA, LinkRef::Order(OrderRef::Created)),
            check,
            Action::UploadCall(record),
        ]
    );
    assert_eq!(p.scenarios, vec![Scenario::S1, Scenario::S8, Scenario::S12]);
}

#[test]
fn s9_tatiana_calling_alina_internally_is_only_logged() {
    let dir = ManagerDirectory::new(vec![
        Manager {
            id: TATIANA,
            ringostat_staff_id: Some(TATIANA_STAFF),
            sip: vec!["shop_tatiana".to_owned()],
            code: Some("101".to_owned()),
            phone: Some(n(TATIANAS_MOBILE)),
        },
        Manager {
            id: ALINA,
            ringostat_staff_id: Some(ALINA_STAFF),
            sip: vec!["shop_alina".to_owned()],
            code: Some("102".to_owned()),
            phone: None,
        },
    ])
    .unwrap();
    let e = event(
        json!({"caller": "\"Tatiana\" <shop_tatiana>", "dst": "102",
               "employee_number": ALINA_STAFF, "connected_with": "shop_alina"}),
        None,
    );
    let parties = resolve_parties(&e, &dir);
    assert_eq!(
        parties,
        Parties {
            answered_by: Some(ALINA),
            client_is_manager: true
        }
    );
    let facts = CrmFacts {
        answered_by: parties.answered_by,
        client_is_manager: parties.client_is_manager,
        ..nobody()
    };
    let p = plan(&e, &facts, &cfg(), None);
    assert_eq!(p.actions, vec![]);
    assert_eq!(p.scenarios, vec![Scenario::S9]);
    let log = p.log.unwrap();
    assert_eq!(log.note.as_deref(), Some("internal call between managers"));
    assert_eq!(
        log.client_raw.as_deref(),
        Some("\"Tatiana\" <shop_tatiana>")
    );

    // From her mobile phone, too.
    let mobile = event(json!({"caller": TATIANAS_MOBILE}), None);
    assert!(resolve_parties(&mobile, &dir).client_is_manager);
    // A real customer answered by Alina through connected_with only.
    let customer_call = event(
        json!({"caller": NEW_CALLER, "employee_number": -1, "connected_with": "SHOP_ALINA"}),
        None,
    );
    assert_eq!(
        resolve_parties(&customer_call, &dir),
        Parties {
            answered_by: Some(ALINA),
            client_is_manager: false
        }
    );
}

#[test]
fn s10_call_transferred_from_tatiana_to_alina_records_a_closed_task_for_each() {
    // Leg 1: Tatiana talked to the new caller (S1), then transferred.
    let leg1 = event(json!({}), None);
    let p1 = plan(&leg1, &answered_by(TATIANA, "Tatiana"), &cfg(), None);
    assert_eq!(p1.keys(), ["customer", "order", "task:closed:7", "upload"]);

    // Leg 2: Alina; the worker now finds the customer and order leg 1 made.
    let leg2 = event(
        json!({"employee_number": ALINA_STAFF, "connected_with": "shop_alina"}),
        None,
    );
    assert_ne!(leg1.dedupe_key(), leg2.dedupe_key());
    let mut created = customer(204, TATIANA, vec![order(320, true)]);
    created.last_active_at = Some(now());
    let facts = CrmFacts {
        other_legs: OtherLegs {
            answered: true,
            talkers: vec![TATIANA],
        },
        ..with_customer(answered_by(ALINA, "Alina"), created)
    };
    let p2 = plan(&leg2, &facts, &cfg(), None);
    let Action::UploadCall(mut record) = upload(NEW_CALLER, Some(ALINA), CallResult::Answered)
    else {
        unreachable!()
    };
    record.external_id = format!("{CALL_ID}:staff{ALINA_STAFF}");
    assert_eq!(
        p2.actions,
        vec![
            closed_task(
                NEW_CALLER,
                ALINA,
                LinkRef::Order(OrderRef::Existing(OrderId(320)))
            ),
            Action::UploadCall(record),
        ],
        "no 'your customer talked to Alina' for Tatiana: she handed the call over"
    );
    assert_eq!(
        p2.scenarios,
        vec![Scenario::S10, Scenario::S2, Scenario::S12]
    );
}

#[test]
fn s11_feedback_line_rule_creates_the_order_cancelled_with_its_task_text() {
    let rule = RuleActions {
        name: "feedback line".to_owned(),
        order_status: Some("cancel".to_owned()),
        task_text: Some("Feedback call from {phone}".to_owned()),
        ..RuleActions::default()
    };
    let p = plan(
        &event(json!({}), None),
        &answered_by(TATIANA, "Tatiana"),
        &cfg(),
        Some(&rule),
    );
    assert_eq!(
        p.actions,
        vec![
            new_customer(NEW_CALLER, TATIANA),
            new_order(NEW_CALLER, CustomerRef::Created, TATIANA, "cancel"),
            closed_task_text(
                &format!("Feedback call from {NEW_CALLER}"),
                NEW_CALLER,
                TATIANA,
                LinkRef::Order(OrderRef::Created)
            ),
            upload(NEW_CALLER, Some(TATIANA), CallResult::Answered),
        ]
    );
    assert_eq!(
        p.scenarios,
        vec![Scenario::S11, Scenario::S1, Scenario::S12]
    );
    assert_eq!(
        p.log.unwrap().note.as_deref(),
        Some("rule \"feedback line\"")
    );
}

#[test]
fn s11_rules_can_skip_the_order_assign_the_customer_or_ignore_the_call() {
    let no_order = RuleActions {
        name: "no order, Alina's line".to_owned(),
        create_order: Some(false),
        assign_to: Some(ALINA),
        ..RuleActions::default()
    };
    let p = plan(
        &event(json!({}), None),
        &answered_by(TATIANA, "Tatiana"),
        &cfg(),
        Some(&no_order),
    );
    assert_eq!(
        p.actions,
        vec![
            new_customer(NEW_CALLER, ALINA),
            closed_task(NEW_CALLER, TATIANA, LinkRef::Customer(CustomerRef::Created)),
            upload(NEW_CALLER, Some(TATIANA), CallResult::Answered),
        ]
    );

    let ignore = RuleActions {
        name: "spam".to_owned(),
        ignore: true,
        ..RuleActions::default()
    };
    let p = plan(
        &event(json!({}), None),
        &answered_by(TATIANA, "Tatiana"),
        &cfg(),
        Some(&ignore),
    );
    assert_eq!(p.actions, vec![]);
    assert_eq!(
        p.log.unwrap().note.as_deref(),
        Some("rule \"spam\"; ignored by the rule")
    );
}

#[test]
fn s12_every_finished_call_is_uploaded_even_when_nothing_else_happens() {
    let odd = event(
        json!({"disposition": "IN PROGRESS", "employee_number": -1,
                           "connected_with": null}),
        None,
    );
    let p = plan(&odd, &nobody(), &cfg(), None);
    let Action::UploadCall(mut record) = upload(NEW_CALLER, None, CallResult::Unknown) else {
        unreachable!()
    };
    (record.duration, record.duration_waiting, record.record_url) = (100, 5, Some(REC.to_owned()));
    assert_eq!(p.actions, vec![Action::UploadCall(record)]);
    let log = p.log.unwrap();
    assert_eq!(
        (log.result.as_str(), log.disposition_raw.as_deref()),
        ("unknown", Some("IN PROGRESS"))
    );

    let forbidden = event(
        json!({"call_type": "callback", "disposition": "FAILED FORBIDDEN DESTINATION",
                                 "employee_number": -1, "connected_with": null}),
        None,
    );
    let p = plan(&forbidden, &nobody(), &cfg(), None);
    let Some(Action::UploadCall(r)) = p.actions.last() else {
        panic!("no upload: {:?}", p.actions)
    };
    assert_eq!(r.result, CallResult::NotAllowed);
}

#[test]
fn s13_an_existing_customer_without_an_open_order_gets_the_task_on_the_customer() {
    let rule = RuleActions {
        name: "service line".to_owned(),
        create_order: Some(false),
        ..RuleActions::default()
    };
    let facts = with_customer(
        answered_by(ALINA, "Alina"),
        customer(201, ALINA, vec![order(300, false)]),
    );
    let e = event(
        json!({"caller": ALINAS_CUSTOMER, "employee_number": ALINA_STAFF}),
        None,
    );
    let p = plan(&e, &facts, &cfg(), Some(&rule));
    assert_eq!(
        p.actions,
        vec![
            closed_task(
                ALINAS_CUSTOMER,
                ALINA,
                LinkRef::Customer(CustomerRef::Existing(CustomerId(201)))
            ),
            upload(ALINAS_CUSTOMER, Some(ALINA), CallResult::Answered),
        ]
    );
    assert!(p.scenarios.contains(&Scenario::S13));
}

#[test]
fn s14_the_same_number_missing_again_within_the_window_updates_the_one_call_back_task() {
    let earlier = OpenCallback {
        task_id: TaskId(900),
        count: 1,
        last_missed_at: at(14, 20),
        last_call_id: "ua1_-1718035000.1".to_owned(),
    };
    let facts = CrmFacts {
        open_callback: Some(earlier.clone()),
        ..nobody()
    };
    let again = missed(
        NEW_CALLER,
        json!({"has_recording": "1", "recording": REC,
                                         "disposition": "VOICEMAIL"}),
    );
    let p = plan(&again, &facts, &cfg(), None);
    assert_eq!(
        p.actions[0],
        callback(
            NEW_CALLER,
            SENIOR,
            LinkRef::None,
            Some(TaskId(900)),
            2,
            true
        )
    );
    assert_eq!(p.keys(), ["task:callback", "upload"]);
    assert_eq!(
        p.scenarios,
        vec![Scenario::S5, Scenario::S14, Scenario::S12]
    );

    // Another unanswered leg of that same call: same task, same count.
    let same_call = CrmFacts {
        open_callback: Some(OpenCallback {
            last_call_id: CALL_ID.to_owned(),
            last_missed_at: call_time(),
            ..earlier.clone()
        }),
        ..nobody()
    };
    let p = plan(&missed(NEW_CALLER, json!({})), &same_call, &cfg(), None);
    assert_eq!(
        p.actions[0],
        callback(
            NEW_CALLER,
            SENIOR,
            LinkRef::None,
            Some(TaskId(900)),
            1,
            false
        )
    );

    // Outside the window (last miss at 13:30, window 60 min): a fresh task.
    let stale = CrmFacts {
        open_callback: Some(OpenCallback {
            last_missed_at: at(13, 30),
            ..earlier
        }),
        ..nobody()
    };
    let p = plan(&missed(NEW_CALLER, json!({})), &stale, &cfg(), None);
    assert_eq!(
        p.actions[0],
        callback(NEW_CALLER, SENIOR, LinkRef::None, None, 1, false)
    );
}

#[test]
fn s14_a_ring_group_call_answered_on_any_leg_is_not_missed() {
    // Alina's leg rang out, but Tatiana picked up: Alina's leg changes nothing.
    let facts = CrmFacts {
        other_legs: OtherLegs {
            answered: true,
            talkers: vec![TATIANA],
        },
        ..nobody()
    };
    let p = plan(&missed(NEW_CALLER, json!({})), &facts, &cfg(), None);
    assert_eq!(p.actions, vec![]);
    assert_eq!(
        p.log.unwrap().note.as_deref(),
        Some("a missed leg of an answered call")
    );

    // Alina's leg came first and left a call-back task; Tatiana's answered leg closes it.
    let facts = CrmFacts {
        open_callback: Some(OpenCallback {
            task_id: TaskId(901),
            count: 1,
            last_missed_at: call_time(),
            last_call_id: CALL_ID.to_owned(),
        }),
        ..answered_by(TATIANA, "Tatiana")
    };
    let p = plan(&event(json!({}), None), &facts, &cfg(), None);
    assert_eq!(
        p.keys(),
        [
            "customer",
            "order",
            "task:closed:7",
            "task:callback:complete",
            "upload"
        ]
    );
    assert_eq!(
        p.actions[3],
        Action::CompleteCallbackTask {
            task_id: TaskId(901),
            commentary: commentary(
                NEW_CALLER,
                Some("Answered by Tatiana on another leg of the call"),
                true
            )
            .unwrap(),
        }
    );
}

// --- Numbers that never become customers, ambiguity, configuration ---

#[test]
fn own_numbers_never_become_customers_in_either_direction() {
    let own_line_calls_in = event(json!({"caller": SHOP_LINE}), None);
    let p = plan(
        &own_line_calls_in,
        &answered_by(TATIANA, "Tatiana"),
        &cfg(),
        None,
    );
    assert_eq!(p.keys(), ["upload"]);
    assert_eq!(
        p.log.unwrap().note.as_deref(),
        Some("the shop's own number")
    );

    let cfg = PlannerConfig {
        create_on_outgoing: CreateOnOutgoing::CustomerAndOrder,
        ..cfg()
    };
    let calling_own_line = event(json!({"call_type": "out", "dst": SHOP_LINE}), None);
    let p = plan(
        &calling_own_line,
        &answered_by(TATIANA, "Tatiana"),
        &cfg,
        None,
    );
    assert_eq!(p.keys(), ["upload"]);
    let own_missed = missed(SHOP_LINE, json!({}));
    assert_eq!(plan(&own_missed, &nobody(), &cfg, None).keys(), ["upload"]);
}

#[test]
fn a_caller_that_is_not_a_number_is_logged_and_creates_nothing() {
    for caller in ["anonymous", "\"shop_jena\" <shop_jena>", ""] {
        let answered = event(json!({"caller": caller}), None);
        let p = plan(&answered, &answered_by(TATIANA, "Tatiana"), &cfg(), None);
        assert_eq!(p.actions, vec![], "{caller}");
        let log = p.log.unwrap();
        assert_eq!(log.client_phone, None);
        assert!(
            log.note
                .unwrap()
                .starts_with("caller is not a phone number")
        );
        let p = plan(&missed(caller, json!({})), &nobody(), &cfg(), None);
        assert_eq!(p.actions, vec![], "{caller}");
    }
    // An unknown tracking line is still reported.
    let e = event(json!({"caller": "anonymous", "dst": UNKNOWN_LINE}), None);
    let p = plan(&e, &answered_by(TATIANA, "Tatiana"), &cfg(), None);
    assert_eq!(p.keys(), ["task:check-tracking"]);
}

#[test]
fn several_customers_with_one_number_use_the_most_recently_active_and_flag_it() {
    let mut stale = customer(210, ALINA, vec![order(330, true)]);
    stale.last_active_at = Some(at(9, 0) - Duration::days(200));
    let mut recent = customer(211, TATIANA, vec![order(331, true)]);
    recent.last_active_at = Some(at(9, 0) - Duration::days(1));
    let facts = CrmFacts {
        customers: vec![recent, stale],
        ..answered_by(TATIANA, "Tatiana")
    };
    let p = plan(
        &event(json!({"caller": TATIANAS_CUSTOMER}), None),
        &facts,
        &cfg(),
        None,
    );
    assert_eq!(
        p.actions,
        vec![
            closed_task(
                TATIANAS_CUSTOMER,
                TATIANA,
                LinkRef::Order(OrderRef::Existing(OrderId(331)))
            ),
            upload(TATIANAS_CUSTOMER, Some(TATIANA), CallResult::Answered),
        ]
    );
    let log = p.log.unwrap();
    assert!(log.ambiguous_customer);
    assert_eq!(
        log.note.as_deref(),
        Some("2 customers have this number; used 211 (most recently active)")
    );
}

#[test]
fn create_on_incoming_customer_creates_the_customer_and_hangs_the_task_on_it() {
    let cfg = PlannerConfig {
        create_on_incoming: CreateOnIncoming::Customer,
        ..cfg()
    };
    let p = plan(
        &event(json!({}), None),
        &answered_by(TATIANA, "Tatiana"),
        &cfg,
        None,
    );
    assert_eq!(
        p.actions,
        vec![
            new_customer(NEW_CALLER, TATIANA),
            closed_task(NEW_CALLER, TATIANA, LinkRef::Customer(CustomerRef::Created)),
            upload(NEW_CALLER, Some(TATIANA), CallResult::Answered),
        ]
    );
    assert_eq!(
        p.scenarios,
        vec![Scenario::S1, Scenario::S13, Scenario::S12]
    );
}

#[test]
fn an_answered_call_with_an_unknown_manager_gives_the_closed_task_to_the_owner() {
    let facts = with_customer(nobody(), customer(201, ALINA, vec![order(301, true)]));
    let e = event(
        json!({"caller": ALINAS_CUSTOMER, "employee_number": 999}),
        None,
    );
    let p = plan(&e, &facts, &cfg(), None);
    assert_eq!(p.keys(), ["task:closed:8", "upload"]);
    assert!(
        p.log
            .unwrap()
            .note
            .unwrap()
            .contains("answering manager is unknown")
    );
}

#[test]
fn drafts_resolve_with_the_ids_earlier_actions_produced() {
    let p = plan(
        &event(json!({}), None),
        &answered_by(TATIANA, "Tatiana"),
        &cfg(),
        None,
    );
    assert_keys_unique(&p);
    let Action::CreateOrder(order) = &p.actions[1] else {
        panic!("{:?}", p.actions)
    };
    assert_eq!(
        order.resolve(&Resolved::default()),
        Err(UnresolvedRef::Customer)
    );
    let mut got = Resolved {
        customer: Some(CustomerId(5)),
        order: None,
    };
    let new_order = order.resolve(&got).unwrap();
    assert_eq!(
        (new_order.customer_id, new_order.order_method.as_str()),
        (CustomerId(5), "phone")
    );
    let Action::CreateTask { task, .. } = &p.actions[2] else {
        panic!("{:?}", p.actions)
    };
    let mark = TaskMark::new("event-1", "task:notify-owner");
    assert_eq!(task.resolve(&got, &mark), Err(UnresolvedRef::Order));
    got.order = Some(OrderId(6));
    let new_task = task.resolve(&got, &mark).unwrap();
    assert_eq!(new_task.link, TaskLink::Order(OrderId(6)));
    let commentary = new_task.commentary.unwrap_or_default();
    assert!(
        mark.is_in(&commentary) && commentary.ends_with(mark.as_str()),
        "{commentary}"
    );
}

#[test]
fn start_pops_up_for_the_owner_and_popup_after_call_sends_a_hangup() {
    let facts = with_customer(nobody(), customer(201, ALINA, vec![order(301, true)]));
    let ringing = event(json!({"caller": ALINAS_CUSTOMER}), Some("start"));
    let p = plan(&ringing, &facts, &cfg(), None);
    let [Action::PopUp(notice)] = p.actions.as_slice() else {
        panic!("{:?}", p.actions)
    };
    assert_eq!(
        (notice.event_type, notice.user_ids.as_slice()),
        (CallEventType::In, &[ALINA][..])
    );
    assert_eq!(
        plan(&ringing, &nobody(), &cfg(), None).actions,
        vec![],
        "no owner, no pop-up"
    );

    let cfg = PlannerConfig {
        popup_after_call: true,
        ..cfg()
    };
    let p = plan(
        &event(json!({}), None),
        &answered_by(TATIANA, "Tatiana"),
        &cfg,
        None,
    );
    assert_eq!(
        p.keys(),
        ["customer", "order", "task:closed:7", "upload", "popup"]
    );
    let Some(Action::PopUp(notice)) = p.actions.last() else {
        panic!("{:?}", p.actions)
    };
    assert_eq!(
        (notice.event_type, notice.hangup_status.as_deref()),
        (CallEventType::Hangup, Some("answered"))
    );
}

#[test]
fn task_texts_come_from_the_configured_templates() {
    let cfg = PlannerConfig {
        texts: TaskTexts {
            callback: "Передзвонити {phone} ({count})".to_owned(),
            ..TaskTexts::default()
        },
        ..cfg()
    };
    let p = plan(&missed(NEW_CALLER, json!({})), &nobody(), &cfg, None);
    let Action::UpsertCallbackTask { task, .. } = &p.actions[0] else {
        panic!("{:?}", p.actions)
    };
    assert_eq!(task.text, format!("Передзвонити {NEW_CALLER} (1)"));
}

// === decide: site → rule → plan ===

fn two_sites() -> PlannerConfig {
    use crate::domain::site::{Site, Sites};
    PlannerConfig {
        sites: Sites::new(vec![
            Site {
                code: "shop-a".to_owned(),
                project_ids: vec!["100".to_owned()],
                tracking_numbers: vec![n(SHOP_LINE)],
            },
            Site {
                code: "shop-b".to_owned(),
                project_ids: vec!["200".to_owned()],
                tracking_numbers: Vec::new(),
            },
        ]),
        ..cfg()
    }
}

fn site_rules() -> crate::domain::rules::Rules {
    use crate::domain::{phone_number::PhoneNormalizer, rules};
    let normalizer = PhoneNormalizer::new("UA").unwrap();
    let text = "[[rule]]\nname = \"site b\"\nsite = \"shop-b\"\norder_status = \"cancel\"\n\
                [[rule]]\nname = \"known callers\"\ncustomer_exists = true\nignore = true\n";
    rules::compile(
        &[("r.toml".to_owned(), text.to_owned())],
        &rules::CompileOptions {
            normalizer: &normalizer,
            known_managers: &[],
        },
    )
    .unwrap()
}

fn noon() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_naive_utc_and_offset(at(12, 0), chrono::Utc)
}

#[test]
fn decide_tells_the_site_once_and_matches_the_rules_against_it() {
    let (cfg, rules) = (two_sites(), site_rules());
    // Project 200 is shop-b although the tracking number is shop-a's: the project wins.
    let by_project = event(json!({"project_id": "200"}), None);
    let d = decide(
        &by_project,
        &answered_by(TATIANA, "Tatiana"),
        &cfg,
        &rules,
        noon(),
    );
    assert_eq!(d.matched_rule.map(|r| r.name.as_str()), Some("site b"));
    assert_eq!(d.plan.site, "shop-b");
    assert_eq!(
        d.plan.actions[1],
        new_order(NEW_CALLER, CustomerRef::Created, TATIANA, "cancel")
    );

    let by_number = event(json!({}), None);
    let d = decide(
        &by_number,
        &answered_by(TATIANA, "Tatiana"),
        &cfg,
        &rules,
        noon(),
    );
    assert_eq!(d.matched_rule.map(|r| r.name.as_str()), None);
    assert_eq!(d.plan.site, "shop-a");
    assert_eq!(
        d.plan,
        plan(&by_number, &answered_by(TATIANA, "Tatiana"), &cfg, None)
    );

    let unknown_line = event(json!({"dst": UNKNOWN_LINE.trim_start_matches('+')}), None);
    let d = decide(
        &unknown_line,
        &answered_by(TATIANA, "Tatiana"),
        &cfg,
        &rules,
        noon(),
    );
    assert_eq!(d.plan.site, "shop", "crm.default_site");
}

#[test]
fn decide_sees_whether_the_customer_exists_and_explain_agrees_with_it() {
    let (cfg, rules) = (two_sites(), site_rules());
    let known = with_customer(
        answered_by(TATIANA, "Tatiana"),
        customer(5, ALINA, Vec::new()),
    );
    let e = event(json!({}), None);
    let (d, explanation) = decide_explained(&e, &known, &cfg, &rules, noon());
    assert_eq!(
        d.matched_rule.map(|r| r.name.as_str()),
        Some("known callers")
    );
    assert!(d.plan.actions.is_empty(), "ignored: {:?}", d.plan.actions);
    let fired = explanation
        .fired
        .map(|i| explanation.verdicts[i].name.as_str());
    assert_eq!(fired, Some("known callers"));
    assert_eq!(explanation.verdicts[0].misses.len(), 1, "site b: the site");

    let (d, explanation) = decide_explained(&e, &nobody(), &cfg, &rules, noon());
    assert!(d.matched_rule.is_none());
    assert_eq!(explanation.fired, None);
}
