//! Several instances on one Redis (SPEC §3.1): one instance at a time polls the CRM, every
//! instance hears what changed.
//!
//! | key | type | what |
//! |---|---|---|
//! | [`LEASE`] | STRING | the poller's owner token, `PX` the lease time; renewed by its holder, taken over by another instance once it expires (the holder died) |
//! | [`CHANGES`] | STREAM | every applied [`SyncEvent`], `origin` = the instance token; trimmed to about [`STREAM_MAXLEN`] entries |
//!
//! The mirror itself (one record per customer, the cursor) is in the shared store's
//! key/value space (`mirror:`), written by the poller before it appends to the stream. An
//! instance that starts notes the stream's last id, then loads the stored mirror, then reads
//! the stream from that id: a change that lands in between is applied twice, which is
//! harmless (every change carries the customer's whole state).

use std::time::Duration;

use redis::{
    AsyncCommands, Client, Script,
    aio::{ConnectionManager, ConnectionManagerConfig},
    streams::{StreamMaxlen, StreamReadOptions, StreamReadReply},
};
use serde::{Deserialize, Serialize};

use crate::domain::{
    manager::{ManagerId, ManagerState},
    mirror::MirrorChange,
    orders_mirror::OrderChange,
};

/// `sync:lease` STRING: the token of the instance that polls the CRM.
pub const LEASE: &str = "sync:lease";
/// `mirror:changes` STREAM: what the poller applied, for every other instance.
pub const CHANGES: &str = "mirror:changes";
/// About this many stream entries are kept (an instance further behind reloads the stored
/// mirror when it restarts).
pub const STREAM_MAXLEN: usize = 100_000;
/// How long one blocking stream read waits (below the connection's response timeout).
const BLOCK: Duration = Duration::from_millis(1000);
/// Response timeout of the bus's connections.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Renews the lease if this instance holds it, takes it if nobody does; 1 when held after.
const LEAD_LUA: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

/// Gives the lease up if this instance holds it.
const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// What travels on the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncEvent {
    Changes(Vec<MirrorChange>),
    /// The users the CRM lists as inactive, all of them.
    Inactive(Vec<ManagerId>),
    /// The first import finished.
    Imported,
    /// Changes to the orders mirror.
    Orders(Vec<OrderChange>),
    /// The orders mirror's first import finished.
    OrdersImported,
    /// An orders history poll reached the newest record.
    OrdersSynced,
    /// A poll reached the newest history record (for the lag of instances that do not poll).
    Synced,
    /// Managers' states set by one instance (`/retailcrm/user-status`, `users`).
    Managers(Vec<(ManagerId, ManagerState)>),
}

pub struct RedisSyncBus {
    conn: ConnectionManager,
    /// A connection of its own for blocking stream reads.
    tail_conn: ConnectionManager,
    lease_key: String,
    stream_key: String,
    token: String,
    lead: Script,
    release: Script,
}

/// Why the mirror's Redis bus failed; the cause is kept.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("Redis failed")]
    Redis(#[from] redis::RedisError),
    #[error("a mirror change could not be encoded")]
    Encode(#[from] serde_json::Error),
}

fn backend(e: redis::RedisError) -> BusError {
    BusError::Redis(e)
}

impl RedisSyncBus {
    pub async fn connect(url: &str, key_prefix: &str) -> Result<Self, BusError> {
        let client = Client::open(url).map_err(backend)?;
        let config = ConnectionManagerConfig::new().set_response_timeout(Some(RESPONSE_TIMEOUT));
        let conn = ConnectionManager::new_with_config(client.clone(), config.clone())
            .await
            .map_err(backend)?;
        let tail_conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(backend)?;
        Ok(RedisSyncBus {
            conn,
            tail_conn,
            lease_key: format!("{key_prefix}{LEASE}"),
            stream_key: format!("{key_prefix}{CHANGES}"),
            token: format!("callgate-{:016x}", rand::random::<u64>()),
            lead: Script::new(LEAD_LUA),
            release: Script::new(RELEASE_LUA),
        })
    }

    /// This instance's token (the `origin` of what it publishes).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Takes or renews the poll lease for `lease`; `true` while this instance holds it.
    pub async fn try_lead(&self, lease: Duration) -> Result<bool, BusError> {
        let ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1);
        let held: i64 = self
            .lead
            .key(&self.lease_key)
            .arg(&self.token)
            .arg(ms)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(backend)?;
        Ok(held == 1)
    }

    /// Gives the lease up (a clean shutdown: another instance takes over at once).
    pub async fn release(&self) -> Result<(), BusError> {
        let _: i64 = self
            .release
            .key(&self.lease_key)
            .arg(&self.token)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(backend)?;
        Ok(())
    }

    pub async fn publish(&self, event: &SyncEvent) -> Result<(), BusError> {
        let payload = serde_json::to_string(event)?;
        let _: String = self
            .conn
            .clone()
            .xadd_maxlen(
                &self.stream_key,
                StreamMaxlen::Approx(STREAM_MAXLEN),
                "*",
                &[("origin", self.token.as_str()), ("event", payload.as_str())],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// The id of the newest stream entry (`0-0` when there is none): where to read from
    /// after loading the stored mirror.
    pub async fn position(&self) -> Result<String, BusError> {
        let reply: redis::streams::StreamRangeReply = self
            .conn
            .clone()
            .xrevrange_count(&self.stream_key, "+", "-", 1)
            .await
            .map_err(backend)?;
        Ok(reply
            .ids
            .first()
            .map_or_else(|| "0-0".to_owned(), |e| e.id.clone()))
    }

    /// Waits up to [`BLOCK`] for entries after `from`; returns the events of other
    /// instances and the new position.
    pub async fn read(&self, from: &str) -> Result<(Vec<SyncEvent>, String), BusError> {
        let options = StreamReadOptions::default()
            .block(BLOCK.as_millis() as usize)
            .count(1000);
        let reply: Option<StreamReadReply> = self
            .tail_conn
            .clone()
            .xread_options(&[&self.stream_key], &[from], &options)
            .await
            .map_err(backend)?;
        let mut events = Vec::new();
        let mut position = from.to_owned();
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for entry in key.ids {
                position = entry.id.clone();
                let origin: Option<String> = entry.get("origin");
                if origin.as_deref() == Some(self.token.as_str()) {
                    continue;
                }
                let Some(payload) = entry.get::<String>("event") else {
                    continue;
                };
                match serde_json::from_str(&payload) {
                    Ok(event) => events.push(event),
                    Err(e) => {
                        tracing::warn!(error = %e, id = %entry.id, "Unreadable mirror change on the stream; skipped.")
                    }
                }
            }
        }
        Ok((events, position))
    }
}
