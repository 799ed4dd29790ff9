//! Behind a proxy (SPEC §9): `X-Forwarded-For`/`Forwarded` name the client only when the
//! connection comes from `server.trusted_proxies`; the per-source limit and the allow-list use
//! that client; an authenticated webhook is never rate-limited.

use crate::{
    calls::after_call,
    helpers::{TestApp, spawn_app},
};

fn ip(address: &str) -> std::net::IpAddr {
    address.parse().expect("an IP address")
}

fn net(cidr: &str) -> ipnet::IpNet {
    cidr.parse().expect("a CIDR")
}

/// `GET /ringostat/route` with the given forwarding headers; the status.
async fn lookup(app: &TestApp, headers: &[(&str, &str)]) -> u16 {
    let mut request = app
        .client
        .get(app.url("/ringostat/route?caller=0981234567"));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    request.send().await.expect("lookup").status().as_u16()
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    // 127.0.0.1 is no trusted proxy: every request is the peer's, whatever it claims.
    let app = spawn_app(|s| s.server.per_ip_rps = 1).await;
    assert_eq!(
        lookup(&app, &[("x-forwarded-for", "198.51.100.1")]).await,
        200
    );
    assert_eq!(
        lookup(&app, &[("x-forwarded-for", "198.51.100.2")]).await,
        429
    );
    assert_eq!(
        lookup(&app, &[("forwarded", "for=198.51.100.3")]).await,
        429
    );

    let app = spawn_app(|s| s.server.ip_allowlist = vec![ip("198.51.100.7")]).await;
    assert_eq!(
        lookup(&app, &[("x-forwarded-for", "198.51.100.7")]).await,
        403
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_limited_and_allowed() {
    let app = spawn_app(|s| {
        s.server.per_ip_rps = 1;
        s.server.trusted_proxies = vec![net("127.0.0.1/32")];
    })
    .await;
    // Two clients behind the proxy have a budget each; a client spoofing a left-hand entry
    // is still known by what the proxy appended.
    assert_eq!(
        lookup(&app, &[("x-forwarded-for", "198.51.100.1")]).await,
        200
    );
    assert_eq!(
        lookup(&app, &[("forwarded", "for=198.51.100.2")]).await,
        200
    );
    assert_eq!(
        lookup(&app, &[("x-forwarded-for", "6.6.6.6, 198.51.100.1")]).await,
        429
    );
    // A malformed header names nobody further: the proxy itself is the client.
    assert_eq!(
        lookup(&app, &[("x-forwarded-for", "not-an-address")]).await,
        200
    );
    assert_eq!(
        lookup(&app, &[("x-forwarded-for", "garbage, ,")]).await,
        429
    );

    let app = spawn_app(|s| {
        s.server.ip_allowlist = vec![ip("198.51.100.7")];
        s.server.trusted_proxies = vec![net("127.0.0.0/8")];
    })
    .await;
    assert_eq!(
        lookup(&app, &[("x-forwarded-for", "198.51.100.7")]).await,
        200
    );
    assert_eq!(
        lookup(&app, &[("x-forwarded-for", "198.51.100.8")]).await,
        403
    );
    assert_eq!(lookup(&app, &[]).await, 403);
}

#[tokio::test]
async fn an_authenticated_webhook_is_never_rate_limited() {
    let app = spawn_app(|s| s.server.per_ip_rps = 1).await;
    for i in 0..5 {
        let r = app
            .post_webhook(&after_call(
                &format!("rl-{i}"),
                "0671234567",
                "ANSWERED",
                1027,
            ))
            .await;
        assert_eq!(r.status(), 200, "webhook {i}");
    }
    assert_eq!(app.state.store.queue_depth().await.unwrap(), 5);
    // The source's budget is spent (the webhooks did not spend it: the first lookup passes)…
    assert_eq!(lookup(&app, &[]).await, 200);
    // …and a webhook without the right token is limited like any request.
    let wrong = app
        .client
        .post(app.url("/ringostat/webhook?token=wrong"))
        .json(&after_call("rl-x", "0671234567", "ANSWERED", 1027))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 429);
}
