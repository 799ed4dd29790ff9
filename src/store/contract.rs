//! The store contract: behaviour every [`Store`] backend must show, as plain async checks.
//!
//! Each check takes a fresh, empty store and panics (`assert!`) on a violation; it is test
//! code that lives in the library (behind the `testing` feature, which `cargo test` turns on)
//! so every backend's test binary runs the same suite:
//!
//! ```ignore
//! async fn fresh() -> (tempfile::TempDir, Arc<dyn Store>) { /* … */ }
//! callgate::store_contract_tests!(fresh);
//! ```
//!
//! [`store_contract_tests!`](crate::store_contract_tests) expands to one `#[tokio::test]`
//! per check; the first element of the tuple `fresh` returns is a guard kept alive for the
//! test (a temporary directory, a Redis key prefix that deletes its keys on drop).
//!
//! Timing: nothing sleeps to synchronize. Where time must pass (TTLs, leases, delays) the
//! checks use short durations ([`SHORT`]) and poll with a bound ([`eventually`]), so a slow
//! machine only makes them slower, never flaky, and a broken backend fails within
//! [`PATIENCE`].

use std::{future::Future, sync::Arc, time::Duration};

use chrono::NaiveDate;

use super::{EnqueueOutcome, Lease, OwnerEntry, Store, StoreError};
use crate::{
    crm::CustomerId,
    domain::{
        call_log::{CallLogEntry, CallLogFilter, CallLogPosition},
        manager::{ManagerId, ManagerState, ManagerStatus},
        phone_number::PhoneNumber,
    },
};

/// A TTL, lease or delay short enough to wait out in a test.
pub const SHORT: Duration = Duration::from_millis(50);
/// A TTL, lease or delay that must not run out during a test.
pub const LONG: Duration = Duration::from_secs(3600);
/// How long [`eventually`] polls before declaring the backend broken.
pub const PATIENCE: Duration = Duration::from_secs(5);
/// Polls `probe` until it yields `Some`, for at most [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    crate::testing::eventually(PATIENCE, what, probe).await
}

fn phone(e164: &str) -> PhoneNumber {
    PhoneNumber::from_e164(e164).expect("test numbers are canonical")
}

fn accepted(outcome: EnqueueOutcome) -> u64 {
    match outcome {
        EnqueueOutcome::Accepted { id } => id,
        EnqueueOutcome::Duplicate => panic!("expected Accepted, got Duplicate"),
    }
}

async fn enqueue(store: &dyn Store, key: &str, group: &str, payload: &[u8]) -> u64 {
    accepted(
        store
            .enqueue(key, LONG, group, payload)
            .await
            .expect("enqueue"),
    )
}

async fn claim(store: &dyn Store, lease: Duration) -> Option<Lease> {
    store
        .claim_next(lease)
        .await
        .expect("claim_next")
        .map(|t| t.lease())
}

/// Claims and expects task `id`; returns its lease.
async fn claim_id(store: &dyn Store, lease: Duration, id: u64, what: &str) -> Lease {
    let l = claim(store, lease).await.expect(what);
    assert_eq!(l.id, id, "{what}");
    l
}

// --- key/value -----------------------------------------------------------------------

pub async fn kv_set_get_delete(store: Arc<dyn Store>) {
    assert_eq!(store.get_raw("k:a").await.expect("get"), None);
    store.set_raw("k:a", b"one", None).await.expect("set");
    assert_eq!(
        store.get_raw("k:a").await.expect("get").as_deref(),
        Some(&b"one"[..])
    );
    store.set_raw("k:a", b"two", Some(LONG)).await.expect("set");
    assert_eq!(
        store.get_raw("k:a").await.expect("get").as_deref(),
        Some(&b"two"[..])
    );
    store.delete("k:a").await.expect("delete");
    assert_eq!(store.get_raw("k:a").await.expect("get"), None);
    // Deleting what is not there is fine.
    store.delete("k:a").await.expect("delete again");
}

pub async fn kv_ttl_expires(store: Arc<dyn Store>) {
    store
        .set_raw("t:short", b"x", Some(SHORT))
        .await
        .expect("set");
    store
        .set_raw("t:long", b"y", Some(LONG))
        .await
        .expect("set");
    store.set_raw("t:forever", b"z", None).await.expect("set");
    eventually("a 50 ms key expires", || async {
        store
            .get_raw("t:short")
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    let live: Vec<String> = store
        .scan_prefix("t:", 10)
        .await
        .expect("scan")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        live,
        ["t:forever", "t:long"],
        "expired keys are not scanned"
    );
    assert!(
        store
            .set_raw_if_absent("t:short", b"again", None)
            .await
            .expect("set_if_absent"),
        "an expired key counts as absent"
    );
    assert!(
        !store
            .set_raw_if_absent("t:long", b"again", None)
            .await
            .expect("set_if_absent"),
        "a live key is present"
    );
}

pub async fn kv_scan_prefix_in_key_order_with_limit(store: Arc<dyn Store>) {
    for key in ["p:b", "p:a", "p:c", "q:a", "o:z", "p"] {
        store.set_raw(key, key.as_bytes(), None).await.expect("set");
    }
    let all = store.scan_prefix("p:", 100).await.expect("scan");
    assert_eq!(
        all,
        vec![
            ("p:a".to_owned(), b"p:a".to_vec()),
            ("p:b".to_owned(), b"p:b".to_vec()),
            ("p:c".to_owned(), b"p:c".to_vec()),
        ]
    );
    let two = store.scan_prefix("p:", 2).await.expect("scan");
    assert_eq!(two.len(), 2);
    assert_eq!(two[1].0, "p:b");
    assert!(
        store
            .scan_prefix("none:", 10)
            .await
            .expect("scan")
            .is_empty()
    );
}

pub async fn lists_keep_append_order_per_key(store: Arc<dyn Store>) {
    for (key, value) in [("l:1", "a"), ("l:1:2", "x"), ("l:1", "b"), ("l:1", "c")] {
        store
            .append_list(key, value.as_bytes(), LONG)
            .await
            .expect("append");
    }
    let read = |key: &'static str, limit: usize| {
        let store = store.clone();
        async move { store.read_list(key, limit).await.expect("read") }
    };
    assert_eq!(
        read("l:1", 10).await,
        [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
    assert_eq!(
        read("l:1", 2).await,
        [b"a".to_vec(), b"b".to_vec()],
        "the first `limit` values"
    );
    assert!(read("l:1", 0).await.is_empty());
    assert_eq!(
        read("l:1:2", 10).await,
        [b"x".to_vec()],
        "a key that extends another is its own list"
    );
    assert!(read("l:", 10).await.is_empty(), "no prefix matching");
    assert!(read("l:none", 10).await.is_empty());
    assert_eq!(
        store.get_raw("l:1").await.expect("get"),
        None,
        "lists are not key/value records"
    );
    assert!(
        store.scan_prefix("l:", 10).await.expect("scan").is_empty(),
        "nor scanned as such"
    );
    store
        .append_list("l:short", b"gone", SHORT)
        .await
        .expect("append");
    eventually("a list appended with a 50 ms TTL expires", || async {
        read("l:short", 10).await.is_empty().then_some(())
    })
    .await;
    assert_eq!(read("l:1", 10).await.len(), 3, "other lists stay");
}

/// Volatile writes (a crash may lose the last of them) read back, replace, append in order
/// and expire exactly as the durable ones do.
pub async fn volatile_writes_read_like_any_other(store: Arc<dyn Store>) {
    store.set_raw("v:a", b"durable", None).await.expect("set");
    store
        .set_raw_volatile("v:a", b"volatile", Some(LONG))
        .await
        .expect("set volatile");
    assert_eq!(
        store.get_raw("v:a").await.expect("get").as_deref(),
        Some(&b"volatile"[..]),
        "a volatile write replaces a durable one"
    );
    for (value, volatile) in [("a", false), ("b", true), ("c", false), ("d", true)] {
        let appended = if volatile {
            store
                .append_list_volatile("v:l", value.as_bytes(), LONG)
                .await
        } else {
            store.append_list("v:l", value.as_bytes(), LONG).await
        };
        appended.expect("append");
    }
    assert_eq!(
        store.read_list("v:l", 10).await.expect("read"),
        [b"a".to_vec(), b"b".to_vec(), b"c".to_vec(), b"d".to_vec()],
        "volatile and durable appends keep one order"
    );
    store
        .set_raw_volatile("v:short", b"gone", Some(SHORT))
        .await
        .expect("set volatile");
    store
        .append_list_volatile("v:short-list", b"gone", SHORT)
        .await
        .expect("append volatile");
    eventually("volatile writes with a 50 ms TTL expire", || async {
        let kv = store.get_raw("v:short").await.expect("get");
        let list = store.read_list("v:short-list", 10).await.expect("read");
        (kv.is_none() && list.is_empty()).then_some(())
    })
    .await;
}

pub async fn set_if_absent_race_has_one_winner(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .set_raw_if_absent("lock:race", format!("{i}").as_bytes(), Some(LONG))
                    .await
                    .expect("set_if_absent")
            })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        if t.await.expect("task") {
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "exactly one concurrent set_if_absent wins");
    assert!(store.get_raw("lock:race").await.expect("get").is_some());
}

pub async fn number_locks_are_deleted_and_renewed_by_their_owner_only(store: Arc<dyn Store>) {
    assert!(
        store
            .set_raw_if_absent("lock:x", b"mine", Some(LONG))
            .await
            .expect("take")
    );
    assert!(
        !store
            .delete_if_equals("lock:x", b"theirs")
            .await
            .expect("cad")
    );
    assert!(
        !store
            .expire_if_equals("lock:x", b"theirs", SHORT)
            .await
            .expect("cax")
    );
    assert_eq!(
        store.get_raw("lock:x").await.expect("get").as_deref(),
        Some(&b"mine"[..])
    );
    // The owner renews it to a short TTL: it runs out, and a new owner takes it; the old
    // owner can neither renew nor delete the new owner's lock.
    assert!(
        store
            .expire_if_equals("lock:x", b"mine", SHORT)
            .await
            .expect("cax")
    );
    eventually("the renewed TTL runs out", || async {
        store
            .set_raw_if_absent("lock:x", b"next", Some(LONG))
            .await
            .expect("take")
            .then_some(())
    })
    .await;
    assert!(
        !store
            .expire_if_equals("lock:x", b"mine", LONG)
            .await
            .expect("cax")
    );
    assert!(
        !store
            .delete_if_equals("lock:x", b"mine")
            .await
            .expect("cad")
    );
    assert!(
        store
            .delete_if_equals("lock:x", b"next")
            .await
            .expect("cad")
    );
    assert_eq!(store.get_raw("lock:x").await.expect("get"), None);
    assert!(
        !store
            .delete_if_equals("lock:x", b"next")
            .await
            .expect("cad"),
        "gone"
    );
}

pub async fn next_id_counts_from_one_per_sequence(store: Arc<dyn Store>) {
    assert_eq!(store.next_id("a").await.expect("next"), 1);
    assert_eq!(store.next_id("a").await.expect("next"), 2);
    assert_eq!(store.next_id("b").await.expect("next"), 1);
    assert_eq!(store.next_id("a").await.expect("next"), 3);
}

// --- owners and managers -------------------------------------------------------------

pub async fn owner_entries_positive_negative_and_ttl(store: Arc<dyn Store>) {
    let known = phone("+380981234567");
    let unknown = phone("+380501112233");
    let short = phone("+74952680649");
    assert_eq!(store.get_owner(&known).await.expect("get"), None);

    let entry = OwnerEntry {
        customer_id: Some(CustomerId(42)),
        manager_id: Some(ManagerId(7)),
    };
    store.put_owner(&known, entry, LONG).await.expect("put");
    store
        .put_owner(&unknown, OwnerEntry::NEGATIVE, LONG)
        .await
        .expect("put");
    store
        .put_owner(
            &short,
            OwnerEntry {
                customer_id: Some(CustomerId(1)),
                manager_id: None,
            },
            SHORT,
        )
        .await
        .expect("put");

    assert_eq!(store.get_owner(&known).await.expect("get"), Some(entry));
    let negative = store.get_owner(&unknown).await.expect("get");
    assert_eq!(negative, Some(OwnerEntry::NEGATIVE));
    assert!(negative.is_some_and(|e| e.is_negative()));

    // Overwrite: the newest entry wins.
    let moved = OwnerEntry {
        customer_id: Some(CustomerId(42)),
        manager_id: Some(ManagerId(8)),
    };
    store.put_owner(&known, moved, LONG).await.expect("put");
    assert_eq!(store.get_owner(&known).await.expect("get"), Some(moved));

    eventually("a 50 ms owner entry expires", || async {
        store
            .get_owner(&short)
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(store.get_owner(&known).await.expect("get"), Some(moved));
}

pub async fn manager_states_roundtrip(store: Arc<dyn Store>) {
    assert_eq!(
        store.get_manager_state(ManagerId(1)).await.expect("get"),
        None
    );
    let busy = ManagerState {
        status: ManagerStatus::Busy,
        online: Some(true),
    };
    store
        .set_manager_state(ManagerId(1), busy)
        .await
        .expect("set");
    store
        .set_manager_state(ManagerId(2), ManagerState::default())
        .await
        .expect("set");
    assert_eq!(
        store.get_manager_state(ManagerId(1)).await.expect("get"),
        Some(busy)
    );
    let away = ManagerState {
        status: ManagerStatus::Dinner,
        online: Some(false),
    };
    store
        .set_manager_state(ManagerId(1), away)
        .await
        .expect("set");
    assert_eq!(
        store.get_manager_state(ManagerId(1)).await.expect("get"),
        Some(away)
    );
    assert_eq!(
        store.get_manager_state(ManagerId(2)).await.expect("get"),
        Some(ManagerState::default())
    );
}

// --- call log ------------------------------------------------------------------------

fn call(
    call_id: &str,
    minute: u32,
    from: Option<&str>,
    manager: Option<u64>,
    site: &str,
    result: &str,
) -> CallLogEntry {
    CallLogEntry {
        call_id: call_id.to_owned(),
        date: NaiveDate::from_ymd_opt(2024, 7, 31)
            .and_then(|d| d.and_hms_opt(14, minute, 0))
            .expect("valid date"),
        client_phone: from.map(phone),
        client_raw: from.is_none().then(|| "anonymous".to_owned()),
        incoming: true,
        site: Some(site.to_owned()),
        external_number: Some("+380441234567".to_owned()),
        manager_id: manager.map(ManagerId),
        result: result.to_owned(),
        disposition_raw: Some(result.to_uppercase()),
        ambiguous_customer: false,
        order_date: Some("2024-07-30".to_owned()),
        note: None,
    }
}

pub async fn call_log_newest_first_filters_and_last_talked(store: Arc<dyn Store>) {
    let a = "+380981234567";
    let b = "+380501112233";
    let entries = [
        call("c1", 1, Some(a), Some(7), "shop-ua", "answered"),
        call("c2", 2, Some(a), None, "shop-ua", "missed"),
        call("c3", 3, Some(b), Some(8), "shop-pl", "answered"),
        call("c4", 4, None, None, "shop-ua", "unknown"),
        call("c5", 5, Some(a), Some(9), "shop-pl", "answered"),
    ];
    for e in &entries {
        store.append_call_log(e).await.expect("append");
    }
    // A late entry (reconciliation) about an older call does not displace the newest talk.
    store
        .append_call_log(&call("c0", 0, Some(a), Some(6), "shop-ua", "answered"))
        .await
        .expect("append");

    let all = store
        .query_call_log(&CallLogFilter::default(), None, 100)
        .await
        .expect("query");
    let ids: Vec<&str> = all.iter().map(|e| e.entry.call_id.as_str()).collect();
    assert_eq!(ids, ["c5", "c4", "c3", "c2", "c1", "c0"], "newest first");
    assert_eq!(all[0].entry, entries[4], "entries come back as stored");

    let limited = store
        .query_call_log(&CallLogFilter::default(), None, 2)
        .await
        .expect("query");
    assert_eq!(limited.len(), 2);

    let ua_answered = CallLogFilter {
        site: Some("shop-ua".to_owned()),
        result: Some("answered".to_owned()),
        ..CallLogFilter::default()
    };
    let ids: Vec<String> = store
        .query_call_log(&ua_answered, None, 100)
        .await
        .expect("query")
        .into_iter()
        .map(|e| e.entry.call_id)
        .collect();
    assert_eq!(ids, ["c1", "c0"]);
    let by_manager = CallLogFilter {
        manager_id: Some(ManagerId(8)),
        ..CallLogFilter::default()
    };
    let ids: Vec<String> = store
        .query_call_log(&by_manager, None, 100)
        .await
        .expect("query")
        .into_iter()
        .map(|e| e.entry.call_id)
        .collect();
    assert_eq!(ids, ["c3"]);

    assert_eq!(
        store.last_talked(&phone(a)).await.expect("last"),
        Some(ManagerId(9))
    );
    assert_eq!(
        store.last_talked(&phone(b)).await.expect("last"),
        Some(ManagerId(8))
    );
    assert_eq!(
        store
            .last_talked(&phone("+380670000000"))
            .await
            .expect("last"),
        None
    );
}

/// Call ids of one page of the log.
async fn page_ids(
    store: &dyn Store,
    filter: &CallLogFilter,
    before: Option<CallLogPosition>,
    limit: usize,
) -> (Vec<String>, Option<CallLogPosition>) {
    let page = store
        .query_call_log(filter, before, limit)
        .await
        .expect("query");
    let last = page.last().map(|c| c.position);
    (page.into_iter().map(|c| c.entry.call_id).collect(), last)
}

pub async fn call_log_pages_are_stable_under_inserts(store: Arc<dyn Store>) {
    let a = "+380981234567";
    // Two calls in the same minute: the append sequence orders them.
    for (id, minute) in [("c1", 1), ("c2", 2), ("c3", 3), ("c3b", 3), ("c4", 4)] {
        store
            .append_call_log(&call(id, minute, Some(a), None, "shop-ua", "missed"))
            .await
            .expect("append");
    }
    let all = CallLogFilter::default();
    let (first, cursor) = page_ids(&*store, &all, None, 2).await;
    assert_eq!(first, ["c4", "c3b"]);
    // New calls, newer and (late) older than the page boundary, arrive between two pages.
    for (id, minute) in [("c5", 5), ("c3c", 3), ("c0", 0)] {
        store
            .append_call_log(&call(id, minute, Some(a), None, "shop-ua", "missed"))
            .await
            .expect("append");
    }
    let (second, cursor) = page_ids(&*store, &all, cursor, 2).await;
    assert_eq!(second, ["c3", "c2"], "neither repeated nor skipped");
    let (third, cursor) = page_ids(&*store, &all, cursor, 2).await;
    assert_eq!(third, ["c1", "c0"]);
    let (rest, _) = page_ids(&*store, &all, cursor, 2).await;
    assert!(rest.is_empty(), "{rest:?}");

    // The cursor and the filter combine: a filtered page goes on where the last one ended.
    let window = CallLogFilter {
        from: Some(call("", 1, None, None, "", "").date),
        to: Some(call("", 4, None, None, "", "").date),
        ..CallLogFilter::default()
    };
    let (first, cursor) = page_ids(&*store, &window, None, 1).await;
    assert_eq!(first, ["c3c"]);
    let (second, _) = page_ids(&*store, &window, cursor, 10).await;
    assert_eq!(second, ["c3b", "c3", "c2", "c1"]);
}

// --- queue ---------------------------------------------------------------------------

pub async fn queue_is_fifo_and_complete_removes(store: Arc<dyn Store>) {
    assert_eq!(claim(&*store, LONG).await, None, "empty queue");
    let ids = [
        enqueue(&*store, "d:1", "g1", b"one").await,
        enqueue(&*store, "d:2", "g2", b"two").await,
        enqueue(&*store, "d:3", "g3", b"three").await,
    ];
    assert!(ids[0] < ids[1] && ids[1] < ids[2], "ids increase");
    assert_eq!(store.queue_depth().await.expect("depth"), 3);
    let listed: Vec<u64> = store
        .list_queue(10)
        .await
        .expect("list")
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(listed, ids);

    let first = store
        .claim_next(LONG)
        .await
        .expect("claim")
        .expect("a task");
    assert_eq!(first.id, ids[0]);
    assert_eq!(first.group, "g1");
    assert_eq!(first.payload, b"one");
    assert_eq!(first.attempt, 0);
    assert_eq!(first.last_error, None);
    assert!(first.enqueued_at_ms > 0);
    let second = claim_id(&*store, LONG, ids[1], "second").await;
    assert_eq!(
        store.queue_depth().await.expect("depth"),
        3,
        "leased tasks count"
    );

    store.complete(first.lease()).await.expect("complete");
    store.complete(second).await.expect("complete");
    assert_eq!(store.queue_depth().await.expect("depth"), 1);
    let third = claim_id(&*store, LONG, ids[2], "third").await;
    assert_eq!(claim(&*store, LONG).await, None, "all leased");
    store.complete(third).await.expect("complete");
    assert_eq!(store.queue_depth().await.expect("depth"), 0);
    assert!(store.list_queue(10).await.expect("list").is_empty());
}

pub async fn queue_keeps_group_order(store: Arc<dyn Store>) {
    let a1 = enqueue(&*store, "d:a1", "call-a", b"a start").await;
    let a2 = enqueue(&*store, "d:a2", "call-a", b"a end").await;
    let b1 = enqueue(&*store, "d:b1", "call-b", b"b end").await;

    let lease_a1 = claim_id(&*store, LONG, a1, "a1 first").await;
    claim_id(&*store, LONG, b1, "a2 waits for a1; group B is not blocked").await;
    assert_eq!(claim(&*store, LONG).await, None);
    store.complete(lease_a1).await.expect("complete");
    claim_id(&*store, LONG, a2, "a2 after a1 is done").await;

    // A rescheduled head keeps blocking its group until it is done.
    let c1 = enqueue(&*store, "d:c1", "call-c", b"c1").await;
    let c2 = enqueue(&*store, "d:c2", "call-c", b"c2").await;
    let lease_c1 = claim_id(&*store, LONG, c1, "c1").await;
    store
        .reschedule(lease_c1, SHORT, "CRM down")
        .await
        .expect("reschedule");
    let lease_c1 = eventually("c1 is due again; c2 may not overtake it", || async {
        claim(&*store, LONG).await
    })
    .await;
    assert_eq!(lease_c1.id, c1);
    store
        .dead_letter(lease_c1, "bad content")
        .await
        .expect("dead");
    claim_id(&*store, LONG, c2, "c2 after c1 is parked").await;
}

pub async fn expired_lease_redelivers(store: Arc<dyn Store>) {
    let id = enqueue(&*store, "d:lease", "g", b"p").await;
    let stale = claim_id(&*store, SHORT, id, "first claim").await;
    let again = eventually("an expired lease frees the task", || async {
        claim(&*store, LONG).await
    })
    .await;
    assert_eq!(again.id, id);
    assert_ne!(again.token, stale.token, "a new claim, a new token");
    assert_eq!(claim(&*store, LONG).await, None, "leased again");
    // The worker whose lease ran out can change nothing any more.
    for refused in [
        store.complete(stale).await,
        store.reschedule(stale, SHORT, "late").await,
        store.postpone(stale, SHORT).await,
        store.dead_letter(stale, "late").await,
        store.renew_lease(stale, LONG).await,
    ] {
        assert!(matches!(refused, Err(StoreError::LeaseLost(i)) if i == id));
    }
    let listed = store.list_queue(10).await.expect("list");
    assert_eq!((listed.len(), listed[0].attempt), (1, 0), "nothing changed");
    assert_eq!(store.dead_letter_count().await.expect("count"), 0);
    store.complete(again).await.expect("complete");
    // Completing twice: the second holds no lease any more.
    assert!(matches!(
        store.complete(again).await,
        Err(StoreError::LeaseLost(_))
    ));
    assert_eq!(store.queue_depth().await.expect("depth"), 0);
}

pub async fn a_renewed_lease_outlives_its_first_term(store: Arc<dyn Store>) {
    let id = enqueue(&*store, "d:renew", "g", b"p").await;
    let lease = claim_id(&*store, Duration::from_millis(300), id, "claim").await;
    // Renew well within each term, for several terms: nobody else may claim it.
    let until = std::time::Instant::now() + Duration::from_millis(900);
    while std::time::Instant::now() < until {
        store
            .renew_lease(lease, Duration::from_millis(300))
            .await
            .expect("renew a held lease");
        assert_eq!(claim(&*store, LONG).await, None, "a renewed lease holds");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store
        .complete(lease)
        .await
        .expect("complete under a renewed lease");
    assert_eq!(store.queue_depth().await.expect("depth"), 0);
}

pub async fn reschedule_delays_and_counts_attempts(store: Arc<dyn Store>) {
    let id = enqueue(&*store, "d:r", "g", b"p").await;
    let other = enqueue(&*store, "d:o", "h", b"q").await;
    let lease = claim_id(&*store, LONG, id, "first").await;
    store
        .reschedule(lease, Duration::from_millis(200), "timeout")
        .await
        .expect("reschedule");
    claim_id(&*store, LONG, other, "the delayed task waits").await;
    assert_eq!(claim(&*store, LONG).await, None, "not before its delay");
    let task = eventually("a delayed task becomes due", || async {
        store.claim_next(LONG).await.expect("claim")
    })
    .await;
    assert_eq!(task.id, id);
    assert_eq!(task.attempt, 1);
    assert_eq!(task.last_error.as_deref(), Some("timeout"));
    assert_eq!(task.payload, b"p");

    store
        .reschedule(task.lease(), LONG, "still down")
        .await
        .expect("reschedule");
    assert_eq!(claim(&*store, LONG).await, None);
    assert_eq!(
        store.retry_all_now().await.expect("retry all"),
        1,
        "one delayed task made due"
    );
    let task = store
        .claim_next(LONG)
        .await
        .expect("claim")
        .expect("due now");
    assert_eq!((task.id, task.attempt), (id, 2));

    let unknown = Lease {
        id: u64::MAX,
        token: task.lease_token,
    };
    assert!(matches!(
        store.reschedule(unknown, SHORT, "x").await,
        Err(StoreError::LeaseLost(_))
    ));
}

pub async fn postpone_delays_without_counting_an_attempt(store: Arc<dyn Store>) {
    let id = enqueue(&*store, "d:p", "g", b"p").await;
    let lease = claim_id(&*store, LONG, id, "first").await;
    store
        .reschedule(lease, Duration::ZERO, "503")
        .await
        .expect("reschedule");
    let lease = claim_id(&*store, LONG, id, "again").await;
    store
        .postpone(lease, Duration::from_millis(200))
        .await
        .expect("postpone");
    assert_eq!(claim(&*store, LONG).await, None, "not before its delay");
    let task = eventually("a postponed task becomes due", || async {
        store.claim_next(LONG).await.expect("claim")
    })
    .await;
    assert_eq!(task.id, id);
    assert_eq!(task.attempt, 1, "postponing is not an attempt");
    assert_eq!(
        task.last_error.as_deref(),
        Some("503"),
        "the last error stays"
    );
    assert!(matches!(
        store.postpone(lease, SHORT).await,
        Err(StoreError::LeaseLost(_))
    ));
}

pub async fn dead_letters_and_replay(store: Arc<dyn Store>) {
    let id = enqueue(&*store, "d:dl", "g", b"payload").await;
    let lease = claim_id(&*store, LONG, id, "first").await;
    store
        .reschedule(lease, Duration::ZERO, "503")
        .await
        .expect("reschedule");
    let lease = claim_id(&*store, LONG, id, "again").await;
    store
        .dead_letter(lease, "400 Errors in the entity format")
        .await
        .expect("dead letter");
    assert_eq!(store.queue_depth().await.expect("depth"), 0);
    assert_eq!(claim(&*store, LONG).await, None);
    assert_eq!(store.dead_letter_count().await.expect("count"), 1);

    let dead = store.list_dead_letters(10).await.expect("list");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].task.id, id);
    assert_eq!(dead[0].task.payload, b"payload");
    assert_eq!(dead[0].task.attempt, 1);
    assert_eq!(dead[0].task.last_error.as_deref(), Some("503"));
    assert_eq!(dead[0].reason, "400 Errors in the entity format");
    assert!(dead[0].failed_at_ms > 0);

    assert!(matches!(
        store.dead_letter(lease, "again").await,
        Err(StoreError::LeaseLost(_))
    ));
    assert!(!store.replay_dead_letter(u64::MAX).await.expect("replay"));
    assert!(store.replay_dead_letter(id).await.expect("replay"));
    assert!(!store.replay_dead_letter(id).await.expect("replay"), "once");
    assert_eq!(store.dead_letter_count().await.expect("count"), 0);
    let task = store
        .claim_next(LONG)
        .await
        .expect("claim")
        .expect("replayed");
    assert_eq!(task.id, id);
    assert_eq!(task.attempt, 0, "attempts reset");
    assert_eq!(task.payload, b"payload");
    store.complete(task.lease()).await.expect("complete");
}

pub async fn discarded_dead_letters_are_gone(store: Arc<dyn Store>) {
    let keep = enqueue(&*store, "d:keep", "g1", b"keep").await;
    let drop = enqueue(&*store, "d:drop", "g2", b"drop").await;
    for id in [keep, drop] {
        let lease = claim_id(&*store, LONG, id, "claim").await;
        store.dead_letter(lease, "400").await.expect("dead letter");
    }
    assert!(!store.discard_dead_letter(u64::MAX).await.expect("discard"));
    assert!(store.discard_dead_letter(drop).await.expect("discard"));
    assert!(
        !store.discard_dead_letter(drop).await.expect("discard"),
        "once"
    );
    assert_eq!(store.dead_letter_count().await.expect("count"), 1);
    let left: Vec<u64> = store
        .list_dead_letters(10)
        .await
        .expect("list")
        .into_iter()
        .map(|d| d.task.id)
        .collect();
    assert_eq!(left, [keep]);
    assert!(
        !store.replay_dead_letter(drop).await.expect("replay"),
        "not replayable"
    );
    assert_eq!(store.queue_depth().await.expect("depth"), 0, "not queued");
}

pub async fn enqueue_dedupes(store: Arc<dyn Store>) {
    let first = store
        .enqueue("dedupe:rs:1", LONG, "g", b"p")
        .await
        .expect("enqueue");
    assert!(matches!(first, EnqueueOutcome::Accepted { .. }));
    assert_eq!(
        store
            .enqueue("dedupe:rs:1", LONG, "g", b"p")
            .await
            .expect("enqueue"),
        EnqueueOutcome::Duplicate
    );
    assert_eq!(store.queue_depth().await.expect("depth"), 1);

    // Concurrent duplicates: one is stored.
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .enqueue("dedupe:rs:2", LONG, "g2", b"p")
                    .await
                    .expect("enqueue")
            })
        })
        .collect();
    let mut accepted_count = 0;
    for t in tasks {
        if matches!(t.await.expect("task"), EnqueueOutcome::Accepted { .. }) {
            accepted_count += 1;
        }
    }
    assert_eq!(accepted_count, 1);

    // The dedupe window ends.
    accepted(
        store
            .enqueue("dedupe:rs:3", SHORT, "g3", b"p")
            .await
            .expect("enqueue"),
    );
    eventually("a dedupe key expires", || async {
        matches!(
            store
                .enqueue("dedupe:rs:3", SHORT, "g3", b"p")
                .await
                .expect("enqueue"),
            EnqueueOutcome::Accepted { .. }
        )
        .then_some(())
    })
    .await;
    assert_eq!(store.queue_depth().await.expect("depth"), 4);
}

// --- quarantine ----------------------------------------------------------------------

pub async fn quarantine_lists_newest_first(store: Arc<dyn Store>) {
    assert!(store.list_quarantine(10).await.expect("list").is_empty());
    let a = store
        .quarantine("no caller", Some("application/json"), "{\"x\":1}")
        .await
        .expect("quarantine");
    let b = store
        .quarantine("bad date", None, "calldate=yesterday")
        .await
        .expect("quarantine");
    assert_ne!(a, b);
    let listed = store.list_quarantine(10).await.expect("list");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].id, b);
    assert_eq!(listed[0].reason, "bad date");
    assert_eq!(listed[0].content_type, None);
    assert_eq!(listed[0].raw, "calldate=yesterday");
    assert!(listed[0].received_at_ms > 0);
    assert_eq!(listed[1].id, a);
    assert_eq!(listed[1].content_type.as_deref(), Some("application/json"));
    assert_eq!(store.list_quarantine(1).await.expect("list").len(), 1);
}

pub async fn ping_answers(store: Arc<dyn Store>) {
    store.ping().await.expect("ping");
}

/// Expands to one `#[tokio::test]` per contract check. `$fresh` is an async fn returning
/// `(guard, Arc<dyn Store>)` with a fresh, empty store; the guard lives as long as the test.
#[macro_export]
macro_rules! store_contract_tests {
    ($fresh:ident) => {
        $crate::store_contract_tests!(@each $fresh;
            kv_set_get_delete,
            kv_ttl_expires,
            kv_scan_prefix_in_key_order_with_limit,
            lists_keep_append_order_per_key,
            volatile_writes_read_like_any_other,
            set_if_absent_race_has_one_winner,
            next_id_counts_from_one_per_sequence,
            owner_entries_positive_negative_and_ttl,
            manager_states_roundtrip,
            call_log_newest_first_filters_and_last_talked,
            call_log_pages_are_stable_under_inserts,
            queue_is_fifo_and_complete_removes,
            queue_keeps_group_order,
            expired_lease_redelivers,
            a_renewed_lease_outlives_its_first_term,
            number_locks_are_deleted_and_renewed_by_their_owner_only,
            reschedule_delays_and_counts_attempts,
            postpone_delays_without_counting_an_attempt,
            dead_letters_and_replay,
            discarded_dead_letters_are_gone,
            enqueue_dedupes,
            quarantine_lists_newest_first,
            ping_answers,
        );
    };
    (@each $fresh:ident; $($check:ident),* $(,)?) => {
        mod store_contract {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let (_guard, store) = super::$fresh().await;
                    $crate::store::contract::$check(store).await;
                }
            )*
        }
    };
}
