//! The access log: one line per request, whatever its outcome. Its fields
//! are documented once, in `docs/operating.md`. Headers are never logged:
//! the proxy's own `Authorization` is among them once rewritten. Every
//! field a client chose goes through [`Field`], so no request can end a log
//! line early, start a forged one, or hide text from whoever reads the log.

use crate::cache::Outcome;
use crate::fetches::{Fetch, Fetches};
use crate::metrics::Metrics;
use std::fmt;
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
    /// The storage host and hop count, when a redirect was followed.
    pub storage: Option<crate::redirect::Followed>,
    /// Where the request is counted.
    pub metrics: Arc<Metrics>,
    /// Where a completed transfer is recorded, when the record is on.
    pub record: Option<Arc<Fetches>>,
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
        record: Option<&Arc<Fetches>>,
    ) -> Self {
        Self {
            peer,
            method: method.clone(),
            path: path.to_string(),
            status: 0,
            started,
            upstream: None,
            cache: None,
            storage: None,
            metrics: metrics.clone(),
            record: record.cloned(),
        }
    }

    /// A hasher for the body, when completed transfers are recorded.
    pub fn hasher(&self) -> Option<ring::digest::Context> {
        self.record
            .as_ref()
            .map(|_| ring::digest::Context::new(&ring::digest::SHA256))
    }

    /// Logs the line, and records a completed transfer with the hash of
    /// its body (from [`Access::hasher`]). Transfers that fail mid-body are
    /// warnings: the client saw a truncated response.
    pub fn finish(
        &mut self,
        bytes: u64,
        outcome: Result<(), String>,
        hasher: Option<ring::digest::Context>,
    ) {
        let duration_ms = self.started.elapsed().as_millis() as u64;
        let upstream_ms = self.upstream.map(|d| d.as_millis() as u64);
        self.metrics.request(&self.method, self.status, bytes);
        match &outcome {
            Ok(()) => tracing::info!(
                target: "access",
                peer = %self.peer,
                method = %Field(self.method.as_str()),
                path = %Field(&self.path),
                status = self.status,
                bytes,
                duration_ms,
                upstream_ms,
                cache = self.cache.map(tracing::field::display),
                storage = self.storage.as_ref().map(|f| tracing::field::display(Field(&f.host))),
                hops = self.storage.as_ref().map(|f| f.hops),
                "request"
            ),
            Err(why) => tracing::warn!(
                target: "access",
                peer = %self.peer,
                method = %Field(self.method.as_str()),
                path = %Field(&self.path),
                status = self.status,
                bytes,
                duration_ms,
                upstream_ms,
                cache = self.cache.map(tracing::field::display),
                storage = self.storage.as_ref().map(|f| tracing::field::display(Field(&f.host))),
                hops = self.storage.as_ref().map(|f| f.hops),
                outcome = %why,
                "request aborted"
            ),
        }
        if let (Ok(()), Some(record), Some(hasher)) = (outcome, &self.record, hasher) {
            let mut sha256 = [0u8; 32];
            sha256.copy_from_slice(hasher.finish().as_ref());
            record.record(Fetch {
                head: self.method == http::Method::HEAD,
                path: std::mem::take(&mut self.path),
                status: self.status,
                bytes,
                sha256,
                cache: self.cache,
                storage: self.storage.take().map(|f| f.host),
            });
        }
    }
}

/// A client-controlled log field, escaped for both log formats: printable
/// ASCII stays as it is (`\\` doubled, so an escape cannot be forged);
/// every other character becomes `\u{HEX}`. That covers the C0 and C1
/// controls, DEL, U+2028 and U+2029 (line breaks to some log viewers and
/// to JavaScript), bidirectional overrides and look-alikes, which JSON
/// encoders leave raw.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a>(pub &'a str);

impl fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                ' '..='~' => f.write_char(c)?,
                _ => write!(f, "\\u{{{:x}}}", u32::from(c))?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Field;

    #[test]
    fn fields_escape_what_could_forge_or_hide_a_line() {
        for (raw, want) in [
            ("/pulp/content/a", "/pulp/content/a"),
            ("a\nb\rc", "a\\u{a}b\\u{d}c"),
            (
                "a\u{85}b\u{2028}c\u{2029}d",
                "a\\u{85}b\\u{2028}c\\u{2029}d",
            ),
            ("\u{7f}\u{1b}[31m\u{202e}x", "\\u{7f}\\u{1b}[31m\\u{202e}x"),
            ("back\\slash\\u{a}", "back\\\\slash\\\\u{a}"),
            ("caf\u{e9}", "caf\\u{e9}"),
        ] {
            assert_eq!(Field(raw).to_string(), want, "{raw:?}");
        }
    }
}
