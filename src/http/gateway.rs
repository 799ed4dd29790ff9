//! The service `axum::serve` runs: every request gets its client address (`ConnectInfo`, for
//! the allow-list and the per-source limit), and the pre-call lookup — the hot path, SPEC §10
//! — is answered before the router when no public guard is configured.
//!
//! The fast path calls the very handler the router has for `/ringostat/route`
//! ([`routes::route::route`]), so behaviour is identical; it only skips the router's per-request
//! work (route matching, method dispatch, boxed layers), which load-tests/RESULTS.md measured as
//! a visible share of a lookup's cost. With an allow-list or a per-source limit configured, every
//! request goes through the router and its guard.

use std::{
    convert::Infallible,
    future::{Ready, ready},
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
};

use axum::{
    Router,
    extract::{ConnectInfo, Request, State},
    http::Method,
    response::{IntoResponse, Response},
    serve::IncomingStream,
};
use tokio::net::TcpListener;
use tower::Service;

use super::{AppState, routes};

/// The lookup's path.
const ROUTE_PATH: &str = "/ringostat/route";

/// Makes one [`Gateway`] per connection.
#[derive(Clone)]
pub struct MakeGateway {
    router: Router,
    state: AppState,
    fast_lookup: bool,
}

impl MakeGateway {
    /// `fast_lookup`: answer `/ringostat/route` before the router (only when no public guard
    /// needs to see the request).
    pub fn new(router: Router, state: AppState, fast_lookup: bool) -> Self {
        MakeGateway {
            router,
            state,
            fast_lookup,
        }
    }
}

impl Service<IncomingStream<'_, TcpListener>> for MakeGateway {
    type Response = Gateway;
    type Error = Infallible;
    type Future = Ready<Result<Gateway, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, stream: IncomingStream<'_, TcpListener>) -> Self::Future {
        ready(Ok(Gateway {
            router: self.router.clone(),
            state: self.state.clone(),
            fast_lookup: self.fast_lookup,
            remote: *stream.remote_addr(),
        }))
    }
}

/// One connection's service.
#[derive(Clone)]
pub struct Gateway {
    router: Router,
    state: AppState,
    fast_lookup: bool,
    remote: SocketAddr,
}

impl Service<Request> for Gateway {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.remote));
        if self.fast_lookup
            && request.uri().path() == ROUTE_PATH
            && matches!(*request.method(), Method::GET | Method::POST)
        {
            let state = self.state.clone();
            return Box::pin(async move {
                Ok(routes::route::route(State(state), request)
                    .await
                    .into_response())
            });
        }
        let mut router = self.router.clone();
        Box::pin(async move { router.call(request).await })
    }
}
