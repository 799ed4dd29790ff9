//! The CLI's side of the admin API: `callgate dead-letters …` and `callgate quarantine list`
//! talk to a running callgate over HTTP (the embedded store file is locked by the running
//! process, and with Redis several processes share the data, so the API is the one way in).

use std::time::Duration;

use serde_json::Value;

use crate::config::Config;

/// How long one admin request may take.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    #[error("admin.token is not configured: the admin API is disabled")]
    NoToken,
    #[error("cannot reach callgate at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("callgate answered {status}: {body}")]
    Refused { status: u16, body: String },
}

/// A client for one callgate's `/admin` API.
pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AdminClient {
    /// `url` overrides the address derived from `server.host`/`server.port`.
    pub fn new(config: &Config, url: Option<String>) -> Result<Self, AdminClientError> {
        let token = config.admin.token.expose_secret().to_owned();
        if token.is_empty() {
            return Err(AdminClientError::NoToken);
        }
        let base = url.unwrap_or_else(|| {
            let host = match config.server.host {
                std::net::IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".to_owned(),
                std::net::IpAddr::V6(v6) if v6.is_unspecified() => "[::1]".to_owned(),
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                ip => ip.to_string(),
            };
            format!("http://{host}:{}", config.server.port)
        });
        let http = reqwest::Client::builder()
            .timeout(ADMIN_TIMEOUT)
            .build()
            .map_err(|source| AdminClientError::Unreachable {
                url: base.clone(),
                source,
            })?;
        Ok(AdminClient {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, AdminClientError> {
        let url = self.base.clone();
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|source| AdminClientError::Unreachable {
                url: url.clone(),
                source,
            })?;
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .map_err(|source| AdminClientError::Unreachable { url, source })?;
        if !(200..300).contains(&status) {
            return Err(AdminClientError::Refused { status, body });
        }
        Ok(serde_json::from_str(&body).unwrap_or(Value::String(body)))
    }

    pub async fn get(&self, path: &str) -> Result<Value, AdminClientError> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post(&self, path: &str) -> Result<Value, AdminClientError> {
        self.send(self.http.post(format!("{}{path}", self.base)))
            .await
    }
}
