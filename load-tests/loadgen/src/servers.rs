//! The servers under test, each on its own tokio runtime so that the generator (on another
//! runtime) and the server do not share a scheduler: a bare hyper "hello" server (the
//! baseline) and callgate built with [`Application::build`] from settings made in code.
//! Both runtimes are multi-threaded with the default worker count (one per core), as
//! `callgate serve` runs. Everything binds 127.0.0.1.

use std::{convert::Infallible, net::SocketAddr, path::Path, time::Duration};

use bytes::Bytes;
use callgate::{
    config::{Config, ManagerSettings, OneOrMany, Settings, SiteSettings},
    http::AppState,
    startup::Application,
    worker::Worker,
};
use http_body_util::Full;
use hyper::{Response, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::{net::TcpListener, runtime::Runtime, sync::oneshot};

/// A multi-threaded runtime with one worker per core (tokio's default).
pub fn runtime(name: &str) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(name)
        .build()
        .expect("tokio runtime")
}

/// The bare hyper server: every request gets `200 hello`.
pub struct Hello {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    rt: Option<Runtime>,
}

impl Hello {
    pub fn start() -> Hello {
        let rt = runtime("hello");
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind hello");
        let addr = listener.local_addr().expect("hello address");
        let (stop, mut stopped) = oneshot::channel::<()>();
        rt.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = &mut stopped => break,
                };
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let service = service_fn(|_req| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Hello {
            addr,
            stop: Some(stop),
            rt: Some(rt),
        }
    }
}

impl Drop for Hello {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// A callgate running in this process on its own runtime.
pub struct Callgate {
    pub addr: SocketAddr,
    pub state: AppState,
    pub worker: Arc<Worker>,
    token: tokio_util::sync::CancellationToken,
    served: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    rt: Option<Runtime>,
}

impl Callgate {
    /// Builds and starts callgate with `settings` (port forced to 0, host to 127.0.0.1).
    pub fn start(mut settings: Settings) -> anyhow::Result<Callgate> {
        settings.server.host = [127, 0, 0, 1].into();
        settings.server.port = 0;
        let rt = runtime("callgate");
        let app = rt.block_on(Application::build(Config::try_from(settings)?))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], app.port()));
        let state = app.state().clone();
        let worker = app.worker();
        let token = app.shutdown_token();
        let served = rt.spawn(app.run_until_stopped());
        Ok(Callgate {
            addr,
            state,
            worker,
            token,
            served: Some(served),
            rt: Some(rt),
        })
    }

    /// Runs `f` on callgate's runtime and waits for it.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.as_ref().expect("running").block_on(f)
    }

    /// Starts the background worker on callgate's runtime (for a store filled while the
    /// worker was disabled); it stops with the application.
    pub fn start_worker(&self, concurrency: usize) {
        let worker = self.worker.clone();
        let token = self.token.clone();
        self.rt
            .as_ref()
            .expect("running")
            .spawn(worker.run_until_stopped(concurrency, token));
    }

    /// Stops callgate and waits (bounded) for the server to finish.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.token.cancel();
        if let (Some(rt), Some(served)) = (self.rt.as_ref(), self.served.take()) {
            let _ =
                rt.block_on(async { tokio::time::timeout(Duration::from_secs(15), served).await });
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

impl Drop for Callgate {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Settings for a load-test callgate: the defaults, 40 managers (CRM users 1..=40, SIP
/// logins `mgr_N`), a webhook token, the store file under `dir`, no background worker (the
/// scenarios start it when they measure it).
pub fn settings(dir: &Path) -> Settings {
    let mut settings = Settings::defaults().expect("the defaults parse");
    settings.ringostat.webhook_token = WEBHOOK_TOKEN.into();
    settings.managers = (1..=MANAGERS)
        .map(|id| ManagerSettings {
            crm_user_id: id,
            ringostat_staff_id: Some(1000 + id as i64),
            sip: Some(OneOrMany::One(format!("mgr_{id}"))),
            code: None,
            phone: None,
        })
        .collect();
    settings.worker.enabled = false;
    settings.store.path = dir.join("callgate.redb");
    settings.rules.dir = dir.join("no-routing-rules");
    settings
}

/// The shop's site with its one tracking number.
pub fn shop_site() -> SiteSettings {
    SiteSettings {
        code: "shop1".to_owned(),
        project_ids: Vec::new(),
        tracking_numbers: vec!["+380441112233".to_owned()],
    }
}

/// Managers configured by [`settings`].
pub const MANAGERS: u64 = 40;

/// The webhook token configured by [`settings`].
pub const WEBHOOK_TOKEN: &str = "load-test-token";
