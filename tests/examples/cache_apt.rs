//! The read-through cache on the end-to-end APT build: the same
//! `docker build` (`--no-cache`, `--network host`) run twice through one
//! proxy, with `[cache]` on and off; reports what each build cost the
//! upstream (body bytes the test upstream sent) and its wall time, median of
//! REPS fresh proxies per mode. Twice: with the upstream on loopback, and
//! behind an emulated remote link (30 ms before each response head, files
//! at 10 MiB/s), which is what the cache saves time on.
//!
//!     cargo build --release --workspace --bins
//!     cargo run --release -p e2e --example cache_apt -- [REPS, default 5]
//!
//! Needs a Docker daemon (tests/run starts one) and the machine's apt
//! sources (the repository and base image are built as the tests build
//! them).

use e2e::apt::{self, Run};
use e2e::upstream::Versions;
use e2e::{cache_section, Setup};
use std::path::Path;
use std::time::Duration;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let reps: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    e2e::docker::ensure_daemon();
    let repo = apt::repo();
    let base = apt::base_image();
    for (link, latency, rate) in [
        ("loopback", Duration::ZERO, 0),
        (
            "remote link (30 ms, 10 MiB/s)",
            Duration::from_millis(30),
            10 << 20,
        ),
    ] {
        let rows = measure(reps, &repo, base, latency, rate).await;
        report(link, reps, &rows);
    }
}

type Row = (bool, Run, Run);

async fn measure(reps: usize, repo: &Path, base: &str, latency: Duration, rate: u64) -> Vec<Row> {
    // Modes alternate within each repetition, so drift in Docker's own
    // speed falls on both alike.
    let mut runs: [Vec<(Run, Run)>; 2] = [Vec::new(), Vec::new()];
    for rep in 0..reps {
        for cached in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            let s = if cached {
                let edit = cache_section(&tmp.path().join("cache"), "256 MiB");
                Setup::start_with(Versions::Both, "", edit).await
            } else {
                Setup::start().await
            };
            s.upstream.serve_dir(apt::REPO_PREFIX, repo);
            s.upstream.set_link(latency, rate);
            let tag = |n: u32| format!("pap-bench-cache-{cached}-{rep}-{n}:{}", std::process::id());
            let pair = tokio::task::block_in_place(|| {
                (
                    apt::build_through(&s, base, &tag(1)).1,
                    apt::build_through(&s, base, &tag(2)).1,
                )
            });
            runs[usize::from(cached)].push(pair);
        }
    }
    [false, true]
        .iter()
        .map(|&cached| {
            let pairs = &runs[usize::from(cached)];
            let firsts: Vec<_> = pairs.iter().map(|p| p.0).collect();
            let seconds: Vec<_> = pairs.iter().map(|p| p.1).collect();
            (cached, median(&firsts), median(&seconds))
        })
        .collect()
}

fn report(link: &str, reps: usize, rows: &[Row]) {
    println!(
        "\nAPT build, upstream on {link}, median of {reps} (bytes: the upstream's body bytes)\n"
    );
    println!("| cache | first build bytes | second build bytes | second/first bytes | first build s | second build s | second/first time |");
    println!("|---|---|---|---|---|---|---|");
    for (cached, first, second) in rows {
        println!(
            "| {} | {} | {} | {:.3}% | {:.2} | {:.2} | {:.2}x |",
            if *cached { "on" } else { "off" },
            first.upstream_bytes,
            second.upstream_bytes,
            100.0 * second.upstream_bytes as f64 / first.upstream_bytes as f64,
            first.secs,
            second.secs,
            second.secs / first.secs
        );
    }
    let (off, on) = (rows[0].2, rows[1].2);
    println!(
        "\nsecond build, cache on vs off: bytes {:.3}%, time {:.2}x",
        100.0 * on.upstream_bytes as f64 / off.upstream_bytes as f64,
        on.secs / off.secs
    );
}

/// Median wall time; bytes are the same every run, so the median run's.
fn median(runs: &[Run]) -> Run {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    sorted[sorted.len() / 2]
}
