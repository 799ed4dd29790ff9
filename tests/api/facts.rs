//! The worker's facts from the mirrors (issue 17 item 3): once the owner and orders mirrors
//! are imported and followed, a call's customer and open orders come from them (no phone
//! search, no order list at the CRM); the customer and order callgate creates are known to
//! the next call at once; before the mirrors can know, the CRM is asked as before.

use std::time::Duration;

use callgate::{
    config::Settings,
    domain::lookup::LookupPolicy,
    testing::fake_retailcrm::{FakeRetailCrm, Fault, FaultRule},
};
use serde_json::json;

use crate::{
    calls::{after_call, tracking},
    helpers::{
        TestApp, eventually, manual_worker, mirror_on, redis_store, respawn_app_with_crm,
        spawn_app_with_crm, start_fake_crm,
    },
    redis_support::RedisKeys,
};

/// Phone searches (`customers?filter[name]=`) and order lists (`orders?filter[customerId]=`)
/// the fake CRM has answered: what the worker asks when it cannot use the mirrors.
fn fact_requests(crm: &FakeRetailCrm) -> (usize, usize) {
    let with = |path: &str, key: &str| {
        crm.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path == path)
            .filter(|r| r.query.iter().any(|(k, _)| k == key))
            .count()
    };
    (
        with("/api/v5/customers", "filter[name]"),
        with("/api/v5/orders", "filter[customerId]"),
    )
}

async fn readyz(app: &TestApp) -> String {
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    r.text().await.unwrap()
}

/// Waits until both mirrors are imported and their history was read to its end.
async fn wait_mirrors(app: &TestApp) {
    eventually(Duration::from_secs(20), "both mirrors synced", || async {
        let ready = readyz(app).await;
        (ready.contains("mirror synced, lag") && ready.contains("orders synced, lag")).then_some(())
    })
    .await;
}

async fn mirrored_app(crm: &FakeRetailCrm, history_secs: u64) -> TestApp {
    spawn_app_with_crm(crm, |s| {
        manual_worker(s);
        tracking(s);
        mirror_on(s);
        s.sync.history_interval_secs = history_secs;
    })
    .await
}

#[tokio::test]
async fn with_the_mirrors_synced_a_known_customers_call_asks_the_crm_nothing_but_its_task() {
    // Arrange: Alina's customer with an open order and a closed one, imported at start.
    let crm = start_fake_crm().await;
    let customer = crm.add_customer(&["(098) 123-45-67"], Some(27));
    crm.add_order(customer, "complete", Some(27));
    let open = crm.add_order(customer, "assembling", Some(27));
    let app = mirrored_app(&crm, 1).await;
    wait_mirrors(&app).await;
    assert!(readyz(&app).await.contains(" s (1 open)"));

    // Act
    app.post_webhook(&after_call("f1", "380981234567", "ANSWERED", 1027))
        .await;
    app.run_worker_until_idle().await;

    // Assert: S2, the task on the open order, and no search.
    let tasks = crm.tasks();
    assert_eq!(tasks.len(), 1, "{tasks:#?}");
    assert_eq!(tasks[0]["performer"], 27);
    assert_eq!(tasks[0]["order"]["id"], open);
    assert_eq!(crm.orders().len(), 2, "no new order");
    assert_eq!(fact_requests(&crm), (0, 0));
}

#[tokio::test]
async fn what_callgate_creates_is_known_to_the_next_call_before_any_history_poll() {
    // Arrange: history read once after the import, then not for ten minutes.
    let crm = start_fake_crm().await;
    let app = mirrored_app(&crm, 600).await;
    wait_mirrors(&app).await;
    let history_reads = || {
        crm.request_count("GET /api/v5/orders/history")
            + crm.request_count("GET /api/v5/customers/history")
    };
    // Each history: the clock probe, the read ending its import, the first periodic poll.
    eventually(
        Duration::from_secs(10),
        "the first periodic poll",
        || async { (history_reads() == 6).then_some(()) },
    )
    .await;
    let polls = history_reads();

    // Act: a new caller answered by Tatiana (S1), then the same caller again.
    app.post_webhook(&after_call("f2-1", "0671112233", "ANSWERED", 1028))
        .await;
    app.run_worker_until_idle().await;
    app.post_webhook(&after_call("f2-2", "0671112233", "ANSWERED", 1028))
        .await;
    app.run_worker_until_idle().await;

    // Assert: the second call found the customer and the open order the first made (S2):
    // no second customer or order, its task on that order, and nothing asked.
    assert_eq!(crm.customers().len(), 1);
    let orders = crm.orders();
    assert_eq!(orders.len(), 1, "{orders:#?}");
    let tasks = crm.tasks();
    assert_eq!(tasks.len(), 2, "{tasks:#?}");
    assert!(tasks.iter().all(|t| t["order"]["id"] == orders[0]["id"]));
    assert_eq!(fact_requests(&crm), (0, 0));
    assert_eq!(history_reads(), polls, "no history poll in between");
}

#[tokio::test]
async fn an_order_closed_by_hand_in_the_crm_is_closed_for_the_next_call_after_one_poll() {
    // Arrange
    let crm = start_fake_crm().await;
    let customer = crm.add_customer(&["0981234567"], Some(27));
    let order = crm.add_order(customer, "new", Some(27));
    let app = mirrored_app(&crm, 1).await;
    wait_mirrors(&app).await;

    // Act: the order is completed in the CRM; a poll of the orders history follows.
    assert!(crm.set_order_status_by_hand(order, "complete"));
    eventually(
        Duration::from_secs(10),
        "the mirror drops the order",
        || async { readyz(&app).await.contains(" s (0 open)").then_some(()) },
    )
    .await;
    app.post_webhook(&after_call("f3", "380981234567", "ANSWERED", 1027))
        .await;
    app.run_worker_until_idle().await;

    // Assert: S3, a new order for Alina, without a search.
    let orders = crm.orders();
    assert_eq!(orders.len(), 2, "{orders:#?}");
    assert_eq!(orders[1]["status"], "new");
    assert_eq!(orders[1]["managerId"], 27);
    assert_eq!(fact_requests(&crm), (0, 0));
}

#[tokio::test]
async fn before_the_orders_mirror_is_imported_the_crm_is_asked() {
    // Arrange: the key may not read orders/history, so the orders import cannot start;
    // the customers mirror is synced meanwhile.
    let crm = start_fake_crm().await;
    crm.add_fault_rule(FaultRule {
        fault: Fault::AccessDenied403,
        path_prefix: Some("/api/v5/orders/history".into()),
        remaining: None,
    });
    let customer = crm.add_customer(&["0981234567"], Some(27));
    let order = crm.add_order(customer, "new", Some(27));
    let app = mirrored_app(&crm, 1).await;
    eventually(Duration::from_secs(20), "customers synced", || async {
        readyz(&app)
            .await
            .contains("mirror synced, lag")
            .then_some(())
    })
    .await;
    assert!(!readyz(&app).await.contains("orders synced"));

    // Act
    app.post_webhook(&after_call("f4", "380981234567", "ANSWERED", 1027))
        .await;
    app.run_worker_until_idle().await;

    // Assert: the facts were asked of the CRM, and right.
    assert_eq!(fact_requests(&crm), (1, 1));
    let tasks = crm.tasks();
    assert_eq!(tasks.len(), 1, "{tasks:#?}");
    assert_eq!(tasks[0]["order"]["id"], order);
}

#[tokio::test]
async fn a_customer_another_instance_just_made_is_adopted_not_made_twice() {
    // Arrange: the mirrors synced, then a customer made for this number by callgate
    // elsewhere (its externalId), which this instance's mirror has not heard of yet.
    let crm = start_fake_crm().await;
    let app = mirrored_app(&crm, 600).await;
    wait_mirrors(&app).await;
    let made = crm.add_customer_entity(json!({
        "externalId": "callgate-380671112233",
        "phones": [{"number": "+380671112233"}],
        "managerId": 28,
    }));

    // Act
    app.post_webhook(&after_call("f5", "0671112233", "ANSWERED", 1028))
        .await;
    app.run_worker_until_idle().await;

    // Assert: the create was refused and the existing customer taken; no dead letter.
    assert_eq!(crm.customers().len(), 1);
    let orders = crm.orders();
    assert_eq!(orders.len(), 1, "{orders:#?}");
    assert_eq!(orders[0]["customer"]["id"], made);
    assert_eq!(app.state.store.dead_letter_count().await.unwrap(), 0);
    assert_eq!(crm.tasks().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_redis_what_one_instance_creates_is_known_to_the_other_without_a_history_poll() {
    // Arrange: two instances on one Redis, histories read once after the import (then not
    // for ten minutes): whatever reaches the second instance comes over the bus.
    let redis = RedisKeys::new();
    let crm = start_fake_crm().await;
    let on_redis = |s: &mut Settings| {
        manual_worker(s);
        tracking(s);
        mirror_on(s);
        s.sync.history_interval_secs = 600;
        s.lookup.policy = LookupPolicy::Owner;
        redis_store(s, &redis.url, &redis.prefix);
    };
    let a = spawn_app_with_crm(&crm, on_redis).await;
    let b = spawn_app_with_crm(&crm, on_redis).await;
    wait_mirrors(&a).await;
    wait_mirrors(&b).await;

    // Act: a new caller answered by Tatiana, worked on the first instance (S1)…
    a.post_webhook(&after_call("f6-1", "0671112233", "ANSWERED", 1028))
        .await;
    a.run_worker_until_idle().await;
    // …reaches the second instance's mirror (its lookup answers from memory).
    eventually(
        Duration::from_secs(5),
        "b knows the new customer",
        || async {
            (b.get_route("caller=380671112233")
                .await
                .text()
                .await
                .unwrap()
                == "shop_tatiana")
                .then_some(())
        },
    )
    .await;
    // The same caller again, worked on the second instance.
    b.post_webhook(&after_call("f6-2", "0671112233", "ANSWERED", 1028))
        .await;
    // Call records are tasks of their own (main): drain, not one pass.
    b.drain_queue(Duration::from_secs(10)).await;

    // Assert: S2 on the second instance, from its mirrors: one customer, one order with
    // both tasks, nothing searched.
    assert_eq!(crm.customers().len(), 1);
    let orders = crm.orders();
    assert_eq!(orders.len(), 1, "{orders:#?}");
    let tasks = crm.tasks();
    assert_eq!(tasks.len(), 2, "{tasks:#?}");
    assert!(tasks.iter().all(|t| t["order"]["id"] == orders[0]["id"]));
    assert_eq!(fact_requests(&crm), (0, 0));
}

fn order_pages(crm: &FakeRetailCrm, page: &str) -> usize {
    crm.requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/api/v5/orders")
        .filter(|r| r.query.iter().any(|(k, v)| k == "page" && v == page))
        .filter(|r| r.status == Some(200))
        .count()
}

#[tokio::test]
async fn an_orders_import_cut_short_resumes_without_reading_its_finished_pages_again() {
    // Arrange: one customer with 250 orders (3 pages of 100), every third one open; one
    // CRM request per second, so the import can be stopped between pages.
    let crm = start_fake_crm().await;
    let customer = crm.add_customer(&["0981234567"], Some(27));
    for i in 0..250 {
        crm.add_order(customer, if i % 3 == 0 { "new" } else { "complete" }, None);
    }
    let slow = |s: &mut Settings| {
        manual_worker(s);
        mirror_on(s);
        s.crm.rate_limit_rps = 1;
    };
    let first = spawn_app_with_crm(&crm, slow).await;
    eventually(
        Duration::from_secs(30),
        "two order pages imported",
        || async { (order_pages(&crm, "2") == 1).then_some(()) },
    )
    .await;
    eventually(Duration::from_secs(5), "readyz shows it", || async {
        readyz(&first)
            .await
            .contains("orders importing 80% (200/250 orders)")
            .then_some(())
    })
    .await;

    // Act: stop it, start again on the same store.
    let dir = first.dir();
    first.shut_down().await;
    let second = respawn_app_with_crm(dir, &crm, |s| {
        manual_worker(s);
        mirror_on(s);
    })
    .await;
    wait_mirrors(&second).await;

    // Assert: every page read once; the 84 open orders kept.
    assert_eq!(
        (
            order_pages(&crm, "1"),
            order_pages(&crm, "2"),
            order_pages(&crm, "3")
        ),
        (1, 1, 1)
    );
    assert!(readyz(&second).await.contains(" s (84 open)"));
}
