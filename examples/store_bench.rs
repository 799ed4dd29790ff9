//! Rough measurements of the embedded store (not a test; numbers depend on the disk):
//!
//! ```text
//! cargo run --release --example store_bench -- enqueue DIR [SECONDS] [CONCURRENCY]
//! cargo run --release --example store_bench -- owners-load DIR [COUNT]
//! cargo run --release --example store_bench -- owners-open DIR
//! ```
//!
//! `enqueue`: durable enqueues/s and ack latency with CONCURRENCY (default 64) tokio tasks.
//! `owners-load`: writes COUNT (default 1,000,000) owner entries, prints RSS.
//! `owners-open`: reopens that file in a fresh process (the steady state after a restart),
//! prints RSS and the cost of a `get_owner`.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use callgate::{
    crm::CustomerId,
    domain::{manager::ManagerId, phone_number::PhoneNumber},
    store::{OwnerEntry, OwnerIndex, Queue, embedded::EmbeddedStore},
};

const DB_FILE: &str = "bench.redb";

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

fn number(i: u64) -> PhoneNumber {
    PhoneNumber::from_e164(&format!("+3805{:08}", i)).expect("valid")
}

fn entry(i: u64) -> OwnerEntry {
    OwnerEntry {
        customer_id: (!i.is_multiple_of(10)).then_some(CustomerId(i + 1)),
        manager_id: (!i.is_multiple_of(10)).then_some(ManagerId(i % 40)),
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("enqueue");
    let dir = PathBuf::from(args.get(1).map_or("/tmp/callgate-bench", String::as_str));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let path = dir.join(DB_FILE);
    match mode {
        "enqueue" => {
            let _ = std::fs::remove_file(&path);
            let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
            let conc: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(64);
            let store = Arc::new(EmbeddedStore::open(&path).expect("open"));
            let payload = vec![b'x'; 600];
            let deadline = Instant::now() + Duration::from_secs(secs);
            let start = Instant::now();
            let tasks: Vec<_> = (0..conc)
                .map(|w| {
                    let store = store.clone();
                    let payload = payload.clone();
                    tokio::spawn(async move {
                        let mut lat = Vec::new();
                        let mut i = 0u64;
                        while Instant::now() < deadline {
                            let t = Instant::now();
                            store
                                .enqueue(
                                    &format!("dedupe:bench:{w}:{i}"),
                                    Duration::from_secs(86_400),
                                    &format!("call-{w}-{}", i / 4),
                                    &payload,
                                )
                                .await
                                .expect("enqueue");
                            lat.push(t.elapsed());
                            i += 1;
                        }
                        lat
                    })
                })
                .collect();
            let mut lat = Vec::new();
            for t in tasks {
                lat.extend(t.await.expect("task"));
            }
            let elapsed = start.elapsed();
            lat.sort();
            let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
            println!(
                "enqueue: {} durable enqueues in {:.2?} with {conc} tasks = {:.0}/s; ack p50 {:.2?} p99 {:.2?} max {:.2?}",
                lat.len(),
                elapsed,
                lat.len() as f64 / elapsed.as_secs_f64(),
                pct(0.50),
                pct(0.99),
                lat[lat.len() - 1]
            );
            println!("queue depth {}", store.queue_depth().await.expect("depth"));
        }
        "owners-load" => {
            let _ = std::fs::remove_file(&path);
            let count: u64 = args
                .get(2)
                .and_then(|s| s.parse().ok())
                .unwrap_or(1_000_000);
            println!("RSS at start: {:.1} MB", rss_mb());
            let store = EmbeddedStore::open(&path).expect("open");
            let start = Instant::now();
            let ttl = Duration::from_secs(7 * 86_400);
            for chunk in (0..count).collect::<Vec<_>>().chunks(50_000) {
                store
                    .put_owners(chunk.iter().map(|&i| (number(i), entry(i), ttl)))
                    .await
                    .expect("put owners");
            }
            println!(
                "owners-load: {count} owners written in {:.2?}; mirror {} entries; RSS {:.1} MB",
                start.elapsed(),
                store.owner_mirror_len(),
                rss_mb()
            );
        }
        "owners-open" => {
            let start = Instant::now();
            let store = EmbeddedStore::open(&path).expect("open");
            let loaded = start.elapsed();
            let n = store.owner_mirror_len() as u64;
            println!(
                "owners-open: {n} owners loaded in {loaded:.2?}; RSS {:.1} MB",
                rss_mb()
            );
            let phones: Vec<PhoneNumber> = (0..100_000).map(|i| number(i * 7 % n)).collect();
            let start = Instant::now();
            let mut hits = 0;
            for p in &phones {
                if store.get_owner(p).await.expect("get").is_some() {
                    hits += 1;
                }
            }
            println!(
                "get_owner: {:.0} ns each ({hits} hits of {})",
                start.elapsed().as_nanos() as f64 / phones.len() as f64,
                phones.len()
            );
        }
        other => eprintln!("unknown mode {other}: enqueue | owners-load | owners-open"),
    }
}
