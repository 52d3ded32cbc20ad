//! The proxy's own endpoints, answered locally and never forwarded. They
//! are matched on the exact path after the request-shape rules
//! (`policy::shape`: origin-form, `Host`, no body, `GET`/`HEAD`) and before
//! the path rules, so `proxy.allowed_paths` neither allows nor forbids them:
//! - `GET /healthz`: 200 while the proxy serves;
//! - `GET /readyz`: 200 when an authenticated probe of the upstream
//!   (`rewrite::readiness_probe`) succeeded within
//!   `proxy.readiness_cache_secs`, else
//!   503 with one word from [`NotReady::reason`]; the cause goes to the log
//!   only, as for any other upstream failure;
//! - `GET /metrics`: Prometheus text (unless `proxy.metrics_listen` moves it);
//! - `GET /fetches?since=CURSOR`: the fetch record after CURSOR (all kept
//!   without it) as JSON lines, where `/metrics` is served; the headers
//!   `Fetches-Cursor` (the next cursor), `Fetches-Lost` (records after
//!   CURSOR the ring no longer holds) and `Fetches-Epoch` (when the record
//!   began: a cursor of another epoch is from before a restart) come with
//!   `HEAD` too.

use crate::body::ProxyBody;
use crate::credentials::BasicAuth;
use crate::error::UpstreamError;
use crate::rewrite;
use crate::state::State;
use crate::upstream::Upstream;
use bytes::Bytes;
use http::{header, request, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// A local endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/healthz`.
    Health,
    /// `/readyz`.
    Ready,
    /// `/metrics`.
    Metrics,
    /// `/fetches`.
    Fetches,
}

impl Endpoint {
    /// The endpoint a `GET` or `HEAD` of exactly this path names, if any.
    pub fn of(parts: &request::Parts) -> Option<Self> {
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return None;
        }
        match parts.uri.path() {
            "/healthz" => Some(Self::Health),
            "/readyz" => Some(Self::Ready),
            "/metrics" => Some(Self::Metrics),
            "/fetches" => Some(Self::Fetches),
            _ => None,
        }
    }
}

/// Why `/readyz` says not ready.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotReady {
    /// The probe failed on its way (including refused credentials).
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The probed path answered, but not as a ready upstream does.
    #[error("the upstream answered the readiness probe with {0}; check upstream.readiness_path")]
    Status(StatusCode),
}

impl NotReady {
    /// The one word `/readyz` tells its client, from a fixed set (listed in
    /// `docs/operating.md`).
    pub fn reason(&self) -> &'static str {
        match self {
            NotReady::Upstream(e) => match e {
                UpstreamError::CredentialsRefused(_) => "credentials-refused",
                UpstreamError::Forbidden => "forbidden",
                UpstreamError::Certificate(_) => "bad-certificate",
                UpstreamError::Tls(_) => "tls",
                UpstreamError::Refused(_) | UpstreamError::Dns(_) => "unreachable",
                UpstreamError::ConnectTimeout | UpstreamError::ResponseTimeout => "timeout",
                UpstreamError::Framing(_) => "framing",
                // The probe follows no redirect; these cannot arise.
                UpstreamError::Other(_)
                | UpstreamError::Storage { .. }
                | UpstreamError::StorageRefused { .. }
                | UpstreamError::StorageHost { .. }
                | UpstreamError::Redirects { .. } => "upstream-error",
            },
            NotReady::Status(_) => "status",
        }
    }
}

/// The outcome of the last upstream probe, reused for a while.
pub struct Readiness {
    ttl: Duration,
    last: Mutex<Option<(Instant, Result<(), NotReady>)>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness").field("ttl", &self.ttl).finish()
    }
}

impl Readiness {
    /// Reuses a probe result for `ttl` (`proxy.readiness_cache_secs`).
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            last: Mutex::new(None),
        }
    }

    /// Ready, or why not; probes at most once per `ttl` (concurrent
    /// callers wait for the one probe).
    pub async fn check(&self, upstream: &Upstream, auth: &BasicAuth) -> Result<(), NotReady> {
        let mut last = self.last.lock().await;
        if let Some((at, result)) = last.as_ref() {
            if at.elapsed() < self.ttl {
                return result.clone();
            }
        }
        let result = probe(upstream, auth).await;
        if let Err(why) = &result {
            tracing::warn!(reason = %why.reason(), "readiness probe failed: {why}");
        }
        *last = Some((Instant::now(), result.clone()));
        result
    }

    /// Forgets the cached result (after new credentials were loaded).
    pub async fn forget(&self) {
        *self.last.lock().await = None;
    }
}

async fn probe(upstream: &Upstream, auth: &BasicAuth) -> Result<(), NotReady> {
    let resp = upstream
        .send(rewrite::readiness_probe(upstream, auth)?)
        .await?;
    let status = resp.status();
    // A guarded path may answer with a redirect (Pulp on object storage
    // redirects every content request, after checking the credentials).
    let ready = match upstream.readiness_path {
        Some(_) => status.is_success() || status.is_redirection(),
        None => status == StatusCode::OK,
    };
    if ready {
        Ok(())
    } else {
        Err(NotReady::Status(status))
    }
}

/// Answers a local endpoint on the main listener, for a request that
/// passed `policy::shape`. `None` when the request names none (or
/// `/metrics` lives on its own listener): the request goes on to the path
/// rules.
pub async fn answer(state: &State, parts: &request::Parts) -> Option<Response<ProxyBody>> {
    let endpoint = Endpoint::of(parts)?;
    if matches!(endpoint, Endpoint::Metrics | Endpoint::Fetches) && !state.serve_metrics {
        return None;
    }
    Some(respond(state, endpoint, parts).await)
}

/// Answers on `proxy.metrics_listen`, for a request that passed
/// `policy::shape`: `/metrics`, `/fetches` and `/healthz` only.
pub async fn metrics_only(state: &State, parts: &request::Parts) -> Response<ProxyBody> {
    match Endpoint::of(parts) {
        Some(e @ (Endpoint::Metrics | Endpoint::Fetches | Endpoint::Health)) => {
            respond(state, e, parts).await
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "only /metrics, /fetches and /healthz are served here\n".into(),
            TEXT,
        ),
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

async fn respond(state: &State, endpoint: Endpoint, parts: &request::Parts) -> Response<ProxyBody> {
    match endpoint {
        Endpoint::Fetches => fetches(state, parts),
        Endpoint::Health => text(StatusCode::OK, "ok\n".into(), TEXT),
        Endpoint::Ready => {
            let live = state.live();
            match state.readiness.check(&live.upstream, &live.auth).await {
                Ok(()) => text(StatusCode::OK, "ready\n".into(), TEXT),
                Err(why) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {}\n", why.reason()),
                    TEXT,
                ),
            }
        }
        Endpoint::Metrics => text(
            StatusCode::OK,
            state.metrics.encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    }
}

fn fetches(state: &State, parts: &request::Parts) -> Response<ProxyBody> {
    let Some(record) = &state.fetches else {
        return text(
            StatusCode::NOT_FOUND,
            "the fetch record is off (proxy.fetch_records = 0)\n".into(),
            TEXT,
        );
    };
    let since = match parts.uri.query().map(since) {
        None => 0,
        Some(Some(n)) => n,
        Some(None) => {
            return text(
                StatusCode::BAD_REQUEST,
                "use /fetches?since=CURSOR, CURSOR a number from the Fetches-Cursor header\n"
                    .into(),
                TEXT,
            )
        }
    };
    let page = if parts.method == Method::HEAD {
        record.head(since)
    } else {
        record.since(since)
    };
    let mut resp = local(
        StatusCode::OK,
        Bytes::from(page.lines),
        "application/x-ndjson",
    );
    for (name, value) in [
        ("fetches-cursor", page.cursor),
        ("fetches-lost", page.lost),
        ("fetches-epoch", page.epoch),
    ] {
        resp.headers_mut().insert(name, HeaderValue::from(value));
    }
    resp
}

/// The cursor of `since=N`, the only query `/fetches` takes.
fn since(query: &str) -> Option<u64> {
    query.strip_prefix("since=")?.parse().ok()
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<ProxyBody> {
    local(status, Bytes::from(body), content_type)
}

fn local(status: StatusCode, body: Bytes, content_type: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::Local(Full::new(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
