//! The owner mirror (SPEC §3.1, flow F), end to end against the strict fake retailCRM: the
//! first import, the history followed, restarts, two instances on one Redis, the sandbox.

use std::time::{Duration, Instant};

use callgate::{
    config::Settings, domain::lookup::LookupPolicy, testing::fake_retailcrm::FakeRetailCrm,
};
use serde_json::{Value, json};

use crate::{
    helpers::{
        TestApp, add_alinas_customer, crm_settings, eventually, mirror_on, redis_store,
        respawn_app_with_crm, spawn_app, spawn_app_with_crm, start_fake_crm,
    },
    lookup::SIX_FORMATS,
    redis_support::RedisKeys,
};

/// The mirror on, polling the history every second; the owner whatever their status.
fn sync(settings: &mut Settings) {
    mirror_on(settings);
    settings.lookup.policy = LookupPolicy::Owner;
}
const INTERVAL: Duration = Duration::from_secs(1);
const CUSTOMERS: &str = "GET /api/v5/customers";
const HISTORY: &str = "GET /api/v5/customers/history";

async fn readyz(app: &TestApp) -> String {
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "readyz stays 200 while importing");
    r.text().await.unwrap()
}

async fn wait_synced(app: &TestApp) {
    eventually(Duration::from_secs(20), "the mirror is synced", || async {
        readyz(app).await.contains("mirror synced").then_some(())
    })
    .await;
}

async fn route(app: &TestApp, caller: &str) -> Value {
    app.get_route(&format!("caller={caller}&format=json"))
        .await
        .json()
        .await
        .unwrap()
}

/// Waits until `caller` routes to `want` (`None` = nobody); the time it took.
async fn routes_within(
    app: &TestApp,
    caller: &str,
    want: Option<&str>,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    let want = want.map_or(Value::Null, |w| json!(w));
    eventually(within, &format!("{caller} routes to {want}"), || {
        let want = want.clone();
        async move { (route(app, caller).await["destination"] == want).then_some(()) }
    })
    .await;
    started.elapsed()
}

fn page_requests(crm: &FakeRetailCrm, page: &str) -> usize {
    crm.requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/api/v5/customers")
        .filter(|r| r.query.iter().any(|(k, v)| k == "page" && v == page))
        .filter(|r| r.status == Some(200))
        .count()
}

#[tokio::test]
async fn after_the_import_every_stored_format_routes_from_the_mirror_without_asking_the_crm() {
    // Arrange: one customer per typed format, imported at start.
    let crm = start_fake_crm().await;
    for (i, (stored, _)) in SIX_FORMATS.iter().enumerate() {
        crm.add_customer(&[stored], Some(if i < 3 { 27 } else { 28 }));
    }
    let app = spawn_app_with_crm(&crm, sync).await;
    wait_synced(&app).await;

    // Act + Assert
    for (i, (stored, asked)) in SIX_FORMATS.iter().enumerate() {
        let want = if i < 3 { "shop_alina" } else { "shop_tatiana" };
        let asked = asked.replace('+', "%2B").replace(' ', "%20");
        assert_eq!(
            route(&app, &asked).await["destination"],
            want,
            "stored as {stored:?}"
        );
    }
    let unknown = route(&app, "380501234567").await;
    assert_eq!(unknown["destination"], Value::Null);
    assert_eq!(unknown["reason"], "none");
    assert_eq!(crm.request_count("GET /api/v5/telephony/manager"), 0);
    assert_eq!(
        crm.request_count("GET /api/v5/customers"),
        1,
        "one page of 6"
    );
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("callgate_mirror_customers 6"), "{metrics}");
    assert!(
        metrics.contains("callgate_mirror_import_progress 1.0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn changes_made_by_hand_in_the_crm_route_by_their_new_state_within_one_interval() {
    // Arrange
    let crm = start_fake_crm().await;
    let reassigned = crm.add_customer(&["0981234567"], Some(27));
    let renumbered = crm.add_customer(&["0671112233"], Some(27));
    let deleted = crm.add_customer(&["0672223344"], Some(28));
    let merged = crm.add_customer(&["0673334455"], Some(27));
    let survivor = crm.add_customer(&["0674445566"], Some(28));
    let app = spawn_app_with_crm(&crm, sync).await;
    wait_synced(&app).await;
    assert_eq!(
        route(&app, "380981234567").await["destination"],
        "shop_alina"
    );
    assert_eq!(
        route(&app, "380991112233").await["destination"],
        Value::Null
    );
    let within = INTERVAL + Duration::from_secs(1);

    // Owner reassigned by hand.
    assert!(crm.set_customer_manager_by_hand(reassigned, Some(28)));
    let took = routes_within(&app, "380981234567", Some("shop_tatiana"), within).await;
    assert!(took <= within, "{took:?}");

    // A customer created by hand (its number was nobody a moment ago).
    crm.add_customer(&["+38 (099) 111-22-33"], Some(28));
    routes_within(&app, "380991112233", Some("shop_tatiana"), within).await;

    // A phone changed by hand: the old number stops, the new one routes.
    assert!(crm.set_customer_phones_by_hand(renumbered, &["(050) 999-88-77"]));
    routes_within(&app, "380509998877", Some("shop_alina"), within).await;
    assert_eq!(
        route(&app, "380671112233").await["destination"],
        Value::Null
    );

    // Deleted: stops routing to the old owner.
    assert!(crm.delete_customer_by_hand(deleted));
    routes_within(&app, "380672223344", None, within).await;

    // Merged: the merged customer's number now belongs to the survivor's owner.
    assert!(crm.merge_customers_by_hand(merged, survivor));
    routes_within(&app, "380673334455", Some("shop_tatiana"), within).await;

    assert_eq!(crm.request_count("GET /api/v5/telephony/manager"), 0);
}

#[tokio::test]
async fn an_inactive_user_is_never_a_destination() {
    let crm = start_fake_crm().await;
    crm.add_customer(&["0981234567"], Some(28));
    let app = spawn_app_with_crm(&crm, sync).await;
    wait_synced(&app).await;
    assert_eq!(
        route(&app, "380981234567").await["destination"],
        "shop_tatiana"
    );

    assert!(crm.set_user_active(28, false));

    let within = Duration::from_secs(3);
    routes_within(&app, "380981234567", None, within).await;
    assert_eq!(
        route(&app, "380981234567").await["reason"],
        "owner_unavailable"
    );
}

#[tokio::test]
async fn an_import_cut_short_resumes_without_reading_its_finished_pages_again() {
    // Arrange: 250 customers (3 pages of 100); one CRM request per second, so the import
    // can be stopped between pages.
    let crm = start_fake_crm().await;
    for i in 0..250u64 {
        crm.add_customer(&[&format!("050{:07}", 1_000_000 + i)], Some(27));
    }
    let first = spawn_app_with_crm(&crm, |s| {
        sync(s);
        s.crm.rate_limit_rps = 1;
    })
    .await;
    eventually(Duration::from_secs(20), "two pages imported", || async {
        (page_requests(&crm, "2") == 1).then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(5),
        "readyz shows the progress",
        || async {
            readyz(&first)
                .await
                .contains("mirror importing 80% (200/250 customers)")
                .then_some(())
        },
    )
    .await;

    // Act: stop it (the finished pages are stored), start again on the same store.
    let dir = first.dir();
    first.shut_down().await;
    let second = respawn_app_with_crm(dir.clone(), &crm, sync).await;
    wait_synced(&second).await;

    // Assert
    assert_eq!(
        (
            page_requests(&crm, "1"),
            page_requests(&crm, "2"),
            page_requests(&crm, "3")
        ),
        (1, 1, 1)
    );
    assert_eq!(
        route(&second, "380501000000").await["destination"],
        "shop_alina"
    );
    assert_eq!(
        route(&second, "380501000249").await["destination"],
        "shop_alina"
    );
    // The restarted instance loaded the finished pages from the store, and reads nothing
    // again when restarted once more.
    let before = crm.request_count(CUSTOMERS);
    second.shut_down().await;
    let third = respawn_app_with_crm(dir, &crm, sync).await;
    assert!(readyz(&third).await.contains("mirror synced"));
    assert_eq!(
        route(&third, "380501000100").await["destination"],
        "shop_alina"
    );
    assert_eq!(crm.request_count(CUSTOMERS), before);
}

#[tokio::test]
async fn a_customer_deleted_mid_import_shifts_the_pages_but_no_other_customer_is_skipped() {
    // Arrange: 250 customers created a month ago (pages of 100); one on page 1 is deleted
    // right after page 1 was answered, so page 2 starts one customer later (offset paging) and the customer
    // that was first on page 2 is now last on page 1, already read.
    let crm = start_fake_crm().await;
    let ids: Vec<u64> = (0..250u64)
        .map(|i| crm.add_customer(&[&format!("050{:07}", 1_000_000 + i)], Some(27)))
        .collect();
    crm.backdate_history(Duration::from_secs(30 * 86_400));
    crm.delete_customer_after_page(1, ids[5]);

    // Act
    let app = spawn_app_with_crm(&crm, sync).await;
    wait_synced(&app).await;

    // Assert: the slipped customer routes, the deleted one does not, nobody else is missing.
    assert_eq!(
        route(&app, "380501000100").await["destination"],
        "shop_alina",
        "the customer shifted onto page 1 was imported"
    );
    assert_eq!(
        route(&app, "380501000005").await["destination"],
        Value::Null
    );
    let mirror = app.state.sync.as_ref().unwrap().mirror();
    assert_eq!(mirror.size(), (249, 249));
    assert!(
        ids.iter()
            .enumerate()
            .all(|(i, id)| (i == 5) != mirror.contains(callgate::crm::CustomerId(*id)))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_redis_poll_the_crm_once_and_both_answer_a_change() {
    // Arrange
    let redis = RedisKeys::new();
    let crm = start_fake_crm().await;
    let id = crm.add_customer(&["0981234567"], Some(27));
    let on_redis = |s: &mut Settings| {
        sync(s);
        redis_store(s, &redis.url, &redis.prefix);
    };
    let a = spawn_app_with_crm(&crm, on_redis).await;
    let b = spawn_app_with_crm(&crm, on_redis).await;
    wait_synced(&a).await;
    wait_synced(&b).await;
    assert_eq!(crm.request_count(CUSTOMERS), 1, "one instance imported");

    // Act: an owner reassigned by hand.
    assert!(crm.set_customer_manager_by_hand(id, Some(28)));

    // Assert: both instances answer the change.
    let within = INTERVAL + Duration::from_secs(1);
    routes_within(&a, "380981234567", Some("shop_tatiana"), within).await;
    routes_within(&b, "380981234567", Some("shop_tatiana"), within).await;
    // One poller: four more history reads take about four intervals (two pollers would
    // make them in two).
    let start = crm.request_count(HISTORY);
    let started = Instant::now();
    eventually(
        Duration::from_secs(10),
        "four more history reads",
        || async { (crm.request_count(HISTORY) >= start + 4).then_some(()) },
    )
    .await;
    assert!(
        started.elapsed() >= INTERVAL * 3,
        "4 history reads in {:?}: more than one instance polls",
        started.elapsed()
    );
}

/// A callgate on a tokio runtime of its own, so a test can kill it as a crash would:
/// [`Crashable::crash`] stops the runtime, and with it every task of the instance at its
/// next await; nothing runs its shutdown path (the poll lease is not given up).
struct Crashable {
    runtime: tokio::runtime::Runtime,
    address: String,
    _dir: tempfile::TempDir,
}

impl Crashable {
    async fn start(settings: Settings, dir: tempfile::TempDir) -> Crashable {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let (port_tx, port_rx) = tokio::sync::oneshot::channel();
        runtime.spawn(async move {
            let config = callgate::config::Config::try_from(settings).expect("valid settings");
            let app = callgate::startup::Application::build(config)
                .await
                .expect("app builds");
            let _ = port_tx.send(app.port());
            app.run_until_stopped().await
        });
        let port = port_rx.await.expect("the app started");
        Crashable {
            runtime,
            address: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    async fn readyz(&self) -> String {
        reqwest::get(format!("{}/readyz", self.address))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    fn crash(self) {
        self.runtime.shutdown_background();
    }
}

async fn lease_holder(redis: &RedisKeys) -> Option<String> {
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::AsyncCommands::get(&mut conn, format!("{}sync:lease", redis.prefix))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_the_polling_instance_dies_the_other_takes_the_lease_and_follows_the_crm() {
    // Arrange: A imports and holds the lease (3 s); B starts after it and only listens.
    let redis = RedisKeys::new();
    let crm = start_fake_crm().await;
    let id = crm.add_customer(&["0981234567"], Some(27));
    let on_redis = |s: &mut Settings| {
        sync(s);
        redis_store(s, &redis.url, &redis.prefix);
    };
    let dir = tempfile::TempDir::new().unwrap();
    let mut settings = crm_settings(&crm, &dir);
    on_redis(&mut settings);
    let a = Crashable::start(settings, dir).await;
    eventually(Duration::from_secs(20), "A imported", || async {
        a.readyz().await.contains("mirror synced").then_some(())
    })
    .await;
    let holder_a = lease_holder(&redis).await.expect("A holds the lease");
    let b = spawn_app_with_crm(&crm, on_redis).await;
    wait_synced(&b).await;
    assert_eq!(crm.request_count(CUSTOMERS), 1, "one instance imported");
    assert_eq!(lease_holder(&redis).await.as_ref(), Some(&holder_a));

    // Act: A dies without giving the lease up.
    a.crash();
    let crashed = Instant::now();

    // Assert: B holds the lease within its term (3 s) and one tick (1 s) ...
    let lease = Duration::from_secs(3);
    eventually(lease + INTERVAL * 2, "B takes the lease over", || async {
        lease_holder(&redis)
            .await
            .filter(|h| *h != holder_a)
            .map(|_| ())
    })
    .await;
    assert!(
        crashed.elapsed() <= lease + INTERVAL + Duration::from_millis(500),
        "took {:?}",
        crashed.elapsed()
    );
    // ... and polls: a change made in the CRM now routes within one interval + 1 s.
    let reads = crm.request_count(HISTORY);
    eventually(INTERVAL * 3, "B reads the history", || async {
        (crm.request_count(HISTORY) > reads).then_some(())
    })
    .await;
    assert!(crm.set_customer_manager_by_hand(id, Some(28)));
    routes_within(
        &b,
        "380981234567",
        Some("shop_tatiana"),
        INTERVAL + Duration::from_secs(1),
    )
    .await;
    assert_eq!(crm.request_count(CUSTOMERS), 1, "B did not import again");
}

#[tokio::test]
async fn a_customer_added_to_the_sandbox_routes_at_the_next_lookup() {
    // Arrange: the sandbox CRM with the mirror on; the number is nobody first.
    let app = spawn_app(sync).await;
    wait_synced(&app).await;
    assert_eq!(
        route(&app, "380981234567").await["destination"],
        Value::Null
    );

    // Act
    add_alinas_customer(&app).await;

    // Assert: the very next lookup.
    assert_eq!(
        route(&app, "380981234567").await["destination"],
        "shop_alina"
    );
}
