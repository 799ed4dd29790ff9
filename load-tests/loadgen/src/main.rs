//! callgate's load-test harness (SPEC §10), run by `load-tests/run`.
//!
//! ```text
//! loadgen suite [reps=5] [secs=5] [quick] [only=NAME]   the scenarios; prints a markdown report
//! loadgen owners-rss load|open DIR [COUNT]  one RSS probe (a fresh process per probe)
//! loadgen import-probe URL KEY COUNT DIR    one first import from the fake CRM at URL (a fresh process)
//! ```
//!
//! Layout of one run: the servers under test (callgate in-process, the hello baseline, the
//! fake retailCRM) each run on their own tokio runtime; the generator runs on another (see
//! `servers.rs`). Generator and servers share the machine's cores, as they would with wrk or
//! oha on the same box; the baseline suffers the same. Everything is on 127.0.0.1, every
//! phase is bounded in time, and the suite stops by itself.

mod budget;
mod generator;
mod mirror;
mod scenarios;
mod secrets;
mod servers;

use std::{path::PathBuf, time::Duration};

/// The allocator of the `callgate` binary (its `main.rs`): callgate runs in this process, so
/// this process allocates as the product does, for every server and the generator alike.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("suite") => {
            let mut opts = scenarios::Options::default();
            for arg in &args[1..] {
                match arg.split_once('=') {
                    Some(("reps", v)) => opts.reps = v.parse()?,
                    Some(("secs", v)) => opts.secs = Duration::from_secs(v.parse()?),
                    Some(("only", v)) => opts.only = Some(v.to_owned()),
                    None if arg == "quick" => opts.quick = true,
                    _ => anyhow::bail!("unknown option {arg}"),
                }
            }
            scenarios::suite(&opts)
        }
        Some("owners-rss") => {
            let mode = args.get(1).map(String::as_str).unwrap_or("load");
            let dir = PathBuf::from(args.get(2).map_or("/tmp/callgate-rss", String::as_str));
            let count = args
                .get(3)
                .and_then(|s| s.parse().ok())
                .unwrap_or(1_000_000);
            scenarios::owners_rss(mode, &dir, count)
        }
        Some("import-probe") => {
            let [url, key, count, dir] = [2, 3, 4, 5].map(|i| args.get(i - 1).cloned());
            match (url, key, count, dir) {
                (Some(url), Some(key), Some(count), Some(dir)) => {
                    mirror::import_probe(&url, &key, count.parse()?, &PathBuf::from(dir))
                }
                _ => anyhow::bail!("usage: loadgen import-probe URL KEY COUNT DIR"),
            }
        }
        _ => {
            eprintln!(
                "usage: loadgen suite [reps=N] [secs=N] [quick] | owners-rss load|open DIR [COUNT] | import-probe URL KEY COUNT DIR"
            );
            std::process::exit(64);
        }
    }
}
