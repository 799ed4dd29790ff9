//! The one place that wires adapters together: settings → store, CRM, services, router,
//! worker → [`Application`].

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use secrecy::ExposeSecret;
use tokio::{net::TcpListener, sync::Notify};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{CrmKind, Settings, StoreKind},
    crm::{
        Crm,
        budget::{Consumer, CrmBudget, Gate},
        limited::LimitedCrm,
        retailcrm::{RetailCrm, RetailCrmConfig},
        sandbox::SandboxCrm,
    },
    http::{AppContext, AppState, server},
    lookup::{LookupConfig, LookupService},
    metrics::Metrics,
    rules::RuleBook,
    store::{Store, embedded::EmbeddedStore, redis::RedisStore},
    worker::{Worker, retry::RetrySchedule},
};

/// A built, bound, not yet running callgate.
pub struct Application {
    listener: TcpListener,
    worker: Arc<Worker>,
    state: AppState,
    sandbox: Option<Arc<SandboxCrm>>,
    shutdown: CancellationToken,
    grace: Duration,
}

impl Application {
    /// Validates the settings and the routing rules, opens the store, builds the CRM adapter
    /// and binds the port (`server.port = 0` picks a free one). Bad rules are a
    /// [`crate::rules::RulesLoadError`] in the error chain (`main` exits 64 on it).
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let validated = settings.validate()?;
        let rules = Arc::new(RuleBook::load(
            &settings.rules.dir,
            validated.normalizer.clone(),
            validated.directory.all().iter().map(|m| m.id).collect(),
        )?);
        tracing::info!(
            rules = rules.current().len(),
            dir = %settings.rules.dir.display(),
            "Routing rules loaded."
        );
        let store: Arc<dyn Store> = match settings.store.kind {
            StoreKind::Embedded => {
                Arc::new(EmbeddedStore::open(&settings.store.path).with_context(|| {
                    format!(
                        "Failed to open the embedded store {}.",
                        settings.store.path.display()
                    )
                })?)
            }
            StoreKind::Redis => Arc::new(
                RedisStore::connect(&settings.store.redis_url, &settings.store.key_prefix)
                    .await
                    .context("Failed to connect to the Redis store.")?,
            ),
        };
        let directory = Arc::new(validated.directory.clone());
        let metrics = Arc::new(Metrics::new());
        let mut sandbox = None;
        // Every CRM request takes a token from the key's budget, lookups and the worker each
        // from their share (crm::budget); the sandbox has no limit.
        let (general_rps, telephony_rps) = match settings.crm.kind {
            CrmKind::Sandbox => (0, 0),
            CrmKind::Retailcrm => (
                settings.crm.rate_limit_rps,
                settings.crm.telephony_rate_limit_rps,
            ),
        };
        let budget = CrmBudget::new(
            general_rps,
            telephony_rps,
            settings.crm.lookup_share,
            metrics.clone(),
        );
        let limited = |inner: Arc<dyn Crm>, per_call: Option<Gate>| -> Arc<dyn Crm> {
            Arc::new(LimitedCrm::new(inner, per_call, metrics.clone()))
        };
        let (lookup_crm, crm) = match settings.crm.kind {
            CrmKind::Sandbox => {
                let s = Arc::new(SandboxCrm::new(store.clone(), directory.clone()));
                sandbox = Some(s.clone());
                (
                    limited(s.clone(), Some(budget.gate(Consumer::Lookup))),
                    limited(s, Some(budget.gate(Consumer::Worker))),
                )
            }
            CrmKind::Retailcrm => {
                let adapter = RetailCrm::new(
                    RetailCrmConfig {
                        base_url: settings.crm.base_url.parse().context("crm.base_url")?,
                        api_key: settings.crm.api_key.expose_secret().into(),
                        timeout: settings.crm.timeout(),
                        site: Some(settings.crm.default_site.clone()),
                    },
                    validated.normalizer.clone(),
                )
                .context("Failed to build the retailCRM client.")?;
                (
                    limited(
                        Arc::new(adapter.with_gate(budget.gate(Consumer::Lookup))),
                        None,
                    ),
                    limited(
                        Arc::new(adapter.with_gate(budget.gate(Consumer::Worker))),
                        None,
                    ),
                )
            }
        };
        let lookup = LookupService::new(
            store.clone(),
            lookup_crm,
            directory.clone(),
            validated.normalizer.clone(),
            LookupConfig {
                deadline: settings.lookup.deadline(),
                policy: settings.lookup.policy,
                owner_ttl: settings.lookup.owner_ttl(),
                negative_ttl: settings.lookup.negative_ttl(),
                max_crm_fetches: settings.lookup.max_crm_fetches,
                sites: validated.sites.clone(),
            },
            metrics.clone(),
            rules.clone(),
        );
        let address = SocketAddr::new(settings.server.host, settings.server.port);
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("Failed to bind {address}."))?;
        let grace = Duration::from_secs(settings.server.shutdown_grace_secs);
        let aliases = Arc::new(settings.ringostat.fields.clone());
        let wakeup = Arc::new(Notify::new());
        let state = AppState::new(AppContext {
            settings: Arc::new(settings),
            store,
            crm,
            directory,
            lookup,
            metrics,
            normalizer: validated.normalizer.clone(),
            sandbox: sandbox.clone(),
            aliases: aliases.clone(),
            worker_wakeup: wakeup.clone(),
            rules: rules.clone(),
        });
        let worker = Worker::new(
            state.store.clone(),
            state.crm.clone(),
            state.directory.clone(),
            validated.normalizer.clone(),
            aliases,
            validated.planner.clone(),
            validated.sites.clone(),
            state
                .settings
                .crm
                .closed_status_groups
                .iter()
                .cloned()
                .collect(),
            RetrySchedule {
                base: Duration::from_millis(state.settings.worker.retry_base_ms),
                max: Duration::from_millis(state.settings.worker.retry_max_ms),
            },
            Duration::from_secs(state.settings.worker.lease_secs),
            state.settings.lookup.owner_ttl(),
            state.metrics.clone(),
            wakeup,
        );
        let worker = Arc::new(worker.with_rules(rules));
        Ok(Application {
            listener,
            worker,
            state,
            sandbox,
            shutdown: CancellationToken::new(),
            grace,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The worker, for tests that drive it step by step (`worker.enabled = false`).
    pub fn worker(&self) -> Arc<Worker> {
        self.worker.clone()
    }

    /// The sandbox CRM, when `crm.kind = "sandbox"`.
    pub fn sandbox(&self) -> Option<Arc<SandboxCrm>> {
        self.sandbox.clone()
    }

    /// Cancelling it stops the application gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled, then lets in-flight requests finish
    /// (bounded by `server.shutdown_grace_secs`). Queued work stays in the store.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let token = self.shutdown.clone();
        let worker = self.state.settings.worker.enabled.then(|| {
            let concurrency = self.state.settings.worker.concurrency;
            tokio::spawn(
                self.worker
                    .clone()
                    .run_until_stopped(concurrency, token.clone()),
            )
        });
        let server = server::serve(self.listener, self.state.clone(), token.clone());
        let mut server = std::pin::pin!(server);
        tokio::select! {
            () = &mut server => {}
            () = token.cancelled() => {
                if tokio::time::timeout(self.grace, &mut server).await.is_err() {
                    tracing::warn!(grace = ?self.grace, "In-flight requests did not finish within the grace period.");
                }
            }
        }
        // Whatever ended the server also stops the worker.
        token.cancel();
        if let Some(worker) = worker
            && tokio::time::timeout(self.grace, worker).await.is_err()
        {
            tracing::warn!(
                "The worker did not stop within the grace period; its tasks stay queued."
            );
        }
        Ok(())
    }
}

/// Resolves on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
