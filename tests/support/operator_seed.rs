//! A seeded call log and dead letters for the operator page's tests (API and browser).

use callgate::{
    domain::{call_log::CallLogEntry, manager::ManagerId, phone_number::PhoneNumber},
    store::Store,
};
use chrono::NaiveDate;

/// The caller of most seeded calls.
pub const CALLER: &str = "+380981234567";
/// The tracking number of the `shop-pl` calls.
pub const PL_TRACKING: &str = "+48221234567";

/// One seeded call: id, minute past 14:00 on 2024-07-31, caller, site, tracking number,
/// manager, result, order date.
pub struct SeedCall {
    pub id: &'static str,
    pub minute: u32,
    pub caller: Option<&'static str>,
    pub site: &'static str,
    pub tracking: &'static str,
    pub manager: Option<u64>,
    pub result: &'static str,
    pub order_date: Option<&'static str>,
}

pub const CALLS: [SeedCall; 6] = [
    SeedCall {
        id: "c1",
        minute: 1,
        caller: Some(CALLER),
        site: "shop-ua",
        tracking: "+380441234567",
        manager: Some(27),
        result: "answered",
        order_date: Some("2024-07-30"),
    },
    SeedCall {
        id: "c2",
        minute: 2,
        caller: Some(CALLER),
        site: "shop-ua",
        tracking: "+380441234567",
        manager: None,
        result: "missed",
        order_date: None,
    },
    SeedCall {
        id: "c3",
        minute: 3,
        caller: Some("+380501112233"),
        site: "shop-pl",
        tracking: PL_TRACKING,
        manager: Some(28),
        result: "answered",
        order_date: Some("2024-07-31"),
    },
    SeedCall {
        id: "c4",
        minute: 4,
        caller: None,
        site: "shop-ua",
        tracking: "+380441234567",
        manager: None,
        result: "unknown",
        order_date: None,
    },
    SeedCall {
        id: "c5",
        minute: 5,
        caller: Some("+380501112233"),
        site: "shop-pl",
        tracking: PL_TRACKING,
        manager: None,
        result: "failed",
        order_date: None,
    },
    SeedCall {
        id: "c6",
        minute: 6,
        caller: Some(CALLER),
        site: "shop-ua",
        tracking: "+380441234567",
        manager: Some(28),
        result: "answered",
        order_date: Some("2024-07-30"),
    },
];

pub fn entry(c: &SeedCall) -> CallLogEntry {
    CallLogEntry {
        call_id: c.id.to_owned(),
        date: NaiveDate::from_ymd_opt(2024, 7, 31)
            .and_then(|d| d.and_hms_opt(14, c.minute, 0))
            .expect("valid date"),
        client_phone: c
            .caller
            .map(|p| PhoneNumber::from_e164(p).expect("seed number")),
        client_raw: c.caller.is_none().then(|| "anonymous".to_owned()),
        incoming: true,
        site: Some(c.site.to_owned()),
        external_number: Some(c.tracking.to_owned()),
        manager_id: c.manager.map(ManagerId),
        result: c.result.to_owned(),
        disposition_raw: Some(c.result.to_uppercase()),
        ambiguous_customer: false,
        order_date: c.order_date.map(str::to_owned),
        note: None,
    }
}

/// Appends [`CALLS`] to the call log.
pub async fn seed_calls(store: &dyn Store) {
    for c in &CALLS {
        store.append_call_log(&entry(c)).await.expect("seed call");
    }
}

/// Puts a task into the dead letters with `reason`; returns its id.
pub async fn seed_dead_letter(store: &dyn Store, group: &str, reason: &str) -> u64 {
    let id = match store
        .enqueue(
            &format!("dedupe:seed:{group}"),
            std::time::Duration::from_secs(3600),
            group,
            br#"{"seed":true}"#,
        )
        .await
        .expect("enqueue")
    {
        callgate::store::EnqueueOutcome::Accepted { id } => id,
        other => panic!("seed task not accepted: {other:?}"),
    };
    let claimed = store
        .claim_next(std::time::Duration::from_secs(3600))
        .await
        .expect("claim")
        .expect("the seeded task is due");
    assert_eq!(claimed.id, id, "the seeded task is the only one");
    store
        .dead_letter(claimed.lease(), reason)
        .await
        .expect("dead letter");
    id
}
