//! `spawn_app()` and friends: a real callgate on a random port with a fresh embedded store in
//! a temporary directory, optionally wired to a fake retailCRM over real HTTP.

use std::{sync::Arc, time::Duration};

pub use callgate::testing::eventually;
use callgate::{
    config::Settings,
    http::AppState,
    startup::Application,
    testing::fake_retailcrm::{FakeCrmConfig, FakeRetailCrm, FakeUser},
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
pub const MANAGERS_TOML: &str = r#"
[[managers]]
crm_user_id = 27
ringostat_staff_id = 1027
sip = ["shop_alina"]
code = "127"
phone = "+380671110027"

[[managers]]
crm_user_id = 28
ringostat_staff_id = 1028
sip = ["shop_tatiana"]
code = "128"
phone = "+380671110028"

[[managers]]
crm_user_id = 1
ringostat_staff_id = 1001
sip = ["shop_senior"]
code = "101"
"#;

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub crm: Option<FakeRetailCrm>,
    pub worker: Arc<Worker>,
    token: CancellationToken,
    running: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Builds settings for a test: defaults + `extra` TOML, random port, fresh store file.
pub fn test_settings(dir: &TempDir, extra: &str) -> Settings {
    let toml = format!(
        "{MANAGERS_TOML}\n[ringostat]\nwebhook_token = \"{WEBHOOK_TOKEN}\"\n[admin]\ntoken = \"{ADMIN_TOKEN}\"\n{extra}"
    );
    let mut settings = Settings::from_toml(&toml).expect("test settings parse");
    settings.server.port = 0;
    settings.store.path = dir.path().join("callgate.redb");
    settings.crm.client_id = CLIENT_ID.into();
    settings
}

/// A callgate on the sandbox CRM.
pub async fn spawn_app(extra: &str) -> TestApp {
    spawn_app_configured(extra, |_| ()).await
}

/// A callgate on the sandbox CRM, its settings changed by `configure` after `extra` (for
/// what TOML cannot say over the test defaults, such as an empty secret).
pub async fn spawn_app_configured(extra: &str, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = TempDir::new().expect("temp dir");
    let mut settings = test_settings(&dir, extra);
    configure(&mut settings);
    start(settings, dir, None).await
}

/// The seed's CRM users on a fake retailCRM.
pub async fn start_fake_crm() -> FakeRetailCrm {
    let crm = FakeRetailCrm::start(FakeCrmConfig::default()).await;
    crm.add_user(FakeUser::manager(27, "Alina", Some("127")));
    crm.add_user(FakeUser::manager(28, "Tatiana", Some("128")));
    crm.add_user(FakeUser::manager(1, "Senior", Some("101")));
    crm
}

/// A callgate talking to `crm` over real HTTP.
pub async fn spawn_app_with_crm(crm: &FakeRetailCrm, extra: &str) -> TestApp {
    let dir = TempDir::new().expect("temp dir");
    let mut settings = test_settings(&dir, extra);
    settings.crm.kind = callgate::config::CrmKind::Retailcrm;
    settings.crm.base_url = crm.base_url();
    settings.crm.api_key = crm.api_key().into();
    settings.crm.default_site = "shop1".to_owned();
    start(settings, dir, Some(crm.clone())).await
}

/// `[store]` TOML for a callgate on a shared Redis (`extra` of [`spawn_app_with_crm`]): apps
/// given the same URL and prefix share one owner index, locks and queue.
pub fn redis_store_toml(redis_url: &str, key_prefix: &str) -> String {
    format!(
        "[store]\nkind = \"redis\"\nredis_url = \"{redis_url}\"\nkey_prefix = \"{key_prefix}\"\n"
    )
}

async fn start(settings: Settings, dir: TempDir, crm: Option<FakeRetailCrm>) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        callgate::telemetry::init(callgate::config::LogFormat::Pretty);
    }
    let app = Application::build(settings).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    let worker = app.worker();
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
        _dir: dir,
    }
}

/// Worker settings for tests that drive the worker by hand: no background worker, fast retries.
pub const MANUAL_WORKER: &str = "[worker]\nenabled = false\nretry_base_ms = 1\nretry_max_ms = 5\n[crm]\nsenior_manager_id = 1\n";

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
