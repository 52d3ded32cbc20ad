//! The response scan's cost alone: CPU seconds per GiB streaming through
//! `scrub::ScrubbedBody` against a plain pass-through of the same chunks,
//! and their ratio. Both copy each frame once, as a socket write does; no
//! network and no TLS, so the difference is the scan's own cost.
//!
//! ```sh
//! cargo run --release -p pulp-auth-proxy --example scan_cost -- [MiB, default 1024] [chunk KiB, default 16]
//! ```
//!
//! The credential is fake and the body never holds it, as in production.

use bytes::Bytes;
use http_body::{Body, Frame};
use pulp_auth_config::forms::Matcher;
use pulp_auth_proxy::scrub::ScrubbedBody;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

/// The same chunk, `left` more times: what an upstream connection yields.
struct Chunks {
    chunk: Bytes,
    left: u64,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))))
    }
}

struct Noop;

impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

/// Drains `body` as a connection would, each frame copied once into a
/// write buffer (as the socket or TLS write copies it), returning the
/// bytes it yielded and the CPU time taken.
fn drain<B: Body<Data = Bytes> + Unpin>(mut body: B) -> (u64, Duration)
where
    B::Error: std::fmt::Debug,
{
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    let start = cpu();
    let mut n = 0u64;
    let mut sink = Vec::with_capacity(1 << 20);
    while let Poll::Ready(Some(frame)) = Pin::new(&mut body).poll_frame(&mut cx) {
        if let Ok(data) = frame.expect("the body is clean").into_data() {
            n += data.len() as u64;
            sink.clear();
            sink.extend_from_slice(&data);
            std::hint::black_box(&sink);
        }
    }
    (n, cpu() - start)
}

/// This process's CPU time (user and system), from `/proc/self/stat`, in
/// clock ticks of 10 ms: run at least a few hundred MiB for a figure.
fn cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name, which is in parentheses.
    let rest = &text[text.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // CLK_TCK is 100 on every Linux the project targets.
    Duration::from_millis(ticks * 10)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: u64 = args
        .next()
        .map_or(1024, |a| a.parse().expect("MiB: a number"));
    let chunk_kib: usize = args
        .next()
        .map_or(16, |a| a.parse().expect("chunk KiB: a number"));
    let chunk: Bytes = (0..chunk_kib * 1024)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect();
    let count = mib * 1024 / chunk_kib as u64;
    let forms = Arc::new(Matcher::new("ci-user", "fake pass:@/%+ word"));
    assert!(!forms.is_match(&chunk), "the test body holds a form");

    let gib = |n: u64| n as f64 / (1u64 << 30) as f64;
    let (plain_n, plain) = drain(Chunks {
        chunk: chunk.clone(),
        left: count,
    });
    let (scan_n, scan) = drain(ScrubbedBody::new(
        Chunks {
            chunk: chunk.clone(),
            left: count,
        },
        forms.clone(),
        "/bench",
    ));
    assert_eq!(plain_n, scan_n);
    let plain_s = plain.as_secs_f64() / gib(plain_n);
    let scan_s = scan.as_secs_f64() / gib(scan_n);
    println!(
        "{mib} MiB in {chunk_kib} KiB chunks, longest form {} bytes",
        forms.max_len()
    );
    println!("pass-through  {plain_s:8.3} CPU s per GiB");
    println!("scanned       {scan_s:8.3} CPU s per GiB");
    println!(
        "scan alone    {:8.3} CPU s per GiB; ratio {}",
        scan_s - plain_s,
        if plain.is_zero() {
            "- (the pass-through took under one clock tick)".to_string()
        } else {
            format!("{:.2}x", scan_s / plain_s)
        }
    );
}
