//! A Redis for tests (STYLE §2.7 item 5): `TEST_REDIS_URL` when set (CI starts one), else a
//! `redis-server` this test binary starts once, on a free loopback port, without persistence.
//! Never a silent skip: without `redis-server` the tests fail and say how to get it.
//!
//! **Stopping the server we started.** Rust never drops statics, so nothing would kill a
//! child held in one. Instead `redis-server` runs under a tiny `sh` guardian whose stdin is a
//! pipe from this process: the guardian blocks in `read`, and when this process exits (or is
//! killed) the kernel closes the pipe, `read` returns, and the guardian kills the server.
//!
//! Each test uses its own random key prefix through [`RedisKeys`], whose `Drop` deletes every
//! key under it (omniqueue's `RedisStreamDrop`), so tests share one server without seeing each
//! other.

// Each test binary that includes this file uses a different part of it.
#![allow(dead_code)]

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

/// The variable naming an existing Redis (`redis://127.0.0.1:6390/`).
pub const TEST_REDIS_URL: &str = "TEST_REDIS_URL";
/// How long a started `redis-server` may take to answer `PING`.
const STARTUP_PATIENCE: Duration = Duration::from_secs(10);
/// Pause between two `PING`s while it starts.
const STARTUP_POLL: Duration = Duration::from_millis(10);

struct Server {
    url: String,
    /// The guardian of a server we started (see the module docs); kept so its stdin stays open.
    _guardian: Option<Mutex<Child>>,
}

static SERVER: OnceLock<Server> = OnceLock::new();

/// The URL of the test Redis, starting one on first use if `TEST_REDIS_URL` is unset.
pub fn redis_url() -> &'static str {
    &SERVER.get_or_init(start_or_reuse).url
}

fn start_or_reuse() -> Server {
    if let Ok(url) = std::env::var(TEST_REDIS_URL)
        && !url.is_empty()
    {
        wait_for_ping(&url, None);
        return Server {
            url,
            _guardian: None,
        };
    }
    match Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "redis-server not found: install it (apt-get install -y redis-server) or set TEST_REDIS_URL"
        ),
        Err(e) => panic!("cannot run redis-server: {e}"),
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut guardian = Command::new("sh")
        .args([
            "-c",
            r#"redis-server "$@" & pid=$!; read _ignored; kill "$pid"; wait "$pid""#,
            "redis-guardian",
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let url = format!("redis://127.0.0.1:{port}/");
    wait_for_ping(&url, Some(&mut guardian));
    Server {
        url,
        _guardian: Some(Mutex::new(guardian)),
    }
}

/// Polls `PING` (bounded) until the server answers.
fn wait_for_ping(url: &str, mut child: Option<&mut Child>) {
    let client = redis::Client::open(url).expect("a valid Redis URL");
    let deadline = Instant::now() + STARTUP_PATIENCE;
    loop {
        let pong = client
            .get_connection_with_timeout(Duration::from_secs(1))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
        match pong {
            Ok(_) => return,
            Err(e) => {
                if let Some(child) = child.as_deref_mut()
                    && let Ok(Some(status)) = child.try_wait()
                {
                    panic!("redis-server exited ({status}) before answering PING: {e}");
                }
                assert!(
                    Instant::now() < deadline,
                    "Redis at {url} did not answer PING within {STARTUP_PATIENCE:?}: {e}"
                );
                std::thread::sleep(STARTUP_POLL);
            }
        }
    }
}

/// A random key prefix on the test Redis; every key under it is deleted on drop.
pub struct RedisKeys {
    pub url: String,
    pub prefix: String,
}

impl RedisKeys {
    pub fn new() -> Self {
        RedisKeys {
            url: redis_url().to_owned(),
            prefix: format!("callgate-test:{:016x}:", rand::random::<u64>()),
        }
    }
}

impl Drop for RedisKeys {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(1)) else {
            return;
        };
        let pattern = format!("{}*", self.prefix);
        let mut cursor: u64 = 0;
        loop {
            let Ok((next, keys)): redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query(&mut conn)
            else {
                return;
            };
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys).query(&mut conn);
            }
            if next == 0 {
                return;
            }
            cursor = next;
        }
    }
}
