//! The HTTP/1.1 server: accepts connections, serves each with hyper, and answers the pre-call
//! lookup — the hot path, SPEC §10 — before the router when no public guard is configured.
//!
//! callgate speaks HTTP/1.1 only: Ringostat and retailCRM call it over HTTP/1.1 (TLS, where
//! used, ends at a proxy in front). Serving with hyper's http1 connection directly, rather than
//! `axum::serve` (protocol sniffing for HTTP/2 and upgrade support on every connection), is
//! the same stack the same-run "hello" baseline of load-tests/ uses; RESULTS.md has the
//! figures. Every connection gets `TCP_NODELAY` (an answer is one small write; it must not wait
//! for the client's delayed ACK). Slow and idle clients are cut off by one coarse deadline per
//! connection ([`deadline`]: header and body read deadlines, on by default, the fast path
//! included), and at most `server.max_connections` are served at once: beyond it callgate
//! stops accepting, so new connections wait in the kernel's listen backlog (and are refused
//! by the kernel once that is full) until a slot frees, rather than being accepted only to
//! be closed: a waiting client (Ringostat's retry, a load balancer's probe) is served as soon
//! as the deadlines have reaped an idle connection, and refusing costs callgate nothing.
//!
//! The fast path reads the body and calls [`routes::route::answer`], which the router's
//! `/ringostat/route` handler calls too, so behaviour is identical (a panic in the lookup
//! included: `answer` catches it); it only skips the router's
//! per-request work (route matching, method dispatch, boxed layers and bodies, the client
//! address extension). With an allow-list or a per-source limit configured, every request goes
//! through the router and its guard.

use std::{convert::Infallible, io, net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::ConnectInfo,
    http::{Method, Request},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http_body_util::{BodyExt, Collected, Limited};
use hyper::body::Incoming;
use hyper_util::{rt::TokioIo, server::graceful::GracefulShutdown};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;
use tower::Service;

use super::{
    AppState,
    deadline::{ClockedBody, ConnectionClock, ReadDeadlines, watchdog},
    error::ApiError,
    public_guard_configured, router, routes,
};

/// The lookup's path.
const ROUTE_PATH: &str = "/ringostat/route";

/// Serves `listener` until `shutdown` is cancelled, then stops accepting and waits for the
/// open connections to finish their in-flight requests (the caller bounds that wait).
pub async fn serve(listener: TcpListener, state: AppState, shutdown: CancellationToken) {
    let fast_lookup = !public_guard_configured(&state.config);
    let router = router(state.clone());
    let http = hyper::server::conn::http1::Builder::new();
    let server = &state.config.server;
    // Zero: no deadline (ReadDeadlines).
    let deadlines = ReadDeadlines {
        header: server.header_read_timeout.unwrap_or(Duration::ZERO),
        body: server.body_read_timeout.unwrap_or(Duration::ZERO),
    };
    let slots = Arc::new(Semaphore::new(server.max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        // At the cap, wait for a slot before accepting (module docs).
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = shutdown.cancelled() => break,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors and the like: accepting again at once would spin.
                tracing::error!(error = %e, "Accepting a connection failed; retrying in 1 s.");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = shutdown.cancelled() => break,
                }
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set.");
        }
        let clock = ConnectionClock::new(deadlines);
        let service = Gateway {
            router: router.clone(),
            state: state.clone(),
            fast_lookup,
            remote,
            clock: clock.clone(),
        };
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            tokio::select! {
                ended = connection => if let Err(e) = ended {
                    tracing::debug!(error = %e, "Connection ended with an error.");
                },
                () = watchdog(clock) => {
                    tracing::debug!("Connection closed: its client missed a read deadline.");
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Errors of one connection, not of the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One connection's service.
struct Gateway {
    router: Router,
    state: AppState,
    fast_lookup: bool,
    remote: SocketAddr,
    clock: Arc<ConnectionClock>,
}

impl hyper::service::Service<Request<Incoming>> for Gateway {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let clock = self.clock.clone();
        clock.expect_body(hyper::body::Body::is_end_stream(request.body()));
        if self.fast_lookup
            && request.uri().path() == ROUTE_PATH
            && matches!(*request.method(), Method::GET | Method::POST)
        {
            let state = self.state.clone();
            // Split here, not in the future: what the future captures it holds to its end.
            let (parts, body) = request.into_parts();
            return Box::pin(async move {
                let body = if hyper::body::Body::is_end_stream(&body) {
                    Ok(Bytes::new())
                } else {
                    // Boxed: a GET's empty body (the common lookup) needs no collector.
                    let limit = state.config.server.body_limit_bytes;
                    Box::pin(Limited::new(body, limit).collect())
                        .await
                        .map(Collected::to_bytes)
                };
                clock.handling();
                let answer = match body {
                    Ok(body) => routes::route::answer(&state, &parts, body.as_ref()).await,
                    Err(_) => ApiError::TooLarge.into_response(),
                };
                clock.expect_headers();
                Ok(answer)
            });
        }
        let mut request = request.map(|body| Body::new(ClockedBody::new(body, clock.clone())));
        request.extensions_mut().insert(ConnectInfo(self.remote));
        let mut router = self.router.clone();
        Box::pin(async move {
            let response = router.call(request).await;
            clock.expect_headers();
            response
        })
    }
}
