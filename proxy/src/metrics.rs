//! Prometheus metrics. Label values come from fixed sets (method is `GET`,
//! `HEAD` or `other`; status is a class like `2xx`; kinds and rules are the
//! proxy's own names), so no client can grow the label space.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// A storage host named by the upstream's redirects: the upstream is
/// trusted, and `upstream.redirect_hosts` bounds the set when it is set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabel {
    host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabel {
    rule: &'static str,
}

/// Every metric the proxy exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    bytes: Counter,
    upstream_seconds: Histogram,
    upstream_errors: Family<KindLabel, Counter>,
    redirects: Family<HostLabel, Counter>,
    storage_errors: Family<KindLabel, Counter>,
    refusals: Family<RuleLabel, Counter>,
    open_connections: Gauge,
    closed_connections: Family<ReasonLabel, Counter>,
    cache: CacheMetrics,
}

/// The read-through cache's counters; all zero while it is off.
#[derive(Default)]
struct CacheMetrics {
    hits: Counter,
    misses: Counter,
    revalidations: Family<ResultLabel, Counter>,
    bytes_served: Counter,
    evictions: Counter,
    entries: Gauge,
    bytes_stored: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `pulp_auth_proxy` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pulp_auth_proxy");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by method and status class",
            requests.clone(),
        );
        let bytes = Counter::default();
        registry.register(
            "response_body_bytes",
            "Response body bytes sent to clients",
            bytes.clone(),
        );
        let upstream_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "upstream_response_seconds",
            "Time from sending a request upstream to its response head",
            upstream_seconds.clone(),
        );
        let upstream_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream failures, by kind",
            upstream_errors.clone(),
        );
        let redirects = Family::<HostLabel, Counter>::default();
        registry.register(
            "redirects_followed",
            "Redirects to object storage the proxy followed, by storage host",
            redirects.clone(),
        );
        let storage_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "storage_errors",
            "Failures on a redirect to object storage, by kind",
            storage_errors.clone(),
        );
        let refusals = Family::<RuleLabel, Counter>::default();
        registry.register(
            "refusals",
            "Requests refused before reaching the upstream, by rule",
            refusals.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Client connections currently open",
            open_connections.clone(),
        );
        let closed_connections = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "closed_connections",
            "Client connections the proxy closed mid-way, by reason (send-timeout, reclaimed)",
            closed_connections.clone(),
        );
        let cache = CacheMetrics::default();
        let c = &cache;
        registry.register(
            "cache_hits",
            "Requests answered from the cache (after revalidation where needed)",
            c.hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Cacheable requests with nothing stored, fetched from the upstream",
            c.misses.clone(),
        );
        registry.register(
            "cache_revalidations",
            "Stored responses checked with the upstream, by result",
            c.revalidations.clone(),
        );
        registry.register(
            "cache_served_bytes",
            "Response body bytes sent to clients from the cache",
            c.bytes_served.clone(),
        );
        registry.register(
            "cache_evictions",
            "Entries removed to stay within cache.max_size",
            c.evictions.clone(),
        );
        registry.register("cache_entries", "Entries stored", c.entries.clone());
        registry.register(
            "cache_stored_bytes",
            "Bytes the stored entries take on disk",
            c.bytes_stored.clone(),
        );
        Self {
            registry,
            requests,
            bytes,
            upstream_seconds,
            upstream_errors,
            redirects,
            storage_errors,
            refusals,
            open_connections,
            closed_connections,
            cache,
        }
    }

    /// One answered request.
    pub fn request(&self, method: &http::Method, status: u16, bytes: u64) {
        let method = match *method {
            http::Method::GET => "GET",
            http::Method::HEAD => "HEAD",
            _ => "other",
        };
        let status = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests
            .get_or_create(&RequestLabels { method, status })
            .inc();
        self.bytes.inc_by(bytes);
    }

    /// Time to an upstream response head.
    pub fn upstream_latency(&self, d: Duration) {
        self.upstream_seconds.observe(d.as_secs_f64());
    }

    /// One upstream failure.
    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    /// One redirect followed to `host` (never its path or query).
    pub fn redirect_followed(&self, host: &str) {
        self.redirects
            .get_or_create(&HostLabel {
                host: host.to_string(),
            })
            .inc();
    }

    /// One failure on a storage hop.
    pub fn storage_error(&self, kind: &'static str) {
        self.storage_errors.get_or_create(&KindLabel { kind }).inc();
    }

    /// One refusal.
    pub fn refusal(&self, rule: &'static str) {
        self.refusals.get_or_create(&RuleLabel { rule }).inc();
    }

    /// Counts a connection as open until the guard drops.
    pub fn connection(&self) -> ConnectionGuard {
        self.open_connections.inc();
        ConnectionGuard(self.open_connections.clone())
    }

    /// A client connection the proxy closed: `send-timeout` (the client
    /// stopped reading) or `reclaimed` (idle at the connection limit).
    pub fn connection_closed(&self, reason: &'static str) {
        self.closed_connections
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// A request answered from the cache.
    pub fn cache_hit(&self) {
        self.cache.hits.inc();
    }

    /// A cacheable request found nothing stored.
    pub fn cache_miss(&self) {
        self.cache.misses.inc();
    }

    /// A stored response checked with the upstream.
    pub fn cache_revalidation(&self, outcome: crate::cache::Outcome) {
        if let Some(result) = outcome.revalidation_label() {
            self.cache
                .revalidations
                .get_or_create(&ResultLabel { result })
                .inc();
        }
    }

    /// Body bytes sent from the cache.
    pub fn cache_served(&self, bytes: u64) {
        self.cache.bytes_served.inc_by(bytes);
    }

    /// Entries evicted.
    pub fn cache_evictions(&self, n: u64) {
        self.cache.evictions.inc_by(n);
    }

    /// The cache's current extent.
    pub fn cache_size(&self, entries: u64, bytes: u64) {
        self.cache.entries.set(entries as i64);
        self.cache.bytes_stored.set(bytes as i64);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Decrements the open-connections gauge on drop.
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
