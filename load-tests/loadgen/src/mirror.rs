//! The owner mirror's figures (SPEC §10, §3.1): the first import of 100,000 customers
//! (`import`), change-to-answer freshness (`freshness`) and the lookup on the Redis store
//! (`lookup-redis`).

use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use callgate::{
    config::{CrmKind, StoreKind},
    crm::CustomerId,
    domain::{
        lookup::LookupPolicy,
        manager::ManagerId,
        mirror::{HistoryCursor, MirrorCustomer, PhoneKey},
    },
    store::{KeyValueExt, Store, keys, redis::RedisStore},
    sync::{SyncState, Syncer},
    testing::fake_retailcrm::{FakeCrmConfig, FakeRetailCrm},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    runtime::Runtime,
};

use crate::{
    generator::{self, RequestFactory, RunStats},
    scenarios::{
        OPEN_RATE, Options, Row, Verdict, WARM_OWNERS, alternate, fake_crm, median,
        open_lookup_run, owner_number, route_factory, row,
    },
    servers::{self, Callgate, Hello, MANAGERS},
};

/// The national number of the `i`-th seeded customer (`050…`), typed in one of six ways.
fn typed_number(i: u64) -> String {
    let d = format!("{:07}", i % 10_000_000);
    let (a, b, c) = (&d[0..3], &d[3..5], &d[5..7]);
    match i % 6 {
        0 => format!("050{d}"),
        1 => format!("+38050{d}"),
        2 => format!("38050{d}"),
        3 => format!("(050) {a}-{b}-{c}"),
        4 => format!("+38 (050) {a} {b} {c}"),
        _ => format!("050-{a}-{b}-{c}"),
    }
}

/// A fake retailCRM without rate limits holding `count` customers created a month ago (their
/// history is older than any import's window, as in a real account).
fn seeded_crm(crm_rt: &Runtime, count: u64) -> FakeRetailCrm {
    let crm = fake_crm(crm_rt, FakeCrmConfig::default());
    crm.set_rate_limits(None, None);
    for i in 0..count {
        crm.add_customer(&[&typed_number(i)], Some(1 + i % MANAGERS));
    }
    crm.backdate_history(Duration::from_secs(30 * 86_400));
    crm
}

/// Settings of a callgate following the (fake) retailCRM at `url` with the mirror on,
/// unthrottled on its side too, reading the history every second.
fn following(dir: &Path, url: &str, key: &str) -> callgate::config::Settings {
    let mut settings = servers::settings(dir);
    settings.crm.kind = CrmKind::Retailcrm;
    settings.crm.base_url = url.to_owned();
    settings.crm.api_key = key.into();
    settings.crm.default_site = "shop1".to_owned();
    settings.crm.rate_limit_rps = 1_000_000;
    settings.crm.telephony_rate_limit_rps = 1_000_000;
    settings.sync.enabled = true;
    settings.sync.history_interval_secs = 1;
    settings
}

/// Starts callgate on `settings` and waits (at most `limit`) for its first import.
fn start_imported(
    settings: callgate::config::Settings,
    limit: Duration,
) -> anyhow::Result<(Callgate, Arc<Syncer>)> {
    let started = Instant::now();
    let callgate = Callgate::start(settings)?;
    let syncer = callgate
        .state
        .sync
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the mirror is off"))?;
    while !syncer.mirror().imported() {
        anyhow::ensure!(started.elapsed() < limit, "the import took over {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok((callgate, syncer))
}

fn status_kb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .unwrap_or(f64::NAN)
}

// === import ===

/// `import-probe URL KEY COUNT DIR`: one first import in this fresh process, against the fake
/// retailCRM at URL (run by the parent); prints `CUSTOMERS=… SECS=… HWM_MB=…`.
pub fn import_probe(url: &str, key: &str, count: u64, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let started = Instant::now();
    let (callgate, syncer) = start_imported(following(dir, url, key), Duration::from_secs(300))?;
    let secs = started.elapsed().as_secs_f64();
    let (customers, phones) = syncer.mirror().size();
    anyhow::ensure!(
        customers as u64 == count && phones as u64 == count,
        "imported {customers} customers / {phones} numbers of {count}"
    );
    println!(
        "CUSTOMERS={customers} SECS={secs:.2} HWM_MB={:.1} RSS_MB={:.1}",
        status_kb("VmHWM:") / 1024.0,
        status_kb("VmRSS:") / 1024.0
    );
    callgate.stop();
    Ok(())
}

pub fn import(opts: &Options, notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    let count: u64 = if opts.quick { 10_000 } else { 100_000 };
    let crm_rt = servers::runtime("fake-crm");
    let crm = seeded_crm(&crm_rt, count);
    let dir = tempfile::tempdir()?;
    let out = Command::new(std::env::current_exe()?)
        .args(["import-probe", &crm.base_url(), crm.api_key()])
        .arg(count.to_string())
        .arg(dir.path())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "import-probe failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |k: &str| -> anyhow::Result<f64> {
        Ok(text
            .split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .ok_or_else(|| anyhow::anyhow!("no {k} in {text}"))?
            .parse()?)
    };
    let (secs, hwm, rss) = (field("SECS=")?, field("HWM_MB=")?, field("RSS_MB=")?);
    let pages = crm.request_count("GET /api/v5/customers");
    eprintln!(
        "[loadgen] import: {count} customers in {secs:.2} s, {pages} pages, VmHWM {hwm:.1} MB, VmRSS {rss:.1} MB"
    );
    notes.push(format!(
        "Import: {count} customers (one number each, typed six ways: `0501234567`, `+380…`, `380…`, `(050) 123-45-67`, `+38 (050) 123 45 67`, `050-123-45-67`) \
         in the fake retailCRM without rate limits (its own runtime, in the parent process), history older than the import's window; \
         callgate (embedded store, `crm.rate_limit_rps` 1,000,000) in a fresh child process, timed from `Application::build` to the mirror imported \
         ({pages} `GET customers` requests of 100); peak RSS = the child's VmHWM from /proc/self/status."
    ));
    Ok(vec![row(
        &format!(
            "First import of {} customers (time, peak RSS)",
            fmt_count(count)
        ),
        "report",
        format!(
            "{secs:.1} s ({:.0} customers/s); peak RSS {hwm:.1} MB",
            count as f64 / secs
        ),
        Verdict::Reported,
    )])
}

fn fmt_count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// === freshness ===

/// One `GET` on a connection of its own; the body.
async fn get_body(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: callgate\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.ok()?;
    let text = String::from_utf8_lossy(&answer);
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

pub fn freshness(
    opts: &Options,
    gen_rt: &Runtime,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Row>> {
    let (seeded, changes): (u64, u64) = if opts.quick { (500, 20) } else { (2_000, 100) };
    const SPACING: Duration = Duration::from_millis(100);
    const POLL: Duration = Duration::from_millis(5);
    const GIVE_UP: Duration = Duration::from_secs(10);
    let crm_rt = servers::runtime("fake-crm");
    let crm = seeded_crm(&crm_rt, seeded);
    let dir = tempfile::tempdir()?;
    let mut settings = following(dir.path(), &crm.base_url(), crm.api_key());
    settings.lookup.policy = LookupPolicy::Owner;
    let interval = Duration::from_secs(settings.sync.history_interval_secs);
    let (callgate, _) = start_imported(settings, Duration::from_secs(120))?;
    let addr = callgate.addr;
    let crm = Arc::new(crm);
    // Change k, `SPACING` after change k-1: even k reassigns seeded customer k to another
    // manager, odd k creates a customer with a new number; each is timed from the change to
    // the first lookup answering the new owner (polled every POLL).
    let times: Vec<Option<Duration>> = gen_rt.block_on(async {
        let tasks: Vec<_> = (0..changes)
            .map(|k| {
                let crm = crm.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(SPACING * k as u32).await;
                    let manager = 1 + (k * 7 + 3) % MANAGERS;
                    let caller = if k % 2 == 0 {
                        let id = crm.customers()[k as usize]["id"].as_u64()?;
                        let number = owner_number(k).e164().to_owned();
                        let changed = Instant::now();
                        crm.set_customer_manager_by_hand(id, Some(manager))
                            .then_some(())?;
                        (number, changed)
                    } else {
                        let national = format!("067{:07}", k);
                        let changed = Instant::now();
                        crm.add_customer(&[&national], Some(manager));
                        (format!("+38{national}"), changed)
                    };
                    let (number, changed) = caller;
                    let path = format!("/ringostat/route?caller={number}&format=json");
                    let want = format!("\"destination\":\"mgr_{manager}\"");
                    while changed.elapsed() < GIVE_UP {
                        if get_body(addr, &path)
                            .await
                            .is_some_and(|b| b.contains(&want))
                        {
                            return Some(changed.elapsed());
                        }
                        tokio::time::sleep(POLL).await;
                    }
                    None
                })
            })
            .collect();
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.ok().flatten());
        }
        times
    });
    callgate.stop();
    let missed = times.iter().filter(|t| t.is_none()).count();
    let mut ms: Vec<f64> = times
        .iter()
        .flatten()
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    let q = |p: f64| {
        ms.get(((ms.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let (p50, p99, max) = (q(0.5), q(0.99), ms.last().copied().unwrap_or(f64::NAN));
    let target_ms = (interval + Duration::from_secs(1)).as_secs_f64() * 1000.0;
    eprintln!(
        "[loadgen] freshness: {changes} changes, p50 {p50:.0} p99 {p99:.0} max {max:.0} ms, {missed} never answered"
    );
    notes.push(format!(
        "Freshness: {seeded} customers imported from the fake retailCRM, then {changes} changes made in it by hand {SPACING:?} apart (half owner reassignments, \
         half customers created with a new number), `sync.history_interval_secs = {}` (short on purpose; the default is 10), `lookup.policy = owner`; \
         each change timed from the moment it was made to the first lookup answering the new owner, the lookup polled every {POLL:?} (a connection per poll); \
         a change not answered within {GIVE_UP:?} counts as missed.",
        interval.as_secs()
    ));
    Ok(vec![row(
        &format!("Freshness: change in the CRM → lookup answer ({changes} changes)"),
        &format!("≤ history interval + 1 s = {:.0} ms", target_ms),
        format!("p50 {p50:.0} / p99 {p99:.0} / max {max:.0} ms; missed {missed}"),
        Verdict::of(missed == 0 && max <= target_ms),
    )])
}

// === lookup on the Redis store ===

/// Sanity of a warm callgate: a seeded number answers its owner's SIP login (not nobody).
pub(crate) fn ensure_routes(gen_rt: &Runtime, addr: SocketAddr) -> anyhow::Result<()> {
    let body = gen_rt.block_on(get_body(
        addr,
        "/ringostat/route?caller=380500000123&format=json",
    ));
    anyhow::ensure!(
        body.as_deref()
            .is_some_and(|b| b.contains("\"destination\":\"mgr_4\"")),
        "the sanity lookup answered {body:?}, not the owner mgr_4"
    );
    Ok(())
}

/// A `redis-server` on a free loopback port, stopped on drop.
struct RedisServer {
    child: Child,
    url: String,
}

impl RedisServer {
    fn start() -> anyhow::Result<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("redis-server could not be started: {e}"))?;
        let mut server = RedisServer {
            child,
            url: format!("redis://127.0.0.1:{port}/"),
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(10) || server.child.try_wait()?.is_some() {
                anyhow::bail!("redis-server did not start on port {port}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(server)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `count` mirrored customers (one number each, manager 1..=MANAGERS) and an
/// imported sync state into `store`: what a finished first import leaves.
pub(crate) async fn seed_mirror(store: Arc<dyn Store>, count: u64) -> anyhow::Result<()> {
    const WRITERS: u64 = 64;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut i = w;
                while i < count {
                    let customer = MirrorCustomer {
                        id: CustomerId(i + 1),
                        manager: Some(ManagerId(1 + i % MANAGERS)),
                        phones: vec![PhoneKey::of(&owner_number(i))],
                        last_activity: 0,
                    };
                    store
                        .set_json(&keys::mirror_customer(i + 1), &customer, None)
                        .await?;
                    i += WRITERS;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let state = SyncState {
        import_done: true,
        cursor: Some(HistoryCursor::AfterId(0)),
        ..SyncState::default()
    };
    store.set_json(&keys::mirror_state(), &state, None).await?;
    Ok(())
}

pub fn lookup_redis(
    opts: &Options,
    gen_rt: &Runtime,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Row>> {
    let redis = RedisServer::start()?;
    let prefix = "loadgen:";
    let seeded = Instant::now();
    gen_rt.block_on(async {
        let store: Arc<dyn Store> = Arc::new(RedisStore::connect(&redis.url, prefix).await?);
        seed_mirror(store, WARM_OWNERS).await
    })?;
    eprintln!(
        "[loadgen] lookup-redis: {WARM_OWNERS} mirrored customers written in {:.1} s",
        seeded.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir()?;
    let mut settings = servers::settings(dir.path());
    settings.store.kind = StoreKind::Redis;
    settings.store.redis_url = redis.url.clone();
    settings.store.key_prefix = prefix.to_owned();
    let callgate = Callgate::start(settings)?;
    let hello = Hello::start();
    ensure_routes(gen_rt, callgate.addr)?;
    let lookups = route_factory(WARM_OWNERS, "38050");
    let hello_req: RequestFactory = Arc::new(|_| generator::get("/"));
    let open = |addr: SocketAddr, f: &RequestFactory| open_lookup_run(gen_rt, opts, addr, f);
    let (mut c_open, mut h_open): (Vec<RunStats>, Vec<RunStats>) = (vec![], vec![]);
    for rep in 0..opts.reps {
        let (c, h) = alternate(
            rep,
            || open(callgate.addr, &lookups),
            || open(hello.addr, &hello_req),
        );
        eprintln!(
            "[loadgen] lookup-redis open rep {rep}: callgate p50 {:.2} p99 {:.2} ms fail {}; hello p50 {:.2} p99 {:.2} ms fail {}",
            c.ms(0.5),
            c.ms(0.99),
            c.failed(),
            h.ms(0.5),
            h.ms(0.99),
            h.failed()
        );
        c_open.push(c);
        h_open.push(h);
    }
    callgate.stop();
    drop(hello);
    drop(redis);
    let m = |v: &[RunStats], f: &dyn Fn(&RunStats) -> f64| median(v.iter().map(f).collect());
    let c_p99 = m(&c_open, &|s| s.ms(0.99));
    let c_p50 = m(&c_open, &|s| s.ms(0.5));
    let h_p99 = m(&h_open, &|s| s.ms(0.99));
    let h_p50 = m(&h_open, &|s| s.ms(0.5));
    let ratio = c_p99 / h_p99;
    let failed: u64 = c_open.iter().map(RunStats::failed).sum();
    notes.push(format!(
        "Lookup on Redis: a `redis-server` started by the scenario on a free loopback port (no persistence), {WARM_OWNERS} mirrored customers and an imported \
         sync state written into it (what a finished first import leaves), callgate on `store.kind = redis` (sandbox CRM, policy owner_if_available: \
         the owner from the in-memory mirror, the manager's state from memory); {} repetitions alternating with hello at {OPEN_RATE} req/s open loop, medians.",
        opts.reps
    ));
    Ok(vec![row(
        "Lookup p99 at 10,000 req/s open loop on the Redis store (ratio to hello)",
        "≤ 1.5× hello's p99",
        format!(
            "{ratio:.2}× (callgate p50 {c_p50:.2} / p99 {c_p99:.2} ms; hello p50 {h_p50:.2} / p99 {h_p99:.2} ms); failed {failed}"
        ),
        Verdict::of(ratio <= 1.5 && failed == 0),
    )])
}
