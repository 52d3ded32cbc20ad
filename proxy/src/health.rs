//! The proxy's own endpoints, answered locally and never forwarded. They
//! are matched on the exact path before the request policy runs, so
//! `proxy.allowed_paths` neither allows nor forbids them:
//! - `GET /healthz`: 200 while the proxy serves;
//! - `GET /readyz`: 200 when an authenticated probe of the upstream's
//!   `/pulp/api/v3/status/` succeeded within the last few seconds, else 503
//!   with the reason;
//! - `GET /metrics`: Prometheus text (unless `proxy.metrics_listen` moves it).

use crate::credentials::BasicAuth;
use crate::error::UpstreamError;
use crate::upstream::Upstream;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{Empty, Full};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How long a probe result is reused: readiness checks from load balancers
/// or systemd must not turn into a request stream to Pulp.
pub const PROBE_TTL: Duration = Duration::from_secs(5);

/// Where the upstream's status endpoint is, below its prefix.
pub const STATUS_PATH: &str = "/pulp/api/v3/status/";

/// A local endpoint, if `path` names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/healthz`.
    Health,
    /// `/readyz`.
    Ready,
    /// `/metrics`.
    Metrics,
}

impl Endpoint {
    /// Matches the exact path.
    pub fn of(path: &str) -> Option<Self> {
        match path {
            "/healthz" => Some(Self::Health),
            "/readyz" => Some(Self::Ready),
            "/metrics" => Some(Self::Metrics),
            _ => None,
        }
    }
}

/// The cached outcome of the last upstream probe.
#[derive(Default)]
pub struct Readiness {
    last: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Readiness")
    }
}

impl Readiness {
    /// Ready or the reason not; probes at most once per [`PROBE_TTL`]
    /// (concurrent callers wait for the one probe).
    pub async fn check(&self, upstream: &Upstream, auth: &BasicAuth) -> Result<(), String> {
        let mut last = self.last.lock().await;
        if let Some((at, result)) = last.as_ref() {
            if at.elapsed() < PROBE_TTL {
                return result.clone();
            }
        }
        let result = probe(upstream, auth).await;
        *last = Some((Instant::now(), result.clone()));
        result
    }

    /// Forgets the cached result (after new credentials were loaded).
    pub async fn forget(&self) {
        *self.last.lock().await = None;
    }
}

async fn probe(upstream: &Upstream, auth: &BasicAuth) -> Result<(), String> {
    let uri = upstream.uri_for(STATUS_PATH).map_err(|e| e.to_string())?;
    let mut req = http::Request::new(Empty::<Bytes>::new());
    *req.uri_mut() = uri;
    req.headers_mut()
        .insert(header::HOST, upstream.host_header());
    req.headers_mut()
        .insert(header::AUTHORIZATION, auth.header_value());
    match upstream.send(req).await {
        Ok(resp) if resp.status() == StatusCode::OK => Ok(()),
        Ok(resp)
            if matches!(
                resp.status(),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            ) =>
        {
            Err(UpstreamError::CredentialsRefused(resp.status()).to_string())
        }
        Ok(resp) => Err(format!(
            "upstream status endpoint answered {}",
            resp.status()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// A small plain-text response.
pub fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
