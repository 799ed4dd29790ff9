//! The scenarios of SPEC §10 and the report. Each returns [`Row`]s: figure, target, measured,
//! verdict. Details (settings, per-repetition figures) go to stderr as they are measured and
//! into the report's notes.

use std::{
    collections::{BTreeMap, HashSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use callgate::{
    config::{CrmKind, StoreKind},
    crm::CustomerId,
    domain::{
        manager::ManagerId,
        phone_number::{PhoneNormalizer, PhoneNumber, RegionCode},
    },
    store::{OwnerEntry, Store, embedded::EmbeddedStore},
    testing::fake_retailcrm::{FakeCrmConfig, FakeRetailCrm, FakeUser, Fault},
};
use serde_json::json;
use tokio::runtime::Runtime;

use crate::{
    generator::{self, RequestFactory, RunStats},
    servers::{self, Callgate, Hello, MANAGERS, WEBHOOK_TOKEN},
};

/// Suite options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Repetitions of each callgate/hello pair (medians are reported).
    pub reps: usize,
    /// Measured seconds of each lookup run (after a 1 s warm-up).
    pub secs: Duration,
    /// Smaller counts, for a quick check of the harness itself.
    pub quick: bool,
    /// Run only the scenarios whose name starts with this (lookup, hung, ingest, backlog,
    /// budget, normalization, rss, import, freshness, lookup-redis), e.g. under a profiler.
    pub only: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            reps: 5,
            secs: Duration::from_secs(5),
            quick: false,
            only: None,
        }
    }
}

/// One line of the report table.
pub(crate) struct Row {
    figure: String,
    target: String,
    measured: String,
    verdict: Verdict,
}

#[derive(Clone, Copy)]
pub(crate) enum Verdict {
    Met,
    Missed,
    Reported,
    NotMeasured,
}

impl Verdict {
    pub(crate) fn of(ok: bool) -> Verdict {
        if ok { Verdict::Met } else { Verdict::Missed }
    }
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "**MISSED**",
            Verdict::Reported => "(reported)",
            Verdict::NotMeasured => "not measurable yet",
        }
    }
}

pub(crate) fn row(figure: &str, target: &str, measured: String, verdict: Verdict) -> Row {
    Row {
        figure: figure.to_owned(),
        target: target.to_owned(),
        measured,
        verdict,
    }
}

pub(crate) const WARMUP: Duration = Duration::from_secs(1);
pub(crate) const CONNECTIONS: usize = 64;
pub(crate) const OPEN_RATE: f64 = 10_000.0;
pub(crate) const WARM_OWNERS: u64 = 100_000;
pub(crate) const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Prints a progress line to stderr (the report goes to stdout).
macro_rules! note {
    ($($t:tt)*) => { eprintln!("[loadgen] {}", format!($($t)*)) };
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

pub(crate) fn owner_number(i: u64) -> PhoneNumber {
    PhoneNumber::from_e164(&format!("+38050{i:07}")).expect("valid owner number")
}

fn owner_entry(i: u64) -> OwnerEntry {
    OwnerEntry {
        customer_id: Some(CustomerId(i + 1)),
        manager_id: Some(ManagerId(1 + i % MANAGERS)),
    }
}

pub(crate) fn route_factory(count: u64, prefix: &str) -> RequestFactory {
    // Spread over the numbers with a stride coprime to the count, so consecutive requests
    // hit unrelated keys; the paths are built up front so the generator does no formatting.
    let paths: Vec<String> = (0..count)
        .map(|i| format!("/ringostat/route?caller={prefix}{:07}", (i * 7919) % count))
        .collect();
    let paths = Arc::new(paths);
    Arc::new(move |n| generator::get(&paths[(n % paths.len() as u64) as usize]))
}

/// An after-call webhook (call-log naming, as `tests/api/calls.rs` sends it): a missed call
/// from a number of its own, call id `load-{tag}-{n}`.
fn missed_call(tag: &str, n: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "uniqueid": format!("load-{tag}-{n}"),
        "calldate": "2024-07-31 14:59:35",
        "caller": format!("38063{:07}", n % 10_000_000),
        "dst": "380441112233",
        "call_type": "in",
        "disposition": "NO ANSWER",
        "billsec": 0,
        "waittime": "12",
        "recording": "",
        "has_recording": "0",
        "employee_number": -1,
        "utm_source": "google",
        "utm_medium": "cpc",
        "utm_campaign": "summer",
        "client_id": "1169999034.1555555510",
    }))
    .expect("JSON")
}

fn webhook_factory(tag: &'static str) -> RequestFactory {
    let path = format!("/ringostat/webhook?token={WEBHOOK_TOKEN}");
    Arc::new(move |n| generator::post_json(&path, missed_call(tag, n)))
}

fn fmt_rate(x: f64) -> String {
    let x = x.round() as u64;
    let s = x.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Runs every scenario and prints the report (markdown) to stdout.
pub fn suite(opts: &Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let gen_rt = servers::runtime("loadgen");
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let on = |name: &str| opts.only.as_deref().is_none_or(|o| name.starts_with(o));
    if on("lookup") {
        rows.extend(lookup_warm(opts, &gen_rt, &mut notes)?);
    }
    if on("lookup-deadlines") {
        rows.extend(lookup_deadlines_cost(opts, &gen_rt, &mut notes)?);
    }
    if on("lookup-trail") {
        rows.extend(lookup_trail_cost(opts, &gen_rt, &mut notes)?);
    }
    if on("lookup-slow-clients") {
        rows.extend(lookup_under_slow_clients(opts, &gen_rt, &mut notes)?);
    }
    if on("rules") {
        rows.push(lookup_rules_cost(opts, &gen_rt, &mut notes)?);
    }
    if on("hung") {
        rows.extend(lookup_hung_crm(opts, &gen_rt, &mut notes)?);
    }
    if on("ingest") {
        rows.extend(ingest(opts, &gen_rt, &mut notes)?);
    }
    if on("backlog") {
        rows.extend(backlog(opts, &gen_rt, &mut notes)?);
    }
    if on("budget") {
        rows.extend(crate::budget::budget(opts, &gen_rt, &mut notes)?);
    }
    if on("secrets") {
        rows.extend(crate::secrets::secrets(opts, &mut notes)?);
    }
    if on("normalization") {
        rows.push(normalization(&mut notes)?);
    }
    if on("rss") {
        rows.extend(owners_rss_rows(opts, &mut notes)?);
    }
    if on("import") {
        rows.extend(crate::mirror::import(opts, &mut notes)?);
    }
    if on("freshness") {
        rows.extend(crate::mirror::freshness(opts, &gen_rt, &mut notes)?);
    }
    if on("lookup-redis") {
        rows.extend(crate::mirror::lookup_redis(opts, &gen_rt, &mut notes)?);
    }
    println!("| figure | target | measured | verdict |");
    println!("| --- | --- | --- | --- |");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} |",
            r.figure,
            r.target,
            r.measured,
            r.verdict.as_str()
        );
    }
    println!();
    println!("Notes and settings:");
    println!();
    for n in &notes {
        println!("- {n}");
    }
    println!(
        "- Suite wall time {:.0} s; machine: {} cores.",
        started.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    gen_rt.shutdown_timeout(Duration::from_secs(5));
    Ok(())
}

// === Lookup, warm index ===

fn warm_callgate(dir: &Path) -> anyhow::Result<Callgate> {
    warm_callgate_with(dir, None)
}

/// 200 rules none of which matches the load's callers (+38050…), half of them on `dst` (so
/// every lookup normalizes its `dst`), the rest on caller prefix, UTM campaign, site and a
/// time window — the worst case for the matcher: every rule is evaluated.
fn write_rules(dir: &Path) -> anyhow::Result<PathBuf> {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules)?;
    let mut text = String::from("timezone = \"Europe/Kyiv\"\n");
    for i in 0..RULES {
        text.push_str(&format!("\n[[rule]]\nname = \"rule {i}\"\n"));
        match i % 4 {
            0 | 1 => text.push_str(&format!("dst = \"+3804455{i:05}\"\norder_status = \"cancel-other\"\n")),
            2 => text.push_str(&format!(
                "caller_prefix = \"+38067{:03}\"\nutm_campaign = \"c{i}\"\nforward_to = \"mgr_1\"\n",
                i % 1000
            )),
            _ => text.push_str(&format!(
                "site = \"site{i}\"\nweekdays = \"mon-fri\"\nhours = \"09:00-18:00\"\nlookup_policy = \"owner\"\n"
            )),
        }
    }
    std::fs::write(rules.join("200-rules.toml"), text)?;
    Ok(rules)
}

/// Number of rules in the rules-cost scenario (the issue: "200 rules cost the lookup under 10%").
const RULES: usize = 200;

fn warm_callgate_with(dir: &Path, rules: Option<PathBuf>) -> anyhow::Result<Callgate> {
    warm_callgate_configured(dir, |settings| {
        if let Some(rules) = rules {
            settings.rules.dir = rules;
        }
    })
}

fn warm_callgate_configured(
    dir: &Path,
    configure: impl FnOnce(&mut callgate::config::Settings),
) -> anyhow::Result<Callgate> {
    // What a finished first import leaves (the owner mirror, which lookups answer from),
    // written into the embedded store; then callgate opens the same file (as after a restart).
    {
        let rt = servers::runtime("warm-up");
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.join("callgate.redb"))?);
        rt.block_on(crate::mirror::seed_mirror(store, WARM_OWNERS))?;
    }
    // The shop's tracking number is a site's, so a lookup with rules on `site` derives its
    // site from `dst` (the requests name none).
    let mut settings = servers::settings(dir);
    settings.sites.push(servers::shop_site());
    configure(&mut settings);
    Callgate::start(settings)
}

/// One closed-loop lookup run: {CONNECTIONS} connections, warm-up then `opts.secs` measured.
pub(crate) fn closed_lookup_run(
    gen_rt: &Runtime,
    opts: &Options,
    addr: SocketAddr,
    f: &RequestFactory,
) -> RunStats {
    gen_rt.block_on(generator::closed_loop(
        addr,
        CONNECTIONS,
        WARMUP,
        opts.secs,
        None,
        LOOKUP_TIMEOUT,
        f.clone(),
    ))
}

/// One open-loop lookup run: {OPEN_RATE} req/s over {CONNECTIONS} connections, warm-up
/// then `opts.secs` measured.
pub(crate) fn open_lookup_run(
    gen_rt: &Runtime,
    opts: &Options,
    addr: SocketAddr,
    f: &RequestFactory,
) -> RunStats {
    gen_rt.block_on(generator::open_loop(
        addr,
        CONNECTIONS,
        OPEN_RATE,
        WARMUP,
        opts.secs,
        LOOKUP_TIMEOUT,
        f.clone(),
    ))
}

/// Runs `a` and `b` once each, `a` first in even repetitions and `b` first in odd ones, so
/// drift on a shared machine hits both alike. Returns `(a's, b's)`.
pub(crate) fn alternate<T>(rep: usize, a: impl FnOnce() -> T, b: impl FnOnce() -> T) -> (T, T) {
    if rep.is_multiple_of(2) {
        let a = a();
        (a, b())
    } else {
        let b = b();
        (a(), b)
    }
}

/// The cost of 200 routing rules on the lookup: the same warm lookup with and without them,
/// alternating, medians (target: under 10%, i.e. ≥ 0.9× the throughput without rules).
fn lookup_rules_cost(
    opts: &Options,
    gen_rt: &Runtime,
    notes: &mut Vec<String>,
) -> anyhow::Result<Row> {
    let plain_dir = tempfile::tempdir()?;
    let rules_dir = tempfile::tempdir()?;
    let plain = warm_callgate(plain_dir.path())?;
    let rules = write_rules(rules_dir.path())?;
    let ruled = warm_callgate_with(rules_dir.path(), Some(rules))?;
    // Both get the same requests, with a dst, so the `dst` rules normalize it.
    let count = WARM_OWNERS;
    let paths: Vec<String> = (0..count)
        .map(|i| {
            format!(
                "/ringostat/route?caller=38050{:07}&dst=380441112233&utm_campaign=summer",
                (i * 7919) % count
            )
        })
        .collect();
    let paths = Arc::new(paths);
    let lookups: RequestFactory =
        Arc::new(move |n| generator::get(&paths[(n % paths.len() as u64) as usize]));
    let m = ab_lookup(
        opts,
        gen_rt,
        &format!("rules (a with {RULES}, b without)"),
        (&ruled, &plain),
        &lookups,
        false,
    )?;
    let (w, wo, failed) = (m.a_rps, m.b_rps, m.failed);
    ruled.stop();
    plain.stop();
    let ratio = w / wo;
    notes.push(format!(
        "Rules cost: two callgates on identical warm indexes, one with {RULES} non-matching rules (half on `dst`, so each lookup normalizes its `dst`; the rest on caller prefix + UTM campaign, or site + weekday/time window in Europe/Kyiv; the site is derived from `dst` through `[[sites]]`), \
         the same `GET /ringostat/route?caller=…&dst=…&utm_campaign=…` requests, {CONNECTIONS} connections closed loop, {} alternating runs, medians.",
        opts.reps
    ));
    Ok(row(
        "Lookup with 200 routing rules (throughput ratio to no rules)",
        "cost < 10% (≥ 0.9×)",
        format!(
            "{ratio:.2}× ({} vs {} req/s); failed {failed}",
            fmt_rate(w),
            fmt_rate(wo)
        ),
        Verdict::of(ratio >= 0.9 && failed == 0),
    ))
}

fn lookup_warm(
    opts: &Options,
    gen_rt: &Runtime,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Row>> {
    let dir = tempfile::tempdir()?;
    let callgate = warm_callgate(dir.path())?;
    let hello = Hello::start();
    // Sanity: a warm number resolves to its owner's SIP login.
    let sanity = gen_rt.block_on(generator::closed_loop(
        callgate.addr,
        1,
        Duration::ZERO,
        Duration::from_secs(5),
        Some(1),
        LOOKUP_TIMEOUT,
        Arc::new(|_| generator::get("/ringostat/route?caller=380500000123&format=json")),
    ));
    anyhow::ensure!(sanity.ok_total == 1, "the sanity lookup failed");
    crate::mirror::ensure_routes(gen_rt, callgate.addr)?;
    let lookups = route_factory(WARM_OWNERS, "38050");
    let hello_req: RequestFactory = Arc::new(|_| generator::get("/"));
    let closed = |addr: SocketAddr, f: &RequestFactory| closed_lookup_run(gen_rt, opts, addr, f);
    let open = |addr: SocketAddr, f: &RequestFactory| open_lookup_run(gen_rt, opts, addr, f);
    let (mut c_closed, mut h_closed, mut c_open, mut h_open) = (vec![], vec![], vec![], vec![]);
    for rep in 0..opts.reps {
        let (c, h) = alternate(
            rep,
            || closed(callgate.addr, &lookups),
            || closed(hello.addr, &hello_req),
        );
        note!(
            "closed rep {rep}: callgate {:.0}/s p50 {:.2} p99 {:.2} ms fail {}; hello {:.0}/s p50 {:.2} p99 {:.2} ms fail {}",
            c.rps(),
            c.ms(0.5),
            c.ms(0.99),
            c.failed(),
            h.rps(),
            h.ms(0.5),
            h.ms(0.99),
            h.failed()
        );
        c_closed.push(c);
        h_closed.push(h);
        let (c, h) = alternate(
            rep,
            || open(callgate.addr, &lookups),
            || open(hello.addr, &hello_req),
        );
        note!(
            "open rep {rep}: callgate {:.0}/s p50 {:.2} p99 {:.2} max {:.2} ms (service p99 {:.2}) fail {}; hello {:.0}/s p50 {:.2} p99 {:.2} max {:.2} ms (service p99 {:.2}) fail {}",
            c.rps(),
            c.ms(0.5),
            c.ms(0.99),
            c.max_ms(),
            c.service.value_at_quantile(0.99) as f64 / 1000.0,
            c.failed(),
            h.rps(),
            h.ms(0.5),
            h.ms(0.99),
            h.max_ms(),
            h.service.value_at_quantile(0.99) as f64 / 1000.0,
            h.failed()
        );
        c_open.push(c);
        h_open.push(h);
    }
    callgate.stop();
    drop(hello);
    let m = |v: &[RunStats], f: &dyn Fn(&RunStats) -> f64| median(v.iter().map(f).collect());
    let fails = |v: &[RunStats]| v.iter().map(RunStats::failed).sum::<u64>();
    let c_rps = m(&c_closed, &|s| s.rps());
    let h_rps = m(&h_closed, &|s| s.rps());
    let ratio = c_rps / h_rps;
    let c_p99 = m(&c_closed, &|s| s.ms(0.99));
    let c_p50 = m(&c_closed, &|s| s.ms(0.5));
    let h_p99 = m(&h_closed, &|s| s.ms(0.99));
    let h_p50 = m(&h_closed, &|s| s.ms(0.5));
    let o_c_p99 = m(&c_open, &|s| s.ms(0.99));
    let o_c_p50 = m(&c_open, &|s| s.ms(0.5));
    let o_h_p99 = m(&h_open, &|s| s.ms(0.99));
    let o_h_p50 = m(&h_open, &|s| s.ms(0.5));
    let o_ratio = o_c_p99 / o_h_p99;
    let closed_fail = fails(&c_closed);
    let open_fail = fails(&c_open);
    notes.push(format!(
        "Lookup: {WARM_OWNERS} customers in the owner mirror (written into the embedded store as a finished first import leaves them) (managers 1..={MANAGERS}, sandbox CRM, policy owner_if_available, worker off); \
         `GET /ringostat/route?caller=38050XXXXXXX` spread over all of them (text answer `mgr_N`). Hello: bare hyper http1 `200 hello`. \
         {} repetitions alternating callgate/hello, {WARMUP:?} warm-up + {:?} measured each; medians. Generator: in-repo `loadgen` (hyper client connections, one per task, keep-alive) on its own runtime; \
         open loop at {OPEN_RATE} req/s over {CONNECTIONS} connections, paced by a high-resolution timer thread (tokio's timer ticks in whole milliseconds), latency from the intended send time (coordinated omission corrected).",
        opts.reps, opts.secs
    ));
    Ok(vec![
        row(
            "Lookup throughput, warm index, 64 conn closed loop (ratio to hello)",
            "≥ 0.8×",
            format!(
                "{ratio:.2}× ({} vs {} req/s); failed {closed_fail}",
                fmt_rate(c_rps),
                fmt_rate(h_rps)
            ),
            Verdict::of(ratio >= 0.8 && closed_fail == 0),
        ),
        row(
            "Lookup latency, 64 conn closed loop (saturation)",
            "report (SPEC judges latency at a fixed rate)",
            format!(
                "callgate p50 {c_p50:.2} / p99 {c_p99:.2} ms; hello p50 {h_p50:.2} / p99 {h_p99:.2} ms"
            ),
            Verdict::Reported,
        ),
        row(
            "Lookup p99 at 10,000 req/s open loop, CO-corrected (ratio to hello)",
            "≤ 1.5× hello's p99",
            format!(
                "{o_ratio:.2}× (callgate p50 {o_c_p50:.2} / p99 {o_c_p99:.2} ms; hello p50 {o_h_p50:.2} / p99 {o_h_p99:.2} ms); failed {open_fail}"
            ),
            Verdict::of(o_ratio <= 1.5 && open_fail == 0),
        ),
        row(
            "Lookup p99 at 10,000 req/s open loop, absolute",
            "≤ 2 ms (issue)",
            format!("{o_c_p99:.2} ms"),
            Verdict::of(o_c_p99 <= 2.0),
        ),
    ])
}

// === Lookup with the CRM hung ===

pub(crate) fn fake_crm(crm_rt: &Runtime, cfg: FakeCrmConfig) -> FakeRetailCrm {
    let crm = crm_rt.block_on(FakeRetailCrm::start(cfg));
    for id in 1..=MANAGERS {
        crm.add_user(FakeUser::manager(id, &format!("Manager{id}"), None));
    }
    crm
}

fn lookup_hung_crm(
    opts: &Options,
    gen_rt: &Runtime,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Row>> {
    const DEADLINE_MS: u64 = 300;
    let (rate, secs, conns) = if opts.quick {
        (200.0, 2, 100)
    } else {
        (400.0, 5, 200)
    };
    let crm_rt = servers::runtime("fake-crm");
    let crm = fake_crm(
        &crm_rt,
        FakeCrmConfig {
            rate_limit_rps: None,
            telephony_rate_limit_rps: None,
            max_hang: Duration::from_secs(30),
            ..FakeCrmConfig::default()
        },
    );
    crm.set_fault(Fault::Hang);
    let dir = tempfile::tempdir()?;
    let mut settings = servers::settings(dir.path());
    settings.lookup.deadline_ms = DEADLINE_MS;
    settings.crm.kind = CrmKind::Retailcrm;
    settings.crm.base_url = crm.base_url();
    settings.crm.api_key = crm.api_key().into();
    settings.crm.default_site = "shop1".into();
    // High enough that the limiter never holds a lookup back: each one reaches the hung CRM.
    settings.crm.rate_limit_rps = 100_000;
    settings.crm.telephony_rate_limit_rps = 100_000;
    let callgate = Callgate::start(settings)?;
    let total = (rate * secs as f64) as u64;
    // Distinct numbers the index does not know: every lookup asks the (hung) CRM.
    let lookups = route_factory(total, "38067");
    let s = gen_rt.block_on(generator::open_loop(
        callgate.addr,
        conns,
        rate,
        Duration::ZERO,
        Duration::from_secs(secs),
        LOOKUP_TIMEOUT,
        lookups,
    ));
    let hung = crm.requests().iter().filter(|r| r.status.is_none()).count();
    crm.clear_faults();
    callgate.stop();
    drop(crm);
    crm_rt.shutdown_timeout(Duration::from_secs(5));
    let service_max = s.service.max() as f64 / 1000.0;
    let limit = DEADLINE_MS as f64 + 5.0;
    note!(
        "hung CRM: {} ok of {total}, failed {}, max {:.1} ms (service max {service_max:.1} ms), p50 {:.1} ms; {hung} CRM requests hanging",
        s.ok_total,
        s.failed(),
        s.max_ms(),
        s.ms(0.5)
    );
    notes.push(format!(
        "Hung CRM: crm.kind = retailcrm against the fake retailCRM with `Fault::Hang` on every path, lookup.deadline_ms = {DEADLINE_MS}, CRM limiter 100,000 rps (so every lookup reaches the CRM); \
         {total} lookups of distinct unknown numbers, open loop at {rate} req/s over {conns} connections; {hung} CRM requests were hanging at the end. \
         Measured: from the actual send (service time); from the intended send time the max was {:.1} ms.",
        s.max_ms()
    ));
    Ok(vec![row(
        "Lookup with the CRM hung: slowest answer; requests lost",
        &format!("≤ deadline + 5 = {limit:.0} ms; 0 lost"),
        format!(
            "max {service_max:.1} ms (p50 {:.1} ms); {} of {total} answered 200, {} lost/failed",
            s.service.value_at_quantile(0.5) as f64 / 1000.0,
            s.ok_total,
            s.failed()
        ),
        Verdict::of(service_max <= limit && s.ok_total == total),
    )])
}

// === Webhook ingest ===

fn ingest(opts: &Options, gen_rt: &Runtime, notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    let secs = if opts.quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(4)
    };
    let mut rows = vec![ingest_on(opts, gen_rt, secs, None)?];
    match std::env::var("LOADTEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => rows.push(ingest_on(opts, gen_rt, secs, Some(&url))?),
        _ => rows.push(row(
            "Webhook ingest, durable ack, Redis",
            "(no target in SPEC §10)",
            "not measured: LOADTEST_REDIS_URL is unset (load-tests/run starts a redis-server and sets it)".into(),
            Verdict::NotMeasured,
        )),
    }
    notes.push(format!(
        "Ingest: `POST /ringostat/webhook?token=…` with a JSON after-call payload (~450 bytes, a distinct call id each), {CONNECTIONS} connections closed loop, \
         {WARMUP:?} warm-up + {secs:?} measured, {} runs on fresh store files (Redis: fresh key prefixes), medians; worker disabled; afterwards the queue depth must equal the number of 200s (acked = queued). \
         Redis runs with `appendonly yes`, `appendfsync everysec` (an acknowledged event can be lost only if the machine itself fails within that second; see src/store/redis.rs).",
        opts.reps
    ));
    Ok(rows)
}

/// One ingest measurement on the embedded store (`redis = None`) or on Redis.
fn ingest_on(
    opts: &Options,
    gen_rt: &Runtime,
    secs: Duration,
    redis: Option<&str>,
) -> anyhow::Result<Row> {
    let backend = if redis.is_some() { "Redis" } else { "embedded" };
    let mut rates = vec![];
    let mut p99s = vec![];
    let mut lost_total = 0i64;
    let mut failed = 0;
    for rep in 0..opts.reps {
        let dir = tempfile::tempdir()?;
        let mut settings = servers::settings(dir.path());
        if let Some(url) = redis {
            settings.store.kind = StoreKind::Redis;
            settings.store.redis_url = url.to_owned();
            settings.store.key_prefix = format!("loadtest-{}-{rep}:", std::process::id());
        }
        let callgate = Callgate::start(settings)?;
        let s = gen_rt.block_on(generator::closed_loop(
            callgate.addr,
            CONNECTIONS,
            WARMUP,
            secs,
            None,
            LOOKUP_TIMEOUT,
            webhook_factory("ingest"),
        ));
        let depth = callgate.block_on(callgate.state.store.queue_depth())?;
        let lost = s.ok_total as i64 - depth as i64;
        note!(
            "ingest ({backend}) rep {rep}: {:.0} events/s, ack p50 {:.2} p99 {:.2} max {:.2} ms; {} acked, queue depth {depth}, failed {}",
            s.rps(),
            s.ms(0.5),
            s.ms(0.99),
            s.max_ms(),
            s.ok_total,
            s.failed()
        );
        rates.push(s.rps());
        p99s.push(s.ms(0.99));
        lost_total += lost.abs();
        failed += s.failed();
        callgate.stop();
    }
    let rate = median(rates);
    let p99 = median(p99s);
    Ok(match redis {
        None => row(
            "Webhook ingest, durable ack, embedded store",
            "≥ 5,000 events/s; p99 ack ≤ 10 ms; 0 lost",
            format!(
                "{} events/s; p99 ack {p99:.2} ms; acked−queued mismatch {lost_total}, failed {failed}",
                fmt_rate(rate)
            ),
            Verdict::of(rate >= 5000.0 && p99 <= 10.0 && lost_total == 0 && failed == 0),
        ),
        Some(_) => row(
            "Webhook ingest, durable ack, Redis",
            "(no target in SPEC §10); 0 lost",
            format!(
                "{} events/s; p99 ack {p99:.2} ms; acked−queued mismatch {lost_total}, failed {failed}",
                fmt_rate(rate)
            ),
            if lost_total == 0 && failed == 0 {
                Verdict::Reported
            } else {
                Verdict::Missed
            },
        ),
    })
}

// === Backlog drain ===

fn backlog(opts: &Options, gen_rt: &Runtime, notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    let events: u64 = if opts.quick { 1_000 } else { 10_000 };
    const GENERAL_RPS: u32 = 1_000;
    const TELEPHONY_RPS: u32 = 1_000;
    const CONCURRENCY: usize = 32;
    let crm_rt = servers::runtime("fake-crm");
    let crm = fake_crm(
        &crm_rt,
        FakeCrmConfig {
            rate_limit_rps: Some(GENERAL_RPS as usize),
            telephony_rate_limit_rps: Some(TELEPHONY_RPS as usize),
            ..FakeCrmConfig::default()
        },
    );
    let dir = tempfile::tempdir()?;
    let mut settings = servers::settings(dir.path());
    settings.crm.senior_manager_id = 1;
    settings.sites.push(servers::shop_site());
    settings.crm.kind = CrmKind::Retailcrm;
    settings.crm.base_url = crm.base_url();
    settings.crm.api_key = crm.api_key().into();
    settings.crm.default_site = "shop1".into();
    settings.crm.rate_limit_rps = GENERAL_RPS;
    settings.crm.telephony_rate_limit_rps = TELEPHONY_RPS;
    let callgate = Callgate::start(settings)?;
    let s = gen_rt.block_on(generator::closed_loop(
        callgate.addr,
        CONNECTIONS,
        Duration::ZERO,
        Duration::from_secs(120),
        Some(events),
        LOOKUP_TIMEOUT,
        webhook_factory("backlog"),
    ));
    let queued = callgate.block_on(callgate.state.store.queue_depth())?;
    note!(
        "backlog: {} webhooks acked, {queued} tasks queued",
        s.ok_total
    );
    anyhow::ensure!(
        s.ok_total == events && queued == events,
        "backlog: {} of {events} webhooks acked, {queued} queued",
        s.ok_total
    );
    let started = Instant::now();
    callgate.start_worker(CONCURRENCY);
    let bound = Duration::from_secs(240);
    let mut remaining = queued;
    while remaining > 0 && started.elapsed() < bound {
        std::thread::sleep(Duration::from_millis(100)); // polling interval, bounded by `bound`
        remaining = callgate.block_on(callgate.state.store.queue_depth())?;
    }
    let drained_in = started.elapsed();
    let dead = callgate
        .block_on(callgate.state.store.list_dead_letters(1_000_000))?
        .len();
    callgate.stop();
    let stats = crm.rate_stats();
    let requests = crm.requests();
    let mut by_path: BTreeMap<String, usize> = BTreeMap::new();
    for r in &requests {
        *by_path
            .entry(format!("{} {}", r.method, r.path))
            .or_default() += 1;
    }
    let general = requests
        .iter()
        .filter(|r| !r.path.starts_with("/api/v5/telephony/"))
        .count();
    let telephony = requests.len() - general;
    let calls = crm.calls();
    let ids: HashSet<String> = calls
        .iter()
        .filter_map(|c| c["externalId"].as_str().map(str::to_owned))
        .collect();
    let tasks = crm.tasks();
    let task_texts: HashSet<String> = tasks
        .iter()
        .filter_map(|t| t["text"].as_str().map(str::to_owned))
        .collect();
    let customers = crm.customers().len();
    let uploads = by_path
        .get("POST /api/v5/telephony/calls/upload")
        .copied()
        .unwrap_or(0);
    drop(crm);
    crm_rt.shutdown_timeout(Duration::from_secs(5));
    let lost = events.saturating_sub(ids.len() as u64);
    let duplicated = (calls.len() - ids.len()) + (tasks.len() - task_texts.len());
    let general_rate = general as f64 / drained_in.as_secs_f64();
    let within = stats.max_general_per_sec <= GENERAL_RPS as usize
        && stats.max_telephony_per_sec <= TELEPHONY_RPS as usize;
    note!(
        "backlog: drained {queued} in {drained_in:.1?} (remaining {remaining}, dead letters {dead}); CRM requests {by_path:?}; \
         max/s general {} telephony {}; 503s {}+{}; calls {} ({} distinct), tasks {} ({} distinct), customers {customers}",
        stats.max_general_per_sec,
        stats.max_telephony_per_sec,
        stats.rejected_general,
        stats.rejected_telephony,
        calls.len(),
        ids.len(),
        tasks.len(),
        task_texts.len()
    );
    notes.push(format!(
        "Backlog: {events} missed calls (NO ANSWER, each from its own new number to the tracking number of `[[sites]] shop1`, `crm.senior_manager_id = 1`) enqueued through the webhook with the worker off, \
         then the worker started in the same callgate (worker.concurrency = {CONCURRENCY}) against the fake retailCRM; limits {GENERAL_RPS} general / {TELEPHONY_RPS} telephony rps \
         on both sides. CRM requests seen: {}. Expected per event: one customer search, one call-back task; call records in uploads of up to 50 ({:.1} calls per upload here, \
         worker.concurrency {CONCURRENCY} notwithstanding). Dead letters {dead}; customers created {customers} (a missed call creates none).",
        by_path
            .iter()
            .map(|(k, v)| format!("`{k}` {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        calls.len() as f64 / uploads.max(1) as f64,
    ));
    Ok(vec![
        row(
            "Backlog drain: CRM request rate (fake's busiest 1 s window)",
            &format!("never above {GENERAL_RPS} general / {TELEPHONY_RPS} telephony per s"),
            format!(
                "max {} general / {} telephony per s; 503s {}; drained {events} in {:.1} s ({} general req/s average, {} telephony)",
                stats.max_general_per_sec,
                stats.max_telephony_per_sec,
                stats.rejected_general + stats.rejected_telephony,
                drained_in.as_secs_f64(),
                fmt_rate(general_rate),
                fmt_rate(telephony as f64 / drained_in.as_secs_f64()),
            ),
            Verdict::of(within && remaining == 0),
        ),
        row(
            "Backlog drain: lost / duplicated CRM records",
            "0 lost, 0 duplicated",
            format!(
                "{lost} lost, {duplicated} duplicated ({} calls with {} distinct externalIds, {} tasks for {} distinct callers)",
                calls.len(),
                ids.len(),
                tasks.len(),
                task_texts.len()
            ),
            Verdict::of(lost == 0 && duplicated == 0 && remaining == 0 && dead == 0),
        ),
    ])
}

// === Normalization and RSS ===

fn normalization(notes: &mut Vec<String>) -> anyhow::Result<Row> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/phone-corpus.tsv"
    );
    let corpus = std::fs::read_to_string(path)?;
    let rows: Vec<(&str, RegionCode)> = corpus
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let input = fields.next()?;
            let region = RegionCode::parse(fields.next()?).ok()?;
            Some((input, region))
        })
        .collect();
    let normalizer = PhoneNormalizer::new("UA")?;
    for (input, region) in &rows {
        let _ = std::hint::black_box(normalizer.parse_in(input, *region));
    }
    // Three timed runs of about a second each on this one thread; the median counts.
    let mut rates = vec![];
    for _ in 0..3 {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_secs(1) {
            for (input, region) in &rows {
                let _ =
                    std::hint::black_box(normalizer.parse_in(std::hint::black_box(input), *region));
            }
            n += rows.len() as u64;
        }
        rates.push(n as f64 / start.elapsed().as_secs_f64());
    }
    let rate = median(rates);
    notes.push(format!(
        "Normalization: `PhoneNormalizer::parse_in` over tests/data/phone-corpus.tsv ({} inputs, mixed formats and regions) on one thread, 3 × ~1 s, median.",
        rows.len()
    ));
    Ok(row(
        "Normalization, one core",
        "≥ 300,000 numbers/s",
        format!("{} numbers/s", fmt_rate(rate)),
        Verdict::of(rate >= 300_000.0),
    ))
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// `owners-rss load|open DIR COUNT`: one probe in this (fresh) process; prints `RSS_MB=…`.
pub fn owners_rss(mode: &str, dir: &Path, count: u64) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("owners.redb");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match mode {
        "load" => {
            let _ = std::fs::remove_file(&path);
            let store = EmbeddedStore::open(&path)?;
            let ttl = Duration::from_secs(7 * 86_400);
            rt.block_on(async {
                for start in (0..count).step_by(50_000) {
                    let end = (start + 50_000).min(count);
                    store
                        .put_owners((start..end).map(|i| (owner_number(i), owner_entry(i), ttl)))
                        .await?;
                }
                anyhow::Ok(())
            })?;
            println!("OWNERS={} RSS_MB={:.1}", store.owner_mirror_len(), rss_mb());
        }
        "open" => {
            let store = EmbeddedStore::open(&path)?;
            println!("OWNERS={} RSS_MB={:.1}", store.owner_mirror_len(), rss_mb());
        }
        other => anyhow::bail!("unknown owners-rss mode {other}"),
    }
    Ok(())
}

fn owners_rss_rows(opts: &Options, notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    let count: u64 = if opts.quick { 100_000 } else { 1_000_000 };
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let probe = |mode: &str| -> anyhow::Result<(u64, f64)> {
        let out = std::process::Command::new(&exe)
            .args(["owners-rss", mode])
            .arg(dir.path())
            .arg(count.to_string())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(
            out.status.success(),
            "owners-rss {mode} failed: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let field = |k: &str| {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .map(str::to_owned)
                .unwrap_or_default()
        };
        Ok((field("OWNERS=").parse()?, field("RSS_MB=").parse()?))
    };
    let (loaded, rss_load) = probe("load")?;
    let (opened, rss_open) = probe("open")?;
    note!("owners RSS: load {loaded} → {rss_load:.1} MB; reopen {opened} → {rss_open:.1} MB");
    notes.push(format!(
        "Owner-index RSS: {count} owners written with `put_owners` in 50,000-entry transactions in a fresh process (RSS after writing), \
         then the file reopened in another fresh process (RSS at steady state after a restart); VmRSS from /proc/self/status."
    ));
    let ok = loaded == count && opened == count;
    Ok(vec![row(
        &format!(
            "RSS with {} numbers in the owner index",
            fmt_rate(count as f64)
        ),
        "≤ 150 MB",
        format!(
            "{rss_open:.1} MB after reopening; {rss_load:.1} MB in the process that wrote them"
        ),
        Verdict::of(ok && rss_open.max(rss_load) <= 150.0),
    )])
}

// === Lookup: the cost of the read deadlines, and 2,000 slow clients ===

/// Two callgates on identical warm indexes (as the lookup scenario), `b` configured
/// differently from `a`: each rep runs {CONNECTIONS} connections closed loop (and, with
/// `open_loop`, {OPEN_RATE} req/s open loop) on both, alternating; medians. `label` names the
/// reps in the progress notes.
struct AbLookup {
    /// Medians: closed-loop throughput and open-loop p99 (ms; NaN without the open loop),
    /// of `a` and `b`.
    a_rps: f64,
    b_rps: f64,
    a_p99: f64,
    b_p99: f64,
    failed: u64,
}

impl AbLookup {
    /// The open-loop p99s, `a` against `b`, as a reported row.
    fn p99_row(&self, figure: &str) -> Row {
        row(
            figure,
            "report",
            format!(
                "{:.2} vs {:.2} ms ({:.2}×)",
                self.a_p99,
                self.b_p99,
                self.a_p99 / self.b_p99
            ),
            Verdict::Reported,
        )
    }
}

fn ab_lookup(
    opts: &Options,
    gen_rt: &Runtime,
    label: &str,
    (a, b): (&Callgate, &Callgate),
    lookups: &RequestFactory,
    open_loop: bool,
) -> anyhow::Result<AbLookup> {
    crate::mirror::ensure_routes(gen_rt, a.addr)?;
    crate::mirror::ensure_routes(gen_rt, b.addr)?;
    let closed = |addr: SocketAddr| closed_lookup_run(gen_rt, opts, addr, lookups);
    let open = |addr: SocketAddr| open_lookup_run(gen_rt, opts, addr, lookups);
    let (mut a_rps, mut b_rps, mut a_p99, mut b_p99, mut failed) =
        (vec![], vec![], vec![], vec![], 0);
    for rep in 0..opts.reps {
        let (ca, cb) = alternate(rep, || closed(a.addr), || closed(b.addr));
        note!(
            "{label} rep {rep}: a {:.0}/s p99 {:.2} ms; b {:.0}/s p99 {:.2} ms (closed loop)",
            ca.rps(),
            ca.ms(0.99),
            cb.rps(),
            cb.ms(0.99)
        );
        failed += ca.failed() + cb.failed();
        a_rps.push(ca.rps());
        b_rps.push(cb.rps());
        if open_loop {
            let (oa, ob) = alternate(rep, || open(a.addr), || open(b.addr));
            note!(
                "{label} rep {rep}: a p99 {:.2} ms; b p99 {:.2} ms (open loop)",
                oa.ms(0.99),
                ob.ms(0.99)
            );
            failed += oa.failed() + ob.failed();
            a_p99.push(oa.ms(0.99));
            b_p99.push(ob.ms(0.99));
        }
    }
    Ok(AbLookup {
        a_rps: median(a_rps),
        b_rps: median(b_rps),
        a_p99: median(a_p99),
        b_p99: median(b_p99),
        failed,
    })
}

/// The read deadlines' cost on the lookup (SPEC §9 wants them on by default; §10's lookup
/// figures must hold with them): two callgates on identical warm indexes, one with
/// `header_read_timeout_ms = body_read_timeout_ms = 0`, one with the defaults, alternating,
/// medians of closed-loop throughput and open-loop p99.
fn lookup_deadlines_cost(
    opts: &Options,
    gen_rt: &Runtime,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Row>> {
    let off_dir = tempfile::tempdir()?;
    let on_dir = tempfile::tempdir()?;
    let off = warm_callgate_configured(off_dir.path(), |s| {
        s.server.header_read_timeout_ms = 0;
        s.server.body_read_timeout_ms = 0;
    })?;
    let on = warm_callgate(on_dir.path())?;
    let deadlines = (
        on.state
            .config
            .server
            .header_read_timeout
            .map_or(0, |d| d.as_millis()),
        on.state
            .config
            .server
            .body_read_timeout
            .map_or(0, |d| d.as_millis()),
    );
    let lookups = route_factory(WARM_OWNERS, "38050");
    let m = ab_lookup(
        opts,
        gen_rt,
        "deadlines (a on, b off)",
        (&on, &off),
        &lookups,
        true,
    )?;
    on.stop();
    off.stop();
    let ratio = m.a_rps / m.b_rps;
    notes.push(format!(
        "Deadlines cost: two callgates on identical warm indexes (as the lookup scenario), one with the read deadlines off (`server.header_read_timeout_ms = 0`, `body_read_timeout_ms = 0`), one with the defaults ({} / {} ms: one coarse deadline per connection and a watchdog, src/http/deadline.rs); \
         {CONNECTIONS} connections closed loop and {OPEN_RATE} req/s open loop, {} alternating runs each, medians.",
        deadlines.0, deadlines.1, opts.reps
    ));
    Ok(vec![
        row(
            "Lookup with the read deadlines on (throughput ratio to off)",
            "cost ≤ 5% (≥ 0.95×)",
            format!(
                "{ratio:.2}× ({} vs {} req/s); failed {}",
                fmt_rate(m.a_rps),
                fmt_rate(m.b_rps),
                m.failed
            ),
            Verdict::of(ratio >= 0.95 && m.failed == 0),
        ),
        m.p99_row("Lookup p99 at 10,000 req/s open loop, deadlines on vs off"),
    ])
}

/// What recording the lookup's decision in the calls' trails (issue 16) costs the lookup: the
/// defaults against `lookup.trail_max_per_sec = 0`.
fn lookup_trail_cost(
    opts: &Options,
    gen_rt: &Runtime,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Row>> {
    let off_dir = tempfile::tempdir()?;
    let on_dir = tempfile::tempdir()?;
    let off = warm_callgate_configured(off_dir.path(), |s| s.lookup.trail_max_per_sec = 0)?;
    let on = warm_callgate(on_dir.path())?;
    let budget = on.state.config.lookup.trail_max_per_sec;
    let lookups = route_factory(WARM_OWNERS, "38050");
    let m = ab_lookup(
        opts,
        gen_rt,
        "trail (a on, b off)",
        (&on, &off),
        &lookups,
        true,
    )?;
    let recorded = on.state.metrics.lookup_trail_recorded.get();
    on.stop();
    off.stop();
    let ratio = m.a_rps / m.b_rps;
    notes.push(format!(
        "Trail cost: two callgates on identical warm indexes (as the lookup scenario), one recording lookup decisions with the defaults (`lookup.trail_max_per_sec = {budget}`; no call id in the requests, so each decision is kept under its caller for the call to join), one with `trail_max_per_sec = 0`; \
         {CONNECTIONS} connections closed loop and {OPEN_RATE} req/s open loop, {} alternating runs each, medians. The recording callgate stored {recorded} decisions over the runs.",
        opts.reps
    ));
    Ok(vec![
        row(
            "Lookup with its decisions recorded in the call trail (throughput ratio to not recording)",
            "cost ≤ 5% (≥ 0.95×)",
            format!(
                "{ratio:.2}× ({} vs {} req/s); {recorded} decisions stored; failed {}",
                fmt_rate(m.a_rps),
                fmt_rate(m.b_rps),
                m.failed
            ),
            Verdict::of(ratio >= 0.95 && m.failed == 0 && recorded > 0),
        ),
        m.p99_row("Lookup p99 at 10,000 req/s open loop, trail recorded vs not"),
    ])
}

/// Slow and idle clients held open at each server.
const SLOW_CLIENTS: usize = 2_000;
/// How often a slow client sends one more header line.
const TRICKLE_EVERY: Duration = Duration::from_secs(1);
/// How long each server's CPU is sampled while it holds its slow clients.
const CPU_WINDOW: Duration = Duration::from_secs(5);

/// The server a set of slow clients trickles at: client `i` of `n` first connects at
/// `since + spread × i / n`.
#[derive(Debug, Clone, Copy)]
struct SlowTarget {
    addr: SocketAddr,
    since: tokio::time::Instant,
    spread: Duration,
}

impl SlowTarget {
    fn now(addr: SocketAddr, spread: Duration) -> SlowTarget {
        SlowTarget {
            addr,
            since: tokio::time::Instant::now(),
            spread,
        }
    }

    fn slot(&self, client: usize) -> tokio::time::Instant {
        self.since + self.spread.mul_f64(client as f64 / SLOW_CLIENTS as f64)
    }
}

/// What one set of slow clients saw.
#[derive(Default)]
struct SlowCounters {
    /// Connections open now.
    open: std::sync::atomic::AtomicUsize,
    /// Connections the server ended (EOF, reset or an answer) since the last [`Self::take_cuts`].
    cut_off: std::sync::atomic::AtomicUsize,
    /// The shortest and the longest life of a connection the server ended, ms.
    cut_min_ms: std::sync::atomic::AtomicU64,
    cut_max_ms: std::sync::atomic::AtomicU64,
}

impl SlowCounters {
    fn cut(&self, age: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let ms = age.as_millis() as u64;
        self.cut_off.fetch_add(1, Relaxed);
        self.cut_min_ms.fetch_min(ms, Relaxed);
        self.cut_max_ms.fetch_max(ms, Relaxed);
    }

    /// (connections ended, shortest and longest life in ms) since the last call.
    fn take_cuts(&self) -> (usize, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.cut_off.swap(0, Relaxed),
            self.cut_min_ms.swap(u64::MAX, Relaxed),
            self.cut_max_ms.swap(0, Relaxed),
        )
    }
}

/// One slow client (number `client` of its set): first connects at its slot, sends the start
/// of a request and then a header line every [`TRICKLE_EVERY`], never finishing; reconnects
/// as soon as the server ends the connection (it reads, so it notices at once); until `stop`.
async fn slow_client(
    client: usize,
    target: SlowTarget,
    stop: tokio_util::sync::CancellationToken,
    counters: Arc<SlowCounters>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::{Instant, sleep, sleep_until};
    tokio::select! {
        () = sleep_until(target.slot(client)) => {}
        () = stop.cancelled() => return,
    }
    while !stop.is_cancelled() {
        let Ok(Ok(mut stream)) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(target.addr),
        )
        .await
        else {
            tokio::select! {
                () = sleep(TRICKLE_EVERY) => continue,
                () = stop.cancelled() => break,
            }
        };
        let connected = Instant::now();
        counters.open.fetch_add(1, Relaxed);
        let (mut reader, mut writer) = stream.split();
        let mut line: &[u8] = b"GET /ringostat/route?caller=380500000001 HTTP/1.1\r\nHost: x\r\n";
        let mut buf = [0_u8; 256];
        loop {
            if writer.write_all(line).await.is_err() {
                counters.cut(connected.elapsed());
                break;
            }
            line = b"X-Trickle: 1\r\n";
            tokio::select! {
                () = sleep(TRICKLE_EVERY) => {}
                // The request never ends, so anything read (EOF, a reset, an answer) is the
                // server ending the connection.
                _ = reader.read(&mut buf) => {
                    counters.cut(connected.elapsed());
                    break;
                }
                () = stop.cancelled() => break,
            }
        }
        counters.open.fetch_sub(1, Relaxed);
    }
}

/// CPU time (user + system) used so far by this process's threads named `name`, from
/// /proc/self/task/*/stat (clock ticks of 10 ms: Linux's USER_HZ is 100).
fn threads_cpu(name: &str) -> Duration {
    let mut ticks = 0_u64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`: the comm may hold spaces, the fields follow its `)`.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if stat.get(open + 1..close) != Some(name) {
            continue;
        }
        let fields: Vec<&str> = stat
            .get(close + 1..)
            .unwrap_or("")
            .split_whitespace()
            .collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the comm.
        for i in [11, 12] {
            ticks += fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_millis(ticks * 10)
}

/// CPU ms per second used by the threads named in `names` (each) over `window`.
fn cpu_per_second(names: &[&str], window: Duration) -> Vec<f64> {
    let before: Vec<Duration> = names.iter().map(|n| threads_cpu(n)).collect();
    let started = Instant::now();
    std::thread::sleep(window);
    let secs = started.elapsed().as_secs_f64();
    names
        .iter()
        .zip(before)
        .map(|(n, b)| (threads_cpu(n).saturating_sub(b)).as_secs_f64() * 1000.0 / secs)
        .collect()
}

/// Lookups while 2,000 clients trickle headers at each server (SPEC §9, issue 14 item 4).
/// Callgate and hello each get their own 2,000 slow clients for the whole measured part, so
/// both servers' slow-client work and the generator's driving of all 4,000 go on during
/// every run, whichever server gets the lookups; the runs alternate back to back as the other
/// lookup scenarios do. The judged ratio is callgate's open-loop p99 against hello's in the
/// same conditions (SPEC §10: same rate, same run). Before the slow clients start, both are
/// measured without them (reported). The slow clients first connect spread over callgate's
/// header deadline, so callgate's cut-offs and reconnections run at a steady rate (clients /
/// deadline per second) by the time it is measured; a client reconnects as soon as it is cut
/// off. Hello has no read deadline: its slow connections stay open.
fn lookup_under_slow_clients(
    opts: &Options,
    gen_rt: &Runtime,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Row>> {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir()?;
    let callgate = warm_callgate(dir.path())?;
    let header_deadline = callgate
        .state
        .config
        .server
        .header_read_timeout
        .unwrap_or(Duration::ZERO);
    let hello = Hello::start();
    let lookups = route_factory(WARM_OWNERS, "38050");
    let hello_req: RequestFactory = Arc::new(|_| generator::get("/"));
    let run_callgate = || open_lookup_run(gen_rt, opts, callgate.addr, &lookups);
    let run_hello = || open_lookup_run(gen_rt, opts, hello.addr, &hello_req);

    // A first run of each, not measured: callgate's first lookups after its start are slower.
    run_callgate();
    run_hello();
    // Without slow clients.
    let (mut c_alone, mut h_alone, mut failed) = (vec![], vec![], 0);
    for rep in 0..opts.reps {
        let (c, h) = alternate(rep, run_callgate, run_hello);
        note!(
            "no slow clients rep {rep}: callgate p99 {:.2} ms; hello p99 {:.2} ms",
            c.ms(0.99),
            h.ms(0.99)
        );
        failed += c.failed() + h.failed();
        c_alone.push(c.ms(0.99));
        h_alone.push(h.ms(0.99));
    }
    let threads = ["callgate", "hello", "loadgen"];
    let idle = cpu_per_second(&threads, CPU_WINDOW);

    // The slow clients: a set of their own at each server, until the end.
    let counters = [
        Arc::new(SlowCounters::default()),
        Arc::new(SlowCounters::default()),
    ];
    let stop = tokio_util::sync::CancellationToken::new();
    let mut clients = Vec::with_capacity(2 * SLOW_CLIENTS);
    for (addr, counters) in [(callgate.addr, &counters[0]), (hello.addr, &counters[1])] {
        let target = SlowTarget::now(addr, header_deadline);
        clients.extend(
            (0..SLOW_CLIENTS)
                .map(|i| gen_rt.spawn(slow_client(i, target, stop.clone(), counters.clone()))),
        );
    }
    std::thread::sleep(header_deadline + Duration::from_millis(500));
    let opened = counters.each_ref().map(|c| c.open.load(Relaxed));
    note!(
        "slow clients: {} open on callgate, {} on hello",
        opened[0],
        opened[1]
    );
    counters[0].take_cuts();
    let with_slow = cpu_per_second(&threads, CPU_WINDOW);
    let idle_cuts = counters[0].take_cuts();
    note!(
        "CPU ms/s (callgate, hello, generator): idle {idle:.0?}; with their slow clients, no lookups {with_slow:.0?} (callgate cut off {} in {CPU_WINDOW:?}, lives {}–{} ms)",
        idle_cuts.0,
        idle_cuts.1,
        idle_cuts.2
    );

    let (mut c_p99, mut c_p50, mut h_p99, mut held) = (vec![], vec![], vec![], vec![]);
    let measured = Instant::now();
    for rep in 0..opts.reps {
        let (c, h) = alternate(rep, run_callgate, run_hello);
        let open = counters.each_ref().map(|c| c.open.load(Relaxed));
        note!(
            "slow clients rep {rep}: callgate p50 {:.2} p99 {:.2} max {:.2} ms fail {}; hello p99 {:.2} max {:.2} ms fail {} (slow clients open {open:?})",
            c.ms(0.5),
            c.ms(0.99),
            c.max_ms(),
            c.failed(),
            h.ms(0.99),
            h.max_ms(),
            h.failed()
        );
        failed += c.failed() + h.failed();
        c_p99.push(c.ms(0.99));
        c_p50.push(c.ms(0.5));
        h_p99.push(h.ms(0.99));
        held.push(open[0].min(open[1]) as f64);
    }
    let (cuts, life_min, life_max) = counters[0].take_cuts();
    let cuts = cuts as f64 / measured.elapsed().as_secs_f64();
    stop.cancel();
    gen_rt.block_on(async {
        for c in clients {
            let _ = tokio::time::timeout(Duration::from_secs(5), c).await;
        }
    });
    callgate.stop();
    drop(hello);
    let (cp99, cp50, hp99, held) = (median(c_p99), median(c_p50), median(h_p99), median(held));
    let (c_alone, h_alone) = (median(c_alone), median(h_alone));
    let ratio = cp99 / hp99;
    let header_ms = header_deadline.as_millis();
    notes.push(format!(
        "Slow clients: {SLOW_CLIENTS} connections to 127.0.0.1 at each server, each sending `GET /ringostat/route?… HTTP/1.1` and one more header line every {TRICKLE_EVERY:?}, never finishing, reading so that they reconnect as soon as the server ends the connection (callgate's defaults: header deadline {header_ms} ms, max_connections 10,000); \
         meanwhile {OPEN_RATE} req/s of lookups open loop over {CONNECTIONS} connections to one server at a time. Each server keeps its own slow clients through every run, so both servers' slow-client work and the generator's driving of all of them go on whichever server is measured. The slow clients first connect spread over callgate's header deadline (client i at i/{SLOW_CLIENTS} of it), so callgate's cut-offs and reconnections run at a steady rate: {cuts:.0}/s while measured. Hello has no read deadline: it keeps their connections open. \
         First {} runs of each without slow clients, then {} with them, alternating back to back, medians. CPU of each runtime's threads (ms per second, /proc), no lookups, idle / with the slow clients: callgate {:.0}/{:.0}, hello {:.0}/{:.0}, generator {:.0}/{:.0}. Connection lives at callgate's cut-off as the clients saw them (from their connect to the end; a client task the generator polls late sees its connection later than callgate accepted it) {life_min}–{life_max} ms.",
        opts.reps,
        opts.reps,
        idle[0], with_slow[0],
        idle[1], with_slow[1],
        idle[2], with_slow[2],
    ));
    Ok(vec![
        row(
            "Lookup p99 at 10,000 req/s, 2,000 slow clients trickling headers at each server (ratio to hello's p99 in the same conditions)",
            "≤ 1.5× hello's p99",
            format!(
                "{ratio:.2}× (callgate p50 {cp50:.2} / p99 {cp99:.2} ms; hello p99 {hp99:.2} ms); slow clients open (median at the runs' ends, the smaller set) {held:.0} of {SLOW_CLIENTS} ({} and {} at the start); failed {failed}",
                opened[0], opened[1]
            ),
            Verdict::of(
                ratio <= 1.5
                    && failed == 0
                    && opened == [SLOW_CLIENTS; 2]
                    && held >= 0.95 * SLOW_CLIENTS as f64,
            ),
        ),
        row(
            "Lookup p99 at 10,000 req/s with 2,000 slow clients, ratio to hello's p99 without them",
            "report (issue 14: ≤ 2 ms absolute)",
            format!(
                "{:.2}× ({cp99:.2} vs {h_alone:.2} ms); without slow clients callgate p99 {c_alone:.2} ms",
                cp99 / h_alone
            ),
            Verdict::Reported,
        ),
        row(
            "CPU the server spends on 2,000 slow clients (no lookups)",
            "report",
            format!(
                "callgate {:.0} ms/s, hello {:.0} ms/s (idle {:.0} / {:.0}); the generator driving both sets {:.0} ms/s",
                with_slow[0] - idle[0],
                with_slow[1] - idle[1],
                idle[0],
                idle[1],
                with_slow[2] - idle[2]
            ),
            Verdict::Reported,
        ),
    ])
}
