//! `spawn_app()` and friends: a real callgate on a random port with a fresh embedded store in
//! a temporary directory, optionally wired to a fake retailCRM over real HTTP.

use std::{sync::Arc, time::Duration};

pub use callgate::testing::eventually;
use callgate::{
    config::{Config, CrmKind, ManagerSettings, OneOrMany, Settings, SiteSettings, StoreKind},
    http::AppState,
    reconcile::Reconciler,
    startup::Application,
    testing::{
        fake_retailcrm::{FakeCrmConfig, FakeRetailCrm, FakeUser},
        fake_ringostat::FakeRingostat,
    },
    worker::Worker,
};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

/// The webhook token of test apps.
pub const WEBHOOK_TOKEN: &str = "test-webhook-token";
/// The admin token of test apps.
pub const ADMIN_TOKEN: &str = "test-admin-token";
/// The retailCRM module's `clientId` (`crm.client_id`) of test apps.
pub const CLIENT_ID: &str = "callgate-test";

/// Alina (CRM user 27) and Tatiana (CRM user 28), the seed's managers, plus the senior
/// manager (CRM user 1).
pub fn seed_managers() -> Vec<ManagerSettings> {
    let manager = |id: u64, sip: &str, code: &str, phone: Option<&str>| ManagerSettings {
        crm_user_id: id,
        ringostat_staff_id: Some(1000 + id as i64),
        sip: Some(OneOrMany::Many(vec![sip.to_owned()])),
        code: Some(code.to_owned()),
        phone: phone.map(str::to_owned),
    };
    vec![
        manager(27, "shop_alina", "127", Some("+380671110027")),
        manager(28, "shop_tatiana", "128", Some("+380671110028")),
        manager(1, "shop_senior", "101", None),
    ]
}

/// A `[[sites]]` entry with these tracking numbers.
pub fn site(code: &str, tracking_numbers: &[&str]) -> SiteSettings {
    SiteSettings {
        code: code.to_owned(),
        project_ids: Vec::new(),
        tracking_numbers: tracking_numbers.iter().map(|n| (*n).to_owned()).collect(),
    }
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub crm: Option<FakeRetailCrm>,
    pub worker: Arc<Worker>,
    token: CancellationToken,
    running: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// The reconciler, when the Ringostat API is configured ([`with_ringostat`]).
    pub reconciler: Option<Arc<Reconciler>>,
    /// The store's directory, unless the test keeps it ([`start_in`]).
    _dir: Option<Arc<TempDir>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Settings for a test: the defaults, the seed's managers, the test tokens, a random port and
/// a fresh store file.
pub fn test_settings(dir: &TempDir) -> Settings {
    let mut settings = Settings::defaults().expect("the defaults parse");
    settings.managers = seed_managers();
    settings.ringostat.webhook_token = WEBHOOK_TOKEN.into();
    settings.admin.token = ADMIN_TOKEN.into();
    settings.server.port = 0;
    // The owner mirror is off unless a test turns it on ([`mirror_on`]): most tests seed
    // the fake CRM after the app started and exercise the lookup's CRM fetch, the path
    // taken before the mirror's first import (and with `lookup.on_miss = "ask_crm"`).
    settings.sync.enabled = false;
    settings.store.path = dir.path().join("callgate.redb");
    settings.crm.client_id = CLIENT_ID.into();
    settings
}

/// A callgate on the sandbox CRM; `configure` changes the test settings.
pub async fn spawn_app(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = TempDir::new().expect("temp dir");
    let mut settings = test_settings(&dir);
    configure(&mut settings);
    start(settings, Some(Arc::new(dir)), None).await
}

/// The seed's CRM users on a fake retailCRM.
pub async fn start_fake_crm() -> FakeRetailCrm {
    let crm = FakeRetailCrm::start(FakeCrmConfig::default()).await;
    crm.add_user(FakeUser::manager(27, "Alina", Some("127")));
    crm.add_user(FakeUser::manager(28, "Tatiana", Some("128")));
    crm.add_user(FakeUser::manager(1, "Senior", Some("101")));
    crm
}

/// A callgate talking to `crm` over real HTTP; `configure` changes the test settings.
pub async fn spawn_app_with_crm(
    crm: &FakeRetailCrm,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    let dir = TempDir::new().expect("temp dir");
    let mut settings = crm_settings(crm, &dir);
    configure(&mut settings);
    start(settings, Some(Arc::new(dir)), Some(crm.clone())).await
}

/// The settings of a callgate talking to `crm` (store in `dir`), for tests that restart it.
pub fn crm_settings(crm: &FakeRetailCrm, dir: &TempDir) -> Settings {
    let mut settings = test_settings(dir);
    settings.crm.kind = CrmKind::Retailcrm;
    settings.crm.base_url = crm.base_url();
    settings.crm.api_key = crm.api_key().into();
    settings.crm.default_site = "shop1".to_owned();
    settings
}

/// Points `settings` at the fake Ringostat API (reconciliation and click-to-call on).
pub fn with_ringostat(settings: &mut Settings, ringostat: &FakeRingostat) {
    settings.ringostat.api_base_url = ringostat.base_url();
    settings.ringostat.auth_key = ringostat.auth_key().into();
    settings.ringostat.project_id = ringostat.project_id().to_owned();
}

/// A callgate on `settings` whose store directory the caller keeps (so a test can stop it
/// and start another on the same store).
pub async fn start_in(settings: Settings, crm: Option<FakeRetailCrm>) -> TestApp {
    start(settings, None, crm).await
}

/// A callgate on a shared Redis: apps given the same URL and prefix share one owner index,
/// locks and queue.
pub fn redis_store(settings: &mut Settings, redis_url: &str, key_prefix: &str) {
    settings.store.kind = StoreKind::Redis;
    settings.store.redis_url = redis_url.to_owned();
    settings.store.key_prefix = key_prefix.to_owned();
}

/// The owner mirror on, following the CRM every second (the lease at its minimum, 3 s).
pub fn mirror_on(settings: &mut Settings) {
    settings.sync.enabled = true;
    settings.sync.history_interval_secs = 1;
    settings.sync.users_interval_secs = 1;
    settings.sync.lease_secs = 3;
}

/// A callgate on `crm` with the store file in `dir` (a restart: see [`TestApp::dir`]).
pub async fn respawn_app_with_crm(
    dir: Arc<TempDir>,
    crm: &FakeRetailCrm,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    let mut settings = crm_settings(crm, &dir);
    configure(&mut settings);
    start(settings, Some(dir), Some(crm.clone())).await
}

async fn start(
    settings: Settings,
    dir: Option<Arc<TempDir>>,
    crm: Option<FakeRetailCrm>,
) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        callgate::telemetry::init(callgate::config::LogFormat::Pretty);
    }
    let config = Config::try_from(settings).expect("test settings are valid");
    let app = Application::build(config).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    let worker = app.worker();
    let reconciler = app.reconciler();
    let token = app.shutdown_token();
    let running = Some(tokio::spawn(app.run_until_stopped()));
    TestApp {
        address,
        client: reqwest::Client::new(),
        state,
        crm,
        worker,
        token,
        running,
        reconciler,
        _dir: dir,
    }
}

/// Fast retries (1 ms, at most 5 ms), so tests wait out retry delays quickly.
pub fn fast_retries(settings: &mut Settings) {
    settings.worker.retry_base_ms = 1;
    settings.worker.retry_max_ms = 5;
}

/// For tests that drive the worker by hand: no background worker, fast retries, CRM user 1
/// as the senior manager.
pub fn manual_worker(settings: &mut Settings) {
    settings.worker.enabled = false;
    fast_retries(settings);
    settings.crm.senior_manager_id = 1;
}

impl TestApp {
    /// Starts a graceful shutdown (as SIGTERM does) and returns the running application, which
    /// ends when its in-flight requests and worker have finished.
    pub fn stop(&mut self) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        self.token.cancel();
        self.running.take().expect("the app is running")
    }

    /// `POST /ringostat/webhook?token=…` with a JSON body.
    pub async fn post_webhook(&self, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/ringostat/webhook?token={WEBHOOK_TOKEN}")))
            .json(body)
            .send()
            .await
            .expect("webhook request")
    }

    /// Runs the worker until no task is due; panics on a store failure.
    pub async fn run_worker_until_idle(&self) -> Vec<callgate::worker::ExecutionOutcome> {
        self.worker.run_until_idle().await.expect("worker runs")
    }

    /// Runs the worker until the queue is empty, waiting out retry delays (bounded).
    pub async fn drain_queue(&self, within: Duration) {
        let store = self.state.store.clone();
        let worker = self.worker.clone();
        eventually(within, "the queue drains", || {
            let store = store.clone();
            let worker = worker.clone();
            async move {
                worker.run_until_idle().await.expect("worker runs");
                (store.queue_depth().await.expect("depth") == 0).then_some(())
            }
        })
        .await
    }

    /// The directory of the store file, to start another app on it after this one stopped
    /// (and was dropped: the embedded store is one process's file).
    pub fn dir(&self) -> Arc<TempDir> {
        self._dir
            .clone()
            .expect("the test's store directory is kept by the app")
    }

    /// Stops gracefully, waits for the end, and releases the store.
    pub async fn shut_down(mut self) {
        self.stop()
            .await
            .expect("the app task ends")
            .expect("the app stops cleanly");
    }

    pub fn fake(&self) -> &FakeRetailCrm {
        self.crm
            .as_ref()
            .expect("this app talks to the fake retailCRM")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// `GET /ringostat/route?<query>`.
    pub async fn get_route(&self, query: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/ringostat/route?{query}")))
            .send()
            .await
            .expect("route request")
    }

    pub async fn set_user_status(&self, user_id: u64, status: &str) -> reqwest::Response {
        self.client
            .post(self.url("/retailcrm/user-status"))
            .form(&[
                ("clientId", CLIENT_ID),
                ("userId", &user_id.to_string()),
                ("status", status),
            ])
            .send()
            .await
            .expect("user-status request")
    }
}

/// Adds Alina's customer `098 123 45 67` to the sandbox CRM.
pub async fn add_alinas_customer(app: &TestApp) {
    let r = app
        .client
        .post(app.url("/admin/sandbox/customers"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"phones": ["098 123 45 67"], "manager_id": 27}))
        .send()
        .await
        .expect("sandbox customer");
    assert_eq!(r.status(), reqwest::StatusCode::OK);
}
