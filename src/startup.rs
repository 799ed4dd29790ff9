//! The one place that wires adapters together: the validated config → store, CRM, services, router,
//! worker → [`Application`].

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use secrecy::ExposeSecret;
use tokio::{net::TcpListener, sync::Notify};
use tokio_util::sync::CancellationToken;

use crate::{
    call_trail::{LOOKUP_TRAIL_CAPACITY, LookupRecord, LookupTrail},
    config::{Config, CrmBackend, StoreOptions},
    crm::{
        Crm,
        budget::{Consumer, CrmBudget, Gate},
        limited::LimitedCrm,
        retailcrm::{RetailCrm, RetailCrmConfig},
        sandbox::SandboxCrm,
    },
    http::{AppContext, AppState, server},
    lookup::LookupService,
    metrics::Metrics,
    reconcile::{ReconcileConfig, Reconciler},
    ringostat::{RingostatClient, RingostatConfig},
    rules::RuleBook,
    store::{Store, embedded::EmbeddedStore, redis::RedisStore},
    sync::{
        SyncConfig, Syncer, follow::Follower, managers::ManagerBoard, mirror::SharedMirror,
        redis::RedisSyncBus,
    },
    worker::{Worker, WorkerConfig, WorkerDeps},
};

/// A built, bound, not yet running callgate.
pub struct Application {
    listener: TcpListener,
    worker: Arc<Worker>,
    reconciler: Option<Arc<Reconciler>>,
    /// Applies the other instances' changes (Redis store).
    follower: Option<Arc<Follower>>,
    state: AppState,
    sandbox: Option<Arc<SandboxCrm>>,
    shutdown: CancellationToken,
    /// Lookup decisions on their way to the call trails (drained while running).
    lookup_decisions: tokio::sync::mpsc::Receiver<LookupRecord>,
}

impl Application {
    /// Loads the routing rules, opens the store, builds the CRM adapter and binds the port
    /// (`server.port = 0` picks a free one). Bad rules are a
    /// [`crate::rules::RulesLoadError`] in the error chain (`main` exits 64 on it).
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let rules = Arc::new(RuleBook::load(
            &config.rules.dir,
            config.normalizer.clone(),
            config.directory.all().iter().map(|m| m.id).collect(),
        )?);
        tracing::info!(
            rules = rules.current().len(),
            dir = %config.rules.dir.display(),
            "Routing rules loaded."
        );
        let store: Arc<dyn Store> = match &config.store {
            StoreOptions::Embedded { path } => {
                Arc::new(EmbeddedStore::open(path).with_context(|| {
                    format!("Failed to open the embedded store {}.", path.display())
                })?)
            }
            StoreOptions::Redis { url, key_prefix } => Arc::new(
                RedisStore::connect(url, key_prefix)
                    .await
                    .context("Failed to connect to the Redis store.")?,
            ),
        };
        let directory = Arc::new(config.directory.clone());
        let metrics = Arc::new(Metrics::new());
        let mut sandbox = None;
        // Every CRM request takes a token from the key's budget, lookups and the worker each
        // from their share (crm::budget); the sandbox has no limit.
        let (general_rps, telephony_rps) = match &config.crm.backend {
            CrmBackend::Sandbox => (0, 0),
            CrmBackend::Retailcrm { .. } => (
                config.crm.rate_limit_rps,
                config.crm.telephony_rate_limit_rps,
            ),
        };
        let budget = CrmBudget::new(
            general_rps,
            telephony_rps,
            config.crm.lookup_share,
            metrics.clone(),
        );
        let limited = |inner: Arc<dyn Crm>, per_call: Option<Gate>| -> Arc<dyn Crm> {
            Arc::new(LimitedCrm::new(inner, per_call, metrics.clone()))
        };
        let (lookup_crm, crm) = match &config.crm.backend {
            CrmBackend::Sandbox => {
                let s = Arc::new(SandboxCrm::new(store.clone(), directory.clone()));
                sandbox = Some(s.clone());
                (
                    limited(s.clone(), Some(budget.gate(Consumer::Lookup))),
                    limited(s, Some(budget.gate(Consumer::Worker))),
                )
            }
            CrmBackend::Retailcrm { base_url, api_key } => {
                let adapter = RetailCrm::new(
                    RetailCrmConfig {
                        base_url: base_url.clone(),
                        api_key: api_key.expose_secret().into(),
                        timeout: config.crm.timeout,
                        site: Some(config.crm.default_site.clone()),
                    },
                    config.normalizer.clone(),
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
        // Several instances on one Redis hear each other on the sync bus: the owner mirror's
        // changes and the managers' states. Its position is taken before anything is loaded
        // (sync::follow).
        let bus = match &config.store {
            StoreOptions::Embedded { .. } => None,
            StoreOptions::Redis { url, key_prefix } => Some(Arc::new(
                RedisSyncBus::connect(url, key_prefix)
                    .await
                    .context("Failed to connect the sync bus (Redis).")?,
            )),
        };
        let position = match &bus {
            Some(bus) => Some(
                Follower::position_before_loading(bus)
                    .await
                    .context("Failed to read the sync bus's position.")?,
            ),
            None => None,
        };
        // The managers' states, served from memory (the lookup's `owner_if_available`).
        let managers = Arc::new(
            ManagerBoard::load(
                store.clone(),
                bus.clone(),
                metrics.clone(),
                &directory.all().iter().map(|m| m.id).collect::<Vec<_>>(),
            )
            .await
            .context("Failed to load the managers' states from the store.")?,
        );
        // The owner mirror (flow F): loaded from the store before the port is bound, so the
        // first lookup already answers from it. Its paged reads share the worker's budget.
        let syncer = match &config.sync {
            Some(sync) => {
                let syncer = Syncer::new(
                    crm.clone(),
                    store.clone(),
                    Arc::new(SharedMirror::new()),
                    config.normalizer.clone(),
                    SyncConfig {
                        history_interval: sync.history_interval,
                        closed_status_groups: config.crm.closed_status_groups.clone(),
                        users_interval: sync.users_interval,
                        lease: sync.lease,
                    },
                    metrics.clone(),
                    bus.clone(),
                    managers.clone(),
                );
                syncer
                    .load()
                    .await
                    .context("Failed to load the owner mirror from the store.")?;
                Some(syncer)
            }
            None => None,
        };
        let follower = bus.zip(position).map(|(bus, position)| {
            Arc::new(Follower::new(
                bus,
                position,
                managers.clone(),
                syncer.clone(),
                metrics.clone(),
            ))
        });
        let mirror = syncer.as_ref().map(|s| s.mirror().clone());
        let (lookup_trail, lookup_decisions) = LookupTrail::channel(
            LOOKUP_TRAIL_CAPACITY,
            config.lookup.trail_max_per_sec,
            metrics.clone(),
        );
        let lookup = LookupService::new(
            store.clone(),
            lookup_crm,
            mirror.clone(),
            managers.clone(),
            directory.clone(),
            config.normalizer.clone(),
            config.lookup.clone(),
            config.sites.clone(),
            metrics.clone(),
            rules.clone(),
            lookup_trail,
        );
        let address = SocketAddr::new(config.server.host, config.server.port);
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("Failed to bind {address}."))?;
        let aliases = Arc::new(config.ringostat.fields.clone());
        let wakeup = Arc::new(Notify::new());
        let ringostat = if config.ringostat.api_configured() {
            Some(Arc::new(
                RingostatClient::new(RingostatConfig {
                    base_url: config.ringostat.api_base_url.clone(),
                    auth_key: config.ringostat.auth_key.clone(),
                    project_id: config.ringostat.project_id.clone(),
                    timeout: config.ringostat.api_timeout(),
                })
                .context("Failed to build the Ringostat client.")?,
            ))
        } else {
            None
        };
        let reconciler = match &ringostat {
            Some(client) => Some(Arc::new(Reconciler::new(
                client.clone(),
                store.clone(),
                aliases.clone(),
                config.normalizer.clone(),
                metrics.clone(),
                wakeup.clone(),
                ReconcileConfig {
                    project_id: config.ringostat.project_id.clone(),
                    timezone: config.ringostat.tz()?,
                    interval: config.ringostat.reconcile_interval(),
                    overlap: config.ringostat.reconcile_overlap(),
                },
            ))),
            None => None,
        };
        let worker = Arc::new(Worker::new(
            WorkerDeps {
                store: store.clone(),
                crm: crm.clone(),
                directory: directory.clone(),
                metrics: metrics.clone(),
                wakeup: wakeup.clone(),
                rules: rules.clone(),
                sync: syncer.clone(),
            },
            WorkerConfig {
                normalizer: config.normalizer.clone(),
                aliases: aliases.clone(),
                planner: config.planner.clone(),
                closed_status_groups: config.crm.closed_status_groups.clone(),
                schedule: config.worker.retry,
                lease: config.worker.lease,
                owner_ttl: config.lookup.owner_ttl,
                calls_upload_batch: config.crm.calls_upload_batch,
                calls_upload_flush: config.crm.calls_upload_flush,
                // Three missed history polls and the facts are asked of the CRM again.
                mirror_max_lag: config.sync.as_ref().map_or(Duration::ZERO, |s| {
                    s.history_interval * 3 + Duration::from_secs(5)
                }),
            },
        ));
        let state = AppState::new(AppContext {
            normalizer: config.normalizer.clone(),
            config: Arc::new(config),
            store,
            crm,
            directory,
            managers,
            lookup,
            metrics,
            sandbox: sandbox.clone(),
            aliases,
            worker_wakeup: wakeup,
            rules,
            sync: syncer,
            ringostat,
        });
        Ok(Application {
            listener,
            lookup_decisions,
            worker,
            reconciler,
            follower,
            state,
            sandbox,
            shutdown: CancellationToken::new(),
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

    /// The reconciler (flow E), when the Ringostat API is configured; tests run it by hand.
    pub fn reconciler(&self) -> Option<Arc<Reconciler>> {
        self.reconciler.clone()
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
        let grace = self.state.config.server.shutdown_grace;
        let worker = self.state.config.worker.enabled.then(|| {
            let concurrency = self.state.config.worker.concurrency;
            tokio::spawn(
                self.worker
                    .clone()
                    .run_until_stopped(concurrency, token.clone()),
            )
        });
        let sync = self
            .state
            .sync
            .clone()
            .map(|syncer| tokio::spawn(syncer.run_until_stopped(token.clone())));
        let reconciler = self
            .reconciler
            .clone()
            .map(|r| tokio::spawn(r.run_until_stopped(token.clone())));
        let follower = self
            .follower
            .clone()
            .map(|f| tokio::spawn(f.run_until_stopped(token.clone())));
        let decisions = tokio::spawn(
            self.state
                .lookup
                .clone()
                .record_decisions(self.lookup_decisions, token.clone()),
        );
        let server = server::serve(self.listener, self.state.clone(), token.clone());
        let mut server = std::pin::pin!(server);
        tokio::select! {
            () = &mut server => {}
            () = token.cancelled() => {
                if tokio::time::timeout(grace, &mut server).await.is_err() {
                    tracing::warn!(grace = ?grace, "In-flight requests did not finish within the grace period.");
                }
            }
        }
        // Whatever ended the server also stops the worker.
        token.cancel();
        if let Some(sync) = sync
            && tokio::time::timeout(grace, sync).await.is_err()
        {
            tracing::warn!("The owner mirror sync did not stop within the grace period.");
        }
        if let Some(follower) = follower {
            let _ = follower.await;
        }
        if let Some(reconciler) = reconciler
            && tokio::time::timeout(grace, reconciler).await.is_err()
        {
            tracing::warn!("Reconciliation did not stop within the grace period.");
        }
        if tokio::time::timeout(grace, decisions).await.is_err() {
            tracing::warn!("Lookup decisions were still being stored at the grace period's end.");
        }
        if let Some(worker) = worker
            && tokio::time::timeout(grace, worker).await.is_err()
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
