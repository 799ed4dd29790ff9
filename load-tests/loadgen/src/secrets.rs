//! How long a shared-secret check takes (SPEC §9, issue 14 item 3): the time must depend on
//! neither the configured secret's length nor how much of it a presented value gets right.
//!
//! Each case times `Credential::matches` on one thread in batches; the cases run round-robin,
//! `opts.reps` × 3 rounds, and each case's median ns per check counts. The same is measured
//! for the check as it was before (the secret hashed on every check), as the baseline that
//! shows the method sees a length dependence when there is one.

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use callgate::credential::Credential;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::scenarios::{Options, Row, Verdict, median, row};

/// Checks per timed batch.
const BATCH: u32 = 20_000;

/// A presented value of 32 bytes against a secret.
struct Case {
    name: String,
    secret: String,
    presented: Vec<u8>,
}

fn cases() -> Vec<Case> {
    let secret = |len: usize| "s".repeat(len);
    let mut cases: Vec<Case> = [8, 64, 512]
        .into_iter()
        .map(|len| Case {
            name: format!("secret {len} B, wrong value"),
            secret: secret(len),
            presented: vec![b'x'; 32],
        })
        .collect();
    let s32 = secret(32);
    let mut last_wrong = s32.clone().into_bytes();
    last_wrong[31] = b'x';
    let mut first_wrong = s32.clone().into_bytes();
    first_wrong[0] = b'x';
    cases.push(Case {
        name: "secret 32 B, the secret itself".to_owned(),
        secret: s32.clone(),
        presented: s32.clone().into_bytes(),
    });
    cases.push(Case {
        name: "secret 32 B, all but the last byte right".to_owned(),
        secret: s32.clone(),
        presented: last_wrong,
    });
    cases.push(Case {
        name: "secret 32 B, the first byte wrong".to_owned(),
        secret: s32,
        presented: first_wrong,
    });
    cases
}

/// The check before this change: both sides hashed on every check.
fn hashed_per_check(given: &[u8], expected: &[u8]) -> bool {
    let given = Sha256::digest(given);
    let expected = Sha256::digest(expected);
    bool::from(given.as_slice().ct_eq(expected.as_slice()))
}

fn ns_per_check(check: impl Fn() -> bool) -> f64 {
    let start = Instant::now();
    for _ in 0..BATCH {
        black_box(check());
    }
    start.elapsed().as_nanos() as f64 / f64::from(BATCH)
}

/// Medians (ns per check) of each case, for the current check and the old one.
fn measure(rounds: usize) -> Vec<(String, f64, f64)> {
    let cases = cases();
    let credentials: Vec<Credential> = cases
        .iter()
        .map(|c| Credential::from(c.secret.as_str()))
        .collect();
    let mut now = vec![vec![]; cases.len()];
    let mut before = vec![vec![]; cases.len()];
    for _ in 0..rounds {
        for (i, case) in cases.iter().enumerate() {
            let credential = &credentials[i];
            now[i].push(ns_per_check(|| {
                credential.matches(black_box(&case.presented))
            }));
            before[i].push(ns_per_check(|| {
                hashed_per_check(
                    black_box(&case.presented),
                    black_box(case.secret.as_bytes()),
                )
            }));
        }
    }
    cases
        .into_iter()
        .zip(now.into_iter().zip(before))
        .map(|(case, (n, b))| (case.name, median(n), median(b)))
        .collect()
}

fn spread(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = values.clone().fold(f64::MIN, f64::max);
    let min = values.fold(f64::MAX, f64::min);
    max / min
}

pub fn secrets(opts: &Options, notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    // Warm-up, untimed.
    let _ = measure(1);
    let started = Instant::now();
    let results = measure(opts.reps * 3);
    let elapsed = started.elapsed();
    let now = spread(results.iter().map(|r| r.1));
    let before = spread(results.iter().map(|r| r.2));
    let detail: Vec<String> = results
        .iter()
        .map(|(name, n, b)| format!("{name}: {n:.0} ns (before: {b:.0} ns)"))
        .collect();
    notes.push(format!(
        "Secret checks: `Credential::matches` (src/credential.rs: the secret's SHA-256 taken once at load; a check hashes the presented value and compares digests in constant time) against the check before it (both sides hashed on every check), 32-byte presented values, batches of {BATCH} checks on one thread, {} round-robin rounds in {:.1} s, medians: {}.",
        opts.reps * 3,
        elapsed.as_secs_f64(),
        detail.join("; ")
    ));
    anyhow::ensure!(
        elapsed < Duration::from_secs(120),
        "the secret check timing ran too long"
    );
    Ok(vec![row(
        "Secret check time across secrets of 8–512 B and presented values right, nearly right and wrong (slowest / fastest case median)",
        "≤ 1.10× (no dependence on the secret)",
        format!("{now:.2}× (the check before: {before:.2}×)"),
        Verdict::of(now <= 1.10),
    )])
}
