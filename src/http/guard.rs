//! The guard of the public endpoints (SPEC §9): who the client is, the optional IP allow-list
//! and the per-source rate limit.
//!
//! **Who the client is.** The connection's peer, unless the peer is one of
//! `server.trusted_proxies`: then the forwarding headers name the client — `Forwarded`
//! (RFC 7239, its `for=` parameters) when present, else `X-Forwarded-For` — walked right to
//! left (each proxy appends the address it received from), skipping trusted proxies; the
//! first address not in a trusted proxy is the client. A value that is not an address
//! (`unknown`, an obfuscated `_node`, garbage) ends the walk at the last address read, since
//! nothing left of it can be attributed; when every address is trusted, the leftmost one is
//! the client. An untrusted peer's headers are ignored: anyone can send them.
//!
//! **Rate limit.** Per client address, except that an authenticated webhook (the right
//! `?token=`) is never limited: Ringostat does not re-send a refused event, so a 429 would
//! lose it. The limiter's memory is bounded: [`forget_idle_sources`] runs every
//! [`FORGET_EVERY`] and drops the sources whose budget is full again.

use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::{Arc, Weak},
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::HeaderMap,
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;

use super::error::ApiError;
use crate::config::Config;
use crate::credential::Credential;

/// How often the per-source limiter forgets idle sources.
pub const FORGET_EVERY: Duration = Duration::from_secs(10);

/// The webhook, whose authenticated requests are never rate-limited.
const WEBHOOK_PATH: &str = "/ringostat/webhook";

/// Guards of the public endpoints.
#[derive(Clone)]
pub struct PublicGuard {
    allowlist: Arc<Vec<IpAddr>>,
    trusted_proxies: Arc<Vec<IpNet>>,
    limiter: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
    /// `ringostat.webhook_token` (empty: no webhook is authenticated).
    webhook_token: Credential,
}

impl PublicGuard {
    /// The guard of `config`; with a per-source limit, also starts the task that forgets
    /// idle sources (it ends when the guard is dropped). Needs a tokio runtime.
    pub fn new(config: &Config) -> Self {
        let server = &config.server;
        let limiter = NonZeroU32::new(server.per_ip_rps)
            .map(|rps| Arc::new(RateLimiter::keyed(Quota::per_second(rps))));
        if let Some(limiter) = &limiter {
            tokio::spawn(forget_idle_sources_periodically(Arc::downgrade(limiter)));
        }
        PublicGuard {
            allowlist: Arc::new(server.ip_allowlist.clone()),
            trusted_proxies: Arc::new(server.trusted_proxies.clone()),
            limiter,
            webhook_token: config.ringostat.webhook_token.clone(),
        }
    }

    /// Whether this request is a webhook with the right token.
    fn authenticated_webhook(&self, request: &Request) -> bool {
        if request.uri().path() != WEBHOOK_PATH || self.webhook_token.is_empty() {
            return false;
        }
        let query = request.uri().query().unwrap_or("");
        serde_urlencoded::from_str::<Vec<(String, String)>>(query)
            .unwrap_or_default()
            .iter()
            .find(|(k, _)| k == "token")
            .is_some_and(|(_, given)| self.webhook_token.matches(given.as_bytes()))
    }
}

pub async fn guard_public(
    State(guard): State<PublicGuard>,
    request: Request,
    next: Next,
) -> Response {
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| client_ip(c.0.ip(), request.headers(), &guard.trusted_proxies));
    if !guard.allowlist.is_empty() && !ip.is_some_and(|ip| guard.allowlist.contains(&ip)) {
        return ApiError::Forbidden.into_response();
    }
    if let (Some(limiter), Some(ip)) = (&guard.limiter, ip)
        && !guard.authenticated_webhook(&request)
        && limiter.check_key(&ip).is_err()
    {
        return ApiError::RateLimited.into_response();
    }
    next.run(request).await
}

/// Drops the sources whose budget is full again (they would be recreated as they are) and
/// gives the memory back.
pub fn forget_idle_sources(limiter: &DefaultKeyedRateLimiter<IpAddr>) {
    limiter.retain_recent();
    limiter.shrink_to_fit();
}

async fn forget_idle_sources_periodically(limiter: Weak<DefaultKeyedRateLimiter<IpAddr>>) {
    let mut every = tokio::time::interval(FORGET_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match limiter.upgrade() {
            Some(limiter) => forget_idle_sources(&limiter),
            None => return,
        }
    }
}

/// The client's address (module docs): `peer` unless it is a trusted proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops = forwarded_hops(headers);
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop {
            Some(ip) if is_trusted(ip) => client = *ip,
            Some(ip) => return *ip,
            None => return client,
        }
    }
    client
}

/// Whether the request reached the proxy in front of callgate over HTTPS: only a trusted
/// proxy's word counts (`Forwarded: proto=https`, its last element, which the nearest proxy
/// wrote; else the last `X-Forwarded-Proto` value).
pub fn forwarded_https(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> bool {
    if !trusted.iter().any(|net| net.contains(&peer)) {
        return false;
    }
    let last_value = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .map(str::trim)
    };
    if let Some(element) = last_value("forwarded") {
        return element
            .split(';')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("proto"))
            .is_some_and(|(_, v)| v.trim().trim_matches('"').eq_ignore_ascii_case("https"));
    }
    last_value("x-forwarded-proto").is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// The addresses a request was forwarded for, left (the origin) to right (the last proxy's
/// peer); `None` for a value that is not an address. `Forwarded` wins over `X-Forwarded-For`.
fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<&str> = headers
        .get_all("forwarded")
        .iter()
        .map(|v| v.to_str().unwrap_or("\u{0}"))
        .collect();
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .flat_map(|v| v.split(','))
            .map(|element| {
                element
                    .split(';')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                    .and_then(|(_, v)| parse_node(v.trim().trim_matches('"')))
            })
            .collect();
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("\u{0}").split(','))
        .map(|v| parse_node(v.trim()))
        .collect()
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:4711`.
fn parse_node(raw: &str) -> Option<IpAddr> {
    if let Ok(ip) = raw.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = raw.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    raw.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse().ok())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn trusted() -> Vec<IpNet> {
        vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]
    }

    #[test]
    fn only_a_trusted_proxy_says_the_request_came_over_https() {
        let https = [
            headers(&[("x-forwarded-proto", "https")]),
            headers(&[("forwarded", "for=203.0.113.9;proto=https")]),
            headers(&[(
                "forwarded",
                "for=203.0.113.9;proto=http, for=10.0.0.1;Proto=\"HTTPS\"",
            )]),
            headers(&[("x-forwarded-proto", "http, https")]),
        ];
        for h in &https {
            assert!(forwarded_https(ip("10.0.0.2"), h, &trusted()), "{h:?}");
            assert!(!forwarded_https(ip("203.0.113.9"), h, &trusted()), "{h:?}");
        }
        let plain = [
            HeaderMap::new(),
            headers(&[("x-forwarded-proto", "http")]),
            headers(&[(
                "forwarded",
                "for=203.0.113.9;proto=https, for=10.0.0.1;proto=http",
            )]),
            // `Forwarded` wins over `X-Forwarded-Proto`.
            headers(&[
                ("forwarded", "for=203.0.113.9"),
                ("x-forwarded-proto", "https"),
            ]),
        ];
        for h in &plain {
            assert!(!forwarded_https(ip("10.0.0.2"), h, &trusted()), "{h:?}");
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let h = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")]);
        assert_eq!(
            client_ip(ip("203.0.113.9"), &h, &trusted()),
            ip("203.0.113.9")
        );
        assert_eq!(client_ip(ip("203.0.113.9"), &h, &[]), ip("203.0.113.9"));
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_address_is_the_client() {
        // The client spoofed 6.6.6.6; the proxies appended what they saw.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.1.1")]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &h, &trusted()),
            ip("198.51.100.7")
        );
        // Several header lines are one list, in order.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7:5000, 10.1.1.1"),
        ]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &h, &trusted()),
            ip("198.51.100.7")
        );
        // Forwarded wins over X-Forwarded-For; IPv6 with brackets and ports.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            (
                "forwarded",
                r#"for=6.6.6.6, For="[2001:db8:cafe::17]:4711";proto=https, for=10.2.2.2"#,
            ),
        ]);
        assert_eq!(
            client_ip(ip("::1"), &h, &trusted()),
            ip("2001:db8:cafe::17")
        );
        // Every hop trusted: the leftmost.
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.1.1.1")]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted()), ip("10.9.9.9"));
        // No header from a trusted peer: the peer.
        assert_eq!(
            client_ip(ip("10.0.0.2"), &HeaderMap::new(), &trusted()),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn a_malformed_hop_ends_the_walk_at_the_last_address_read() {
        for bad in [
            "garbage",
            "unknown",
            "_hidden",
            "",
            "999.1.1.1",
            "1.2.3.4/8",
        ] {
            let h = headers(&[("x-forwarded-for", &format!("6.6.6.6, {bad}, 10.1.1.1"))]);
            assert_eq!(
                client_ip(ip("10.0.0.2"), &h, &trusted()),
                ip("10.1.1.1"),
                "{bad}"
            );
            let h = headers(&[("forwarded", &format!("for={bad}"))]);
            assert_eq!(
                client_ip(ip("10.0.0.2"), &h, &trusted()),
                ip("10.0.0.2"),
                "{bad}"
            );
        }
        let h = headers(&[("forwarded", "proto=https;by=10.0.0.1")]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted()), ip("10.0.0.2"));
        // A header that is not even text.
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        );
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted()), ip("10.0.0.2"));
    }

    #[tokio::test]
    async fn the_limiter_forgets_idle_sources() {
        let limiter: DefaultKeyedRateLimiter<IpAddr> =
            RateLimiter::keyed(Quota::per_second(NonZeroU32::new(1000).unwrap()));
        for i in 0..200u32 {
            assert!(limiter.check_key(&IpAddr::from(i.to_be_bytes())).is_ok());
        }
        assert_eq!(limiter.len(), 200);
        // At 1,000/s a source's budget is full again within a millisecond or so.
        crate::testing::eventually(Duration::from_secs(5), "idle sources forgotten", || {
            forget_idle_sources(&limiter);
            std::future::ready(limiter.is_empty().then_some(()))
        })
        .await;
        // A source still within its budget's refill is kept.
        let busy = ip("192.0.2.1");
        while limiter.check_key(&busy).is_ok() {}
        forget_idle_sources(&limiter);
        assert_eq!(limiter.len(), 1);
    }
}
