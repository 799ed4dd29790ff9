//! The HTTP server itself: graceful shutdown, the header and body read deadlines and the
//! connection cap (SPEC §9: slow clients cut off).

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

/// Sends `start` (the start of a request) and never finishes it; returns how long the server
/// took to close the connection and what it sent before, or `None` if it still held the
/// connection open after `patience`.
async fn stall(
    app: &crate::helpers::TestApp,
    start: &[u8],
    patience: Duration,
) -> Option<(Duration, Vec<u8>)> {
    let mut stream = TcpStream::connect(socket_address(app)).await.unwrap();
    stream.write_all(start).await.unwrap();
    let started = Instant::now();
    let mut said = Vec::new();
    // Whatever the server says before it closes ends in end-of-stream.
    match tokio::time::timeout(patience, stream.read_to_end(&mut said)).await {
        Ok(_) => Some((started.elapsed(), said)),
        Err(_) => None,
    }
}

const HALF_HEADERS: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n";
const HALF_LOOKUP_HEADERS: &[u8] =
    b"GET /ringostat/route?caller=0981234567 HTTP/1.1\r\nHost: x\r\n";

#[tokio::test]
async fn a_client_stalling_in_its_headers_is_disconnected_after_the_header_deadline() {
    let app = spawn_app(|s| s.server.header_read_timeout_ms = 200).await;
    for start in [HALF_HEADERS, HALF_LOOKUP_HEADERS, b"".as_slice()] {
        let (closed_after, said) = stall(&app, start, Duration::from_secs(10))
            .await
            .expect("the connection is closed within 10 s");
        assert!(
            closed_after >= Duration::from_millis(150),
            "closed after {closed_after:?}, before the 200 ms bound"
        );
        assert!(said.is_empty(), "{}", String::from_utf8_lossy(&said));
    }
    // A whole request on a fresh connection is still served.
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_deadline() {
    let app = spawn_app(|s| s.server.header_read_timeout_ms = 300).await;
    let mut stream = TcpStream::connect(socket_address(&app)).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut said = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut said)).await;
    assert!(
        read.is_ok(),
        "the idle connection was not closed within 10 s"
    );
    let said = String::from_utf8_lossy(&said);
    assert!(said.starts_with("HTTP/1.1 200"), "{said}");
}

#[tokio::test]
async fn a_trickling_body_is_cut_off_after_the_body_deadline_without_an_answer() {
    let app = spawn_app(|s| s.server.body_read_timeout_ms = 200).await;
    let lookup = b"POST /ringostat/route HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ncaller=098".as_slice();
    let webhook = format!(
        "POST /ringostat/webhook?token={} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{{\"uniqueid\":",
        crate::helpers::WEBHOOK_TOKEN
    );
    for start in [lookup, webhook.as_bytes()] {
        let (closed_after, said) = stall(&app, start, Duration::from_secs(10))
            .await
            .expect("the connection is closed within 10 s");
        assert!(
            closed_after >= Duration::from_millis(150),
            "closed after {closed_after:?}, before the 200 ms bound"
        );
        // Closed, not answered: hyper cannot answer a request it is still reading.
        assert!(said.is_empty(), "{}", String::from_utf8_lossy(&said));
    }
    assert_eq!(app.state.store.queue_depth().await.unwrap(), 0);
}

#[tokio::test]
async fn with_the_deadlines_off_a_slow_client_is_not_cut_off() {
    let app = spawn_app(|s| {
        s.server.header_read_timeout_ms = 0;
        s.server.body_read_timeout_ms = 0;
    })
    .await;
    assert_eq!(
        stall(&app, HALF_HEADERS, Duration::from_millis(700)).await,
        None,
        "0 must not bound header reads"
    );
}

#[tokio::test]
async fn connections_over_the_cap_wait_until_a_slot_frees() {
    let app = spawn_app(|s| {
        s.server.max_connections = 2;
        s.server.header_read_timeout_ms = 0;
    })
    .await;
    let address = socket_address(&app);
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(&address).await.unwrap();
        s.write_all(HALF_HEADERS).await.unwrap();
        idle.push(s);
    }
    // The kernel completes the handshake (listen backlog); callgate does not serve it yet.
    let mut third = TcpStream::connect(&address).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut said = Vec::new();
    let early =
        tokio::time::timeout(Duration::from_millis(500), third.read_to_end(&mut said)).await;
    assert!(
        early.is_err(),
        "served over the cap: {}",
        String::from_utf8_lossy(&said)
    );

    drop(idle.pop());
    tokio::time::timeout(Duration::from_secs(10), third.read_to_end(&mut said))
        .await
        .expect("served once a slot freed")
        .unwrap();
    let said = String::from_utf8_lossy(&said);
    assert!(said.starts_with("HTTP/1.1 200"), "{said}");
}
