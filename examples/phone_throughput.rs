//! Single-core throughput of phone normalization over the test corpus (SPEC §2 asks for
//! at least 300,000 numbers/s per core). Run with
//! `cargo run --release --example phone_throughput`.

use std::{hint::black_box, time::Instant};

use callgate::domain::phone_number::{PhoneNormalizer, RegionCode};

/// Passes over the corpus; enough for a stable figure in about a second.
const PASSES: usize = 100;

fn main() -> anyhow::Result<()> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/phone-corpus.tsv");
    let corpus = std::fs::read_to_string(path)?;
    let rows = corpus
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let input = fields.next()?;
            let region = RegionCode::parse(fields.next()?).ok()?;
            Some((input, region))
        })
        .collect::<Vec<_>>();
    let normalizer = PhoneNormalizer::new("UA")?;
    // Warm up the lazy metadata and regex caches.
    for (input, region) in &rows {
        let _ = black_box(normalizer.parse_in(input, *region));
    }
    let start = Instant::now();
    for _ in 0..PASSES {
        for (input, region) in &rows {
            let _ = black_box(normalizer.parse_in(black_box(input), *region));
        }
    }
    let elapsed = start.elapsed();
    let n = rows.len() * PASSES;
    println!(
        "{n} normalizations in {elapsed:.2?}: {:.0} numbers/s on one core",
        n as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
