//! The HTTP server itself: graceful shutdown and the optional header read bound.

use std::time::{Duration, Instant};

use callgate::testing::fake_retailcrm::Fault;
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{eventually, spawn_app, spawn_app_with_crm, start_fake_crm};

fn socket_address(app: &crate::helpers::TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_lookup_finish_then_refuses_new_connections() {
    let crm = start_fake_crm().await;
    crm.set_fault(Fault::Hang);
    let mut app = spawn_app_with_crm(&crm, |s| s.lookup.deadline_ms = 500).await;
    let in_flight = {
        let request = app
            .client
            .get(app.url("/ringostat/route?caller=0981234567&format=json"))
            .send();
        tokio::spawn(request)
    };
    // The lookup is in flight once it has reached the (hung) CRM.
    eventually(
        Duration::from_secs(5),
        "the lookup reaches the CRM",
        || async { (!crm.requests().is_empty()).then_some(()) },
    )
    .await;

    let stopped = app.stop();

    let answer = in_flight
        .await
        .unwrap()
        .expect("the in-flight lookup is answered");
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["reason"], "timeout", "{body}");
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("the application stops within its grace period")
        .unwrap()
        .expect("the application stops cleanly");
    let refused = TcpStream::connect(socket_address(&app)).await;
    assert!(
        refused.is_err(),
        "a stopped callgate still accepts connections"
    );
}

/// Sends the start of a request and never finishes it; returns how long the server took to
/// close the connection, or `None` if it still held it open after `patience`.
async fn trickle(app: &crate::helpers::TestApp, patience: Duration) -> Option<Duration> {
    let mut stream = TcpStream::connect(socket_address(app)).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    // Whatever the server says before it closes (nothing, or a 408) ends in end-of-stream.
    match tokio::time::timeout(patience, stream.read_to_end(&mut rest)).await {
        Ok(_) => Some(started.elapsed()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn a_client_trickling_headers_is_cut_off_after_the_header_read_timeout() {
    let app = spawn_app(|s| s.server.header_read_timeout_ms = 200).await;
    let closed_after = trickle(&app, Duration::from_secs(10))
        .await
        .expect("the connection is closed within 10 s");
    assert!(
        closed_after >= Duration::from_millis(150),
        "closed after {closed_after:?}, before the 200 ms bound"
    );
    // A whole request on a fresh connection is still served.
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn without_a_header_read_timeout_a_slow_client_is_not_cut_off() {
    let app = spawn_app(|_| {}).await;
    assert_eq!(
        trickle(&app, Duration::from_millis(700)).await,
        None,
        "the default (0) must not bound header reads"
    );
}
