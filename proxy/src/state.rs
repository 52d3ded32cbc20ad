//! What every request shares: the settings the phases read, the counters,
//! the cache, and the part SIGHUP replaces.

use crate::cache::Cache;
use crate::credentials::BasicAuth;
use crate::fetches::Fetches;
use crate::health::Readiness;
use crate::metrics::Metrics;
use crate::upstream::Upstream;
use pulp_auth_config::{ClientNet, PathPrefix};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

/// What SIGHUP replaces: the upstream client (trust anchors) and the
/// credentials. Requests take a snapshot when they start, so a reload never
/// touches a transfer in flight.
#[derive(Debug)]
pub struct Live {
    /// The client, with this worker's own connection pool.
    pub upstream: Upstream,
    /// The credentials to inject.
    pub auth: BasicAuth,
}

/// Everything a request needs, shared by all connections of one worker.
#[derive(Debug)]
pub struct State {
    live: RwLock<Arc<Live>>,
    /// `proxy.allowed_paths`.
    pub allowed_paths: Vec<PathPrefix>,
    /// `proxy.allowed_clients`; `None` serves every peer.
    pub allowed_clients: Option<Vec<ClientNet>>,
    /// `proxy.max_url_bytes`.
    pub max_url_bytes: usize,
    /// `http://ADDR` of the proxy itself, for rewriting redirects.
    pub public_base: String,
    /// Shared by every worker.
    pub metrics: Arc<Metrics>,
    /// Whether the main listener answers `/metrics` (no `metrics_listen`).
    pub serve_metrics: bool,
    /// The read-through cache, when `[cache]` is set and usable.
    pub cache: Option<Arc<Cache>>,
    /// The last `/readyz` probe, shared by every worker.
    pub readiness: Arc<Readiness>,
    /// The fetch record (`/fetches`), shared by every worker; `None` when
    /// `proxy.fetch_records` is 0.
    pub fetches: Option<Arc<Fetches>>,
}

impl State {
    /// Builds one worker's state.
    pub fn new(
        live: Live,
        proxy: &pulp_auth_config::Proxy,
        public_base: String,
        metrics: Arc<Metrics>,
        readiness: Arc<Readiness>,
        cache: Option<Arc<Cache>>,
        fetches: Option<Arc<Fetches>>,
    ) -> Self {
        Self {
            live: RwLock::new(Arc::new(live)),
            allowed_paths: proxy.allowed_paths.clone(),
            allowed_clients: proxy.allowed_clients.clone(),
            max_url_bytes: proxy.max_url_bytes,
            public_base,
            metrics,
            serve_metrics: proxy.metrics_listen.is_none(),
            cache,
            readiness,
            fetches,
        }
    }

    /// The current upstream client and credentials.
    pub fn live(&self) -> Arc<Live> {
        // A poisoned lock only means a panic elsewhere; the value is whole.
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts new credentials and trust anchors in force for new requests.
    pub async fn replace(&self, live: Live) {
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(live);
        self.readiness.forget().await;
    }

    /// Whether `ip` may use the proxy at all.
    pub fn client_allowed(&self, ip: IpAddr) -> bool {
        self.allowed_clients
            .as_ref()
            .is_none_or(|nets| nets.iter().any(|n| n.contains(ip)))
    }
}
