//! Measures the proxy's peak memory (VmHWM) and throughput while it streams
//! one large file from a TLS upstream to a client, all on loopback.
//!
//!     cargo build --release --workspace --bins
//!     cargo run --release -p e2e --example stream_rss -- [MiB, default 1024]

use e2e::client::{get_hashed, pattern_sha256};
use e2e::upstream::Content;
use e2e::Setup;
use std::time::Instant;

#[tokio::main]
async fn main() {
    let mib: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1024);
    let len = mib * 1024 * 1024;
    let s = Setup::start().await;
    s.upstream
        .put("/pulp/content/big.rpm", Content::Pattern(len));
    let idle_kib = s.proxy.peak_rss_kib();
    let started = Instant::now();
    let (status, n, digest) = get_hashed(s.proxy.addr, "/pulp/content/big.rpm")
        .await
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!((status.as_u16(), n), (200, len));
    assert_eq!(
        digest,
        pattern_sha256(len),
        "body differs from the upstream's"
    );
    let peak_kib = s.proxy.peak_rss_kib();
    println!(
        "streamed {mib} MiB in {secs:.1} s ({:.0} MiB/s, client hashing included); \
         proxy VmHWM before: {idle_kib} KiB, after: {peak_kib} KiB",
        mib as f64 / secs
    );
}
