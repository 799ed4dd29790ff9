//! The CRM budget (SPEC §10): CRM requests per call by scenario, general and telephony,
//! counted at the fake retailCRM, and the calls/s one API key sustains for the mix of
//! 60% known customers (open order), 30% new callers answered, 10% missed, at the real
//! limits (10 general / 40 telephony requests/s), against the same mix one call at a time.
//!
//! Every call is sent as Ringostat sends it when all three webhooks are configured: a start
//! event, an answer event (not for a missed call) and the after-call event, in that order.

use std::time::{Duration, Instant};

use callgate::{
    config::{CrmKind, Settings},
    testing::fake_retailcrm::{FakeCrmConfig, FakeRetailCrm, RecordedRequest},
};
use serde_json::{Value, json};
use tokio::runtime::Runtime;

use crate::{
    generator,
    scenarios::{Row, Verdict, fake_crm, row},
    servers::{self, Callgate, WEBHOOK_TOKEN},
};

/// A call's situation (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// New number, answered.
    S1,
    /// Known customer with an open order, answered by the owner.
    S2,
    /// Known customer, all orders closed, answered by the owner.
    S3,
    /// Missed call from a new number.
    S5,
    /// Known customer with an open order, answered by another manager.
    S7,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::S1 => "S1 new caller, answered",
            Kind::S2 => "S2 known customer, open order, answered by the owner",
            Kind::S3 => "S3 known customer, orders closed, answered by the owner",
            Kind::S5 => "S5 new caller, missed",
            Kind::S7 => "S7 known customer answered by another manager",
        }
    }
    fn answered(self) -> bool {
        self != Kind::S5
    }
}

/// The owner of known customers (CRM user 2) and the other manager (CRM user 3).
const OWNER: u64 = 2;
const OTHER: u64 = 3;

fn caller(tag: &str, n: u64) -> String {
    let base = match tag {
        "S1" => 1,
        "S2" => 2,
        "S3" => 3,
        "S5" => 5,
        _ => 7,
    };
    format!("3806{base}{n:07}")
}

/// The three webhooks of one call, in the order Ringostat sends them.
fn webhooks(kind: Kind, id: &str, number: &str) -> Vec<(String, Vec<u8>)> {
    let staff = match kind {
        Kind::S7 => 1000 + OTHER as i64,
        Kind::S5 => -1,
        _ => 1000 + OWNER as i64,
    };
    let base = json!({
        "uniqueid": id,
        "calldate": "2024-07-31 14:59:35",
        "caller": number,
        "dst": "380441112233",
        "call_type": "in",
        "utm_source": "google",
        "utm_medium": "cpc",
        "utm_campaign": "summer",
        "client_id": "1169999034.1555555510",
    });
    let with = |extra: Value| {
        let mut v = base.clone();
        if let (Some(v), Value::Object(extra)) = (v.as_object_mut(), extra) {
            v.extend(extra);
        }
        serde_json::to_vec(&v).expect("JSON")
    };
    let path = |moment: &str| format!("/ringostat/webhook?token={WEBHOOK_TOKEN}&event={moment}");
    let mut out = vec![(path("start"), with(json!({})))];
    if kind.answered() {
        out.push((path("answer"), with(json!({"employee_number": staff}))));
    }
    let disposition = if kind.answered() {
        "ANSWERED"
    } else {
        "NO ANSWER"
    };
    out.push((
        path("end"),
        with(json!({
            "disposition": disposition,
            "billsec": if kind.answered() { 61 } else { 0 },
            "waittime": "12",
            "recording": if kind.answered() { format!("https://app.ringostat.com/recordings/{id}.ogg") } else { String::new() },
            "has_recording": if kind.answered() { "1" } else { "0" },
            "employee_number": staff,
        })),
    ));
    out
}

/// Seeds the fake CRM for a call of `kind` from `number`.
fn seed(crm: &FakeRetailCrm, kind: Kind, number: &str) {
    match kind {
        Kind::S2 | Kind::S7 => {
            let c = crm.add_customer(&[number], Some(OWNER));
            crm.add_order(c, "new", Some(OWNER));
        }
        Kind::S3 => {
            let c = crm.add_customer(&[number], Some(OWNER));
            crm.add_order(c, "complete", Some(OWNER));
        }
        Kind::S1 | Kind::S5 => {}
    }
}

/// What one run of a list of calls cost.
struct Cost {
    calls: usize,
    general: usize,
    telephony: usize,
    uploads: usize,
    popups: usize,
    elapsed: Duration,
    recorded_calls: usize,
    dead: usize,
    /// Requests of the mirrors' polls (`customers/history`, `orders/history`, `users`) while
    /// the calls ran: a cost per second, not per call, so left out of `general`.
    sync_polls: usize,
}

impl Cost {
    fn general_per_call(&self) -> f64 {
        self.general as f64 / self.calls as f64
    }
    fn telephony_per_call(&self) -> f64 {
        self.telephony as f64 / self.calls as f64
    }
    /// Calls/s one key sustains when requests are the only bound.
    fn sustainable(&self, general_rps: f64, telephony_rps: f64) -> f64 {
        let g = general_rps / self.general_per_call().max(f64::MIN_POSITIVE);
        let t = telephony_rps / self.telephony_per_call().max(f64::MIN_POSITIVE);
        g.min(t)
    }
}

fn is_telephony(r: &RecordedRequest) -> bool {
    r.path.starts_with("/api/v5/telephony/")
}

/// A request of the mirrors' periodic polls.
fn is_sync_poll(r: &RecordedRequest) -> bool {
    matches!(
        r.path.as_str(),
        "/api/v5/customers/history" | "/api/v5/orders/history" | "/api/v5/users"
    )
}

/// Sends the calls' webhooks (in order, one connection) with the worker off, then starts the
/// worker and waits until every call's record reached the fake CRM.
fn run_calls(
    gen_rt: &Runtime,
    calls: &[Kind],
    tag: &str,
    limits: Option<(u32, u32)>,
    configure: impl FnOnce(&mut Settings),
) -> anyhow::Result<Cost> {
    let crm_rt = servers::runtime("fake-crm");
    let (general_rps, telephony_rps) = limits.unwrap_or((100_000, 100_000));
    let crm = fake_crm(
        &crm_rt,
        FakeCrmConfig {
            rate_limit_rps: limits.map(|(g, _)| g as usize),
            telephony_rate_limit_rps: limits.map(|(_, t)| t as usize),
            ..FakeCrmConfig::default()
        },
    );
    let mut requests = Vec::new();
    for (n, kind) in calls.iter().enumerate() {
        let number = caller(&format!("{kind:?}"), n as u64);
        seed(&crm, *kind, &number);
        requests.extend(webhooks(*kind, &format!("budget-{tag}-{n}"), &number));
    }
    let dir = tempfile::tempdir()?;
    let mut settings = servers::settings(dir.path());
    settings.crm.senior_manager_id = 1;
    settings.sites.push(servers::shop_site());
    settings.crm.kind = CrmKind::Retailcrm;
    settings.crm.base_url = crm.base_url();
    settings.crm.api_key = crm.api_key().into();
    settings.crm.default_site = "shop1".into();
    settings.crm.rate_limit_rps = general_rps;
    settings.crm.telephony_rate_limit_rps = telephony_rps;
    // The owner and orders mirrors on (the default), polled every 10 s (the default): the
    // worker takes a call's customer and open orders from them.
    settings.sync.enabled = true;
    settings.sync.history_interval_secs = 10;
    configure(&mut settings);
    let callgate = Callgate::start(settings)?;
    // The mirrors' first imports are done before the calls: what is counted is the calls.
    let mirror = callgate
        .state
        .sync
        .as_ref()
        .map(|s| s.mirror().clone())
        .ok_or_else(|| anyhow::anyhow!("budget {tag}: the mirrors are off"))?;
    let started = Instant::now();
    while !mirror.facts_fresh(Duration::from_secs(60)) {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "budget {tag}: the mirrors were not synced within 60 s"
        );
        // Polling interval, bounded above.
        std::thread::sleep(Duration::from_millis(20));
    }
    let seeded = crm.requests().len();
    let total = requests.len() as u64;
    let requests = std::sync::Arc::new(requests);
    let s = gen_rt.block_on(generator::closed_loop(
        callgate.addr,
        1,
        Duration::ZERO,
        Duration::from_secs(120),
        Some(total),
        Duration::from_secs(5),
        std::sync::Arc::new(move |n| {
            let (path, body) = &requests[(n % requests.len() as u64) as usize];
            generator::post_json(path, body.clone())
        }),
    ));
    anyhow::ensure!(
        s.ok_total == total,
        "budget {tag}: {} of {total} webhooks acked",
        s.ok_total
    );
    let started = Instant::now();
    callgate.start_worker(8);
    let bound = Duration::from_secs(180);
    let expected_calls = calls.len();
    let dead = loop {
        // Polling interval, bounded by `bound`.
        std::thread::sleep(Duration::from_millis(50));
        let depth = callgate.block_on(callgate.state.store.queue_depth())?;
        let dead = callgate.block_on(callgate.state.store.dead_letter_count())? as usize;
        if (depth == 0 && crm.calls().len() + dead >= expected_calls) || started.elapsed() > bound {
            break dead;
        }
    };
    let elapsed = started.elapsed();
    callgate.stop();
    let all = crm.requests();
    let made: Vec<&RecordedRequest> = all.iter().skip(seeded).collect();
    let telephony = made.iter().filter(|r| is_telephony(r)).count();
    let sync_polls = made.iter().filter(|r| is_sync_poll(r)).count();
    let cost = Cost {
        calls: calls.len(),
        general: made.len() - telephony - sync_polls,
        sync_polls,
        telephony,
        uploads: made
            .iter()
            .filter(|r| r.path == "/api/v5/telephony/calls/upload")
            .count(),
        popups: made
            .iter()
            .filter(|r| r.path == "/api/v5/telephony/call/event")
            .count(),
        elapsed,
        recorded_calls: crm.calls().len(),
        dead,
    };
    drop(crm);
    crm_rt.shutdown_timeout(Duration::from_secs(5));
    Ok(cost)
}

/// 60% known customers with an open order, 30% new answered, 10% missed, interleaved.
fn mix(n: usize) -> Vec<Kind> {
    (0..n)
        .map(|i| match i % 10 {
            0..=5 => Kind::S2,
            6..=8 => Kind::S1,
            _ => Kind::S5,
        })
        .collect()
}

/// One call at a time: every call record is uploaded on its own.
fn one_at_a_time(settings: &mut Settings) {
    settings.crm.calls_upload_batch = 1;
}

pub fn budget(
    opts: &crate::scenarios::Options,
    gen_rt: &Runtime,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Row>> {
    let per_scenario = if opts.quick { 5 } else { 20 };
    let mut rows = Vec::new();
    let mut detail = Vec::new();
    for kind in [Kind::S1, Kind::S2, Kind::S3, Kind::S5, Kind::S7] {
        let cost = run_calls(
            gen_rt,
            &vec![kind; per_scenario],
            &format!("{kind:?}"),
            None,
            |_| {},
        )?;
        eprintln!(
            "[loadgen] budget {kind:?}: {} general, {} telephony ({} uploads, {} pop-ups) for {} calls; {} recorded, {} dead; {} mirror poll requests in {:.1?}",
            cost.general,
            cost.telephony,
            cost.uploads,
            cost.popups,
            cost.calls,
            cost.recorded_calls,
            cost.dead,
            cost.sync_polls,
            cost.elapsed
        );
        let target = match kind {
            Kind::S1 => "≤ 3.1 general",
            Kind::S2 => "≤ 1.1 general",
            _ => "reported",
        };
        let verdict = match kind {
            Kind::S1 => Verdict::of(cost.general_per_call() <= 3.1),
            Kind::S2 => Verdict::of(cost.general_per_call() <= 1.1),
            _ => Verdict::Reported,
        };
        rows.push(row(
            &format!("CRM requests per call: {}", kind.name()),
            target,
            format!(
                "{:.2} general, {:.2} telephony ({} uploads, {} pop-ups for {} calls)",
                cost.general_per_call(),
                cost.telephony_per_call(),
                cost.uploads,
                cost.popups,
                cost.calls
            ),
            verdict,
        ));
        detail.push(format!(
            "{kind:?} {:.2}/{:.2}",
            cost.general_per_call(),
            cost.telephony_per_call()
        ));
    }
    // The mix at the real limits, batched (the configured default) and one call at a time.
    let mix_calls = if opts.quick { 20 } else { 60 };
    let limits = Some((10, 40));
    let batched = run_calls(gen_rt, &mix(mix_calls), "mix", limits, |_| {})?;
    let single = run_calls(gen_rt, &mix(mix_calls), "mix1", limits, one_at_a_time)?;
    for (label, cost) in [("batched", &batched), ("one call at a time", &single)] {
        eprintln!(
            "[loadgen] budget mix {label}: {} calls in {:.1?}: {} general, {} telephony ({} uploads, {} pop-ups); {} recorded, {} dead; {} mirror poll requests",
            cost.calls,
            cost.elapsed,
            cost.general,
            cost.telephony,
            cost.uploads,
            cost.popups,
            cost.recorded_calls,
            cost.dead,
            cost.sync_polls
        );
    }
    let measured = |c: &Cost| c.calls as f64 / c.elapsed.as_secs_f64();
    rows.push(row(
        "Calls/s one API key sustains, mix 60% S2 / 30% S1 / 10% S5, limits 10 general / 40 telephony",
        "reported, against one call at a time",
        format!(
            "{:.2} calls/s measured ({} calls in {:.1} s; {:.2} general + {:.2} telephony per call → {:.2} calls/s by the limits); one call at a time: {:.2} calls/s measured ({:.2} + {:.2} per call → {:.2} by the limits)",
            measured(&batched),
            batched.calls,
            batched.elapsed.as_secs_f64(),
            batched.general_per_call(),
            batched.telephony_per_call(),
            batched.sustainable(10.0, 40.0),
            measured(&single),
            single.general_per_call(),
            single.telephony_per_call(),
            single.sustainable(10.0, 40.0),
        ),
        Verdict::Reported,
    ));
    notes.push(format!(
        "CRM budget: each call sent as a start, an answer (not for a missed call) and an after-call webhook, in order, with the worker off; then the worker \
         (worker.concurrency = 8) against the fake retailCRM, counting the requests it received (general = every method outside `/api/v5/telephony/`). \
         The owner and orders mirrors are on (`[sync]`, history every 10 s) and their first imports finish before the calls; their polls while the calls run \
         (`customers/history`, `orders/history`, `users`: a cost per second, not per call) are left out of the per-call figures and printed on their own. \
         Per scenario: {per_scenario} calls each from its own number, no rate limits (general/telephony per call: {}). Known customers belong to CRM user {OWNER}; \
         S7 is answered by user {OTHER}. The mix: {mix_calls} calls at the fake's and callgate's real limits (10/40 rps), timed from the worker's start to the last call record; \
         \"one call at a time\" sets `crm.calls_upload_batch = 1` (every call record its own upload).",
        detail.join(", ")
    ));
    Ok(rows)
}
