//! Several callgate instances behind a load balancer, sharing one Redis (SPEC §2, §7): what
//! one instance does, the other sees — the per-number lock included.

use std::time::Duration;

use crate::{
    calls::{after_call, tracking},
    helpers::{eventually, fast_retries, redis_store, spawn_app_with_crm, start_fake_crm},
    redis_support::RedisKeys,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_redis_make_one_customer_for_simultaneous_calls_from_a_new_number() {
    // Arrange: two callgates (two ports, one Redis, one prefix) and one strict fake retailCRM.
    let redis = RedisKeys::new();
    let crm = start_fake_crm().await;
    let configure = |s: &mut callgate::config::Settings| {
        redis_store(s, &redis.url, &redis.prefix);
        s.worker.concurrency = 4;
        fast_retries(s);
        tracking(s);
    };
    let a = spawn_app_with_crm(&crm, configure).await;
    let b = spawn_app_with_crm(&crm, configure).await;
    assert_ne!(a.address, b.address);

    // Act: the load balancer sends one webhook to each, at the same moment.
    let first = after_call("lb-1", "0931112233", "ANSWERED", 1028);
    let second = after_call("lb-2", "+380931112233", "ANSWERED", 1027);
    let (ra, rb) = tokio::join!(a.post_webhook(&first), b.post_webhook(&second));

    // Assert
    assert_eq!((ra.status().as_u16(), rb.status().as_u16()), (200, 200));
    eventually(Duration::from_secs(10), "both calls uploaded", || async {
        (crm.calls().len() == 2).then_some(())
    })
    .await;
    assert_eq!(crm.customers().len(), 1, "{:#?}", crm.customers());
    assert_eq!(
        crm.orders().len(),
        1,
        "the second call sees the first call's open order"
    );
    // The tasks complete after their last CRM action: wait for the shared queue to empty.
    let store = a.state.store.clone();
    eventually(Duration::from_secs(10), "the shared queue empties", || {
        let store = store.clone();
        async move { (store.queue_depth().await.expect("depth") == 0).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_redis_reconciling_at_once_queue_each_lost_call_once() {
    use callgate::testing::fake_ringostat::{FakeRingostat, FakeRingostatConfig};

    use crate::{
        helpers::{crm_settings, manual_worker, start_in, with_ringostat},
        reconcile::{burst_call, now_local},
    };

    let redis = RedisKeys::new();
    let crm = start_fake_crm().await;
    let ringostat = FakeRingostat::start(FakeRingostatConfig::default()).await;
    let start = now_local() - chrono::Duration::minutes(3);
    for i in 0..12 {
        ringostat.add_call(burst_call("lbr", i, start + chrono::Duration::seconds(i as i64)).0);
    }
    let (dir_a, dir_b) = (
        tempfile::TempDir::new().unwrap(),
        tempfile::TempDir::new().unwrap(),
    );
    let mut settings_a = crm_settings(&crm, &dir_a);
    let mut settings_b = crm_settings(&crm, &dir_b);
    for settings in [&mut settings_a, &mut settings_b] {
        redis_store(settings, &redis.url, &redis.prefix);
        manual_worker(settings);
        tracking(settings);
    }
    with_ringostat(&mut settings_a, &ringostat);
    with_ringostat(&mut settings_b, &ringostat);
    let a = start_in(settings_a, Some(crm.clone())).await;
    let b = start_in(settings_b, Some(crm.clone())).await;

    let (ra, rb) = tokio::join!(
        a.reconciler.as_ref().unwrap().run_once(),
        b.reconciler.as_ref().unwrap().run_once()
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(ra.ran || rb.ran, "{ra:?} {rb:?}");
    assert_eq!(ra.recovered + rb.recovered, 12, "{ra:?} {rb:?}");
    assert_eq!(a.state.store.queue_depth().await.unwrap(), 12);
    a.drain_queue(Duration::from_secs(30)).await;
    let mut ids: Vec<String> = crm
        .calls()
        .iter()
        .map(|c| c["externalId"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!((ids.len(), crm.calls().len()), (12, 12));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_status_set_through_one_instance_routes_the_other_instances_next_lookups() {
    // Arrange: two callgates on one Redis (default policy `owner_if_available`), both
    // routing Alina's customer; the lookups read manager states from memory.
    let redis = RedisKeys::new();
    let crm = start_fake_crm().await;
    crm.add_customer(&["0981234567"], Some(27));
    let configure = |s: &mut callgate::config::Settings| {
        redis_store(s, &redis.url, &redis.prefix);
    };
    let a = spawn_app_with_crm(&crm, configure).await;
    let b = spawn_app_with_crm(&crm, configure).await;
    assert_eq!(destination(&b).await.0, "shop_alina");

    // Act: retailCRM tells instance A that Alina went to dinner.
    assert_eq!(a.set_user_status(27, "dinner").await.status(), 200);

    // Assert: A at once; B within about a second (the sync bus), without a restart.
    assert_eq!(
        destination(&a).await,
        (serde_json::Value::Null, "owner_unavailable".into())
    );
    eventually(Duration::from_secs(1), "B sees Alina at dinner", || async {
        (destination(&b).await.1 == "owner_unavailable").then_some(())
    })
    .await;
    // And back: set through B this time, seen by A.
    assert_eq!(b.set_user_status(27, "free").await.status(), 200);
    eventually(Duration::from_secs(1), "A sees Alina free", || async {
        (destination(&a).await.0 == "shop_alina").then_some(())
    })
    .await;
    // A third instance started now loads the stored state.
    assert_eq!(a.set_user_status(27, "break").await.status(), 200);
    let c = spawn_app_with_crm(&crm, configure).await;
    assert_eq!(destination(&c).await.1, "owner_unavailable");
    // The lookups read the states from memory, not from Redis: a state written into Redis
    // behind the instances' backs is not seen (no round trip on the hot path).
    a.state
        .store
        .set_manager_state(
            callgate::domain::manager::ManagerId(27),
            callgate::domain::manager::ManagerState::default(),
        )
        .await
        .unwrap();
    assert_eq!(destination(&a).await.1, "owner_unavailable");
    assert_eq!(destination(&c).await.1, "owner_unavailable");
}

/// The destination and reason a lookup of Alina's customer answers.
async fn destination(app: &crate::helpers::TestApp) -> (serde_json::Value, serde_json::Value) {
    let body: serde_json::Value = app
        .get_route("caller=380981234567&format=json")
        .await
        .json()
        .await
        .unwrap();
    (body["destination"].clone(), body["reason"].clone())
}
