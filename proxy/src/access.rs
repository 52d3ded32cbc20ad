//! The access log: one line per request, whatever its outcome.
//!
//! Fields: `peer`, `method`, `path` (the normalised path when the policy
//! accepted it, else the target as sent, escaped), `status`, `bytes` (body
//! bytes sent to the client), `duration_ms` (whole request), `upstream_ms`
//! (until the upstream's response head; absent when nothing was sent),
//! `cache` (with `[cache]` on: `hit` served from disk without asking the
//! upstream, because the path is content-addressed or another request
//! fetched it while this one waited; `revalidated` served from disk after a
//! 304; `miss` fetched; `changed` fetched again because the upstream's
//! content changed; `gone` the upstream no longer has it; `failed` the
//! revalidation got another answer, passed on; `bypass` not cacheable),
//! and `outcome`. Headers are never logged: the proxy's own `Authorization` is
//! among them once rewritten.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What is known about a request by the time its response starts.
#[derive(Debug)]
pub struct Access {
    /// The client.
    pub peer: SocketAddr,
    /// The method as sent.
    pub method: http::Method,
    /// See the module documentation.
    pub path: String,
    /// The status sent to the client.
    pub status: u16,
    /// When the request head was received.
    pub started: Instant,
    /// Time to the upstream's response head, if anything was sent.
    pub upstream: Option<Duration>,
    /// What the cache did, when it is on.
    pub cache: Option<&'static str>,
    /// Where the request is counted.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl Access {
    /// Logs the line. Transfers that fail mid-body are warnings: the client
    /// saw a truncated response.
    pub fn finish(&self, bytes: u64, outcome: Result<(), String>) {
        let duration_ms = self.started.elapsed().as_millis() as u64;
        let upstream_ms = self.upstream.map(|d| d.as_millis() as u64);
        self.metrics.request(&self.method, self.status, bytes);
        match outcome {
            Ok(()) => tracing::info!(
                target: "access",
                peer = %self.peer,
                method = %self.method,
                path = %self.path,
                status = self.status,
                bytes,
                duration_ms,
                upstream_ms,
                cache = self.cache.map(tracing::field::display),
                "request"
            ),
            Err(why) => tracing::warn!(
                target: "access",
                peer = %self.peer,
                method = %self.method,
                path = %self.path,
                status = self.status,
                bytes,
                duration_ms,
                upstream_ms,
                cache = self.cache.map(tracing::field::display),
                outcome = %why,
                "request aborted"
            ),
        }
    }
}
