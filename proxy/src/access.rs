//! The access log: one line per request, whatever its outcome. Its fields
//! are documented once, in `docs/operating.md`. Headers are never logged:
//! the proxy's own `Authorization` is among them once rewritten.

use crate::cache::Outcome;
use crate::metrics::Metrics;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What is known about a request by the time its response starts.
#[derive(Debug)]
pub struct Access {
    /// The client.
    pub peer: SocketAddr,
    /// The method as sent.
    pub method: http::Method,
    /// The normalised path the policy accepted.
    pub path: String,
    /// The status sent to the client.
    pub status: u16,
    /// When the request head was received.
    pub started: Instant,
    /// Time to the upstream's response head, if anything was sent.
    pub upstream: Option<Duration>,
    /// What the cache did, when it is on.
    pub cache: Option<Outcome>,
    /// Where the request is counted.
    pub metrics: Arc<Metrics>,
}

impl Access {
    /// A request the policy accepted, for the normalised `path`; nothing
    /// sent upstream yet.
    pub fn new(
        peer: SocketAddr,
        method: &http::Method,
        path: &str,
        started: Instant,
        metrics: &Arc<Metrics>,
    ) -> Self {
        Self {
            peer,
            method: method.clone(),
            path: path.to_string(),
            status: 0,
            started,
            upstream: None,
            cache: None,
            metrics: metrics.clone(),
        }
    }

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
