//! One request through the phases: local endpoints (`health`) -> `policy`
//! (refuse early) -> `rewrite` (strip, then inject) -> `upstream` (send,
//! with timeouts) -> `respond` (the status for any failure) or stream the
//! upstream's answer back.

use crate::access::Access;
use crate::body::ResponseBody;
use crate::conn::Busy;
use crate::credentials::BasicAuth;
use crate::error::{ProxyError, Refusal, UpstreamError};
use crate::health::{self, Endpoint, Readiness};
use crate::metrics::Metrics;
use crate::upstream::Upstream;
use crate::{policy, respond, rewrite};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use pulp_auth_config::{ClientNet, PathPrefix};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// The body type of every response the proxy sends.
pub type ProxyBody = Either<ResponseBody, Full<Bytes>>;

/// What SIGHUP replaces: the upstream client (trust anchors) and the
/// credentials. Requests take a snapshot when they start, so a reload never
/// touches a transfer in flight.
#[derive(Debug)]
pub struct Live {
    /// The upstream client.
    pub upstream: Upstream,
    /// The credentials to inject.
    pub auth: BasicAuth,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upstream({})", self.origin())
    }
}

/// Everything a request needs, shared by all connections.
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
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
    /// Whether this listener answers `/metrics` (no `metrics_listen`).
    pub serve_metrics: bool,
    readiness: Arc<Readiness>,
}

impl State {
    /// Builds the shared state.
    pub fn new(
        live: Live,
        proxy: &pulp_auth_config::Proxy,
        public_base: String,
        metrics: Arc<Metrics>,
        readiness: Arc<Readiness>,
    ) -> Self {
        Self {
            live: RwLock::new(Arc::new(live)),
            allowed_paths: proxy.allowed_paths.clone(),
            allowed_clients: proxy.allowed_clients.clone(),
            max_url_bytes: proxy.max_url_bytes,
            public_base,
            metrics,
            serve_metrics: proxy.metrics_listen.is_none(),
            readiness,
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

/// Handles one request. Never fails: every outcome is a response.
pub async fn handle(
    state: Arc<State>,
    peer: SocketAddr,
    req: Request<Incoming>,
    busy: Busy,
) -> Response<ProxyBody> {
    let started = Instant::now();
    // GET and HEAD carry no body (the policy refuses any that announce one),
    // so the request body is dropped unread.
    let (parts, _body) = req.into_parts();

    if parts.method == Method::GET || parts.method == Method::HEAD {
        if let Some(endpoint) = Endpoint::of(parts.uri.path()) {
            if endpoint != Endpoint::Metrics || state.serve_metrics {
                return local(&state, endpoint).await.map(Either::Right);
            }
        }
    }

    let decision = match policy::check(&parts, &state.allowed_paths, state.max_url_bytes) {
        Ok(d) => d,
        Err(refusal) => return refuse(&state.metrics, peer, &parts, refusal),
    };
    let mut access = Access {
        peer,
        method: parts.method.clone(),
        path: decision.path.clone(),
        status: 0,
        started,
        upstream: None,
        metrics: state.metrics.clone(),
    };

    let live = state.live();
    let sent = Instant::now();
    let result = match rewrite::to_upstream(&parts, &decision, &live.upstream, &live.auth) {
        Ok(upstream_req) => live.upstream.send(upstream_req).await,
        Err(e) => Err(e),
    };
    access.upstream = Some(sent.elapsed());
    let resp = match result {
        Ok(resp)
            if matches!(
                resp.status(),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            ) =>
        {
            // The upstream's WWW-Authenticate and body stay here: the client
            // must not be invited to supply credentials of its own.
            return fail(access, UpstreamError::CredentialsRefused(resp.status()));
        }
        Ok(resp) => resp,
        Err(e) => return fail(access, e),
    };
    state.metrics.upstream_latency(sent.elapsed());

    let (mut head, body) = resp.into_parts();
    rewrite::from_upstream(&mut head.headers);
    if head.status.is_redirection() {
        let moved = head
            .headers
            .get(http::header::LOCATION)
            .and_then(|l| rewrite::redirect(l, live.upstream.origin(), &state.public_base));
        if let Some(location) = moved {
            head.headers.insert(http::header::LOCATION, location);
        }
    }
    access.status = head.status.as_u16();
    let body = ResponseBody::new(body, live.upstream.body_timeout, access, busy);
    Response::from_parts(head, Either::Left(body))
}

/// Answers `/healthz`, `/readyz` and `/metrics`.
pub async fn local(state: &State, endpoint: Endpoint) -> Response<Full<Bytes>> {
    match endpoint {
        Endpoint::Health => {
            health::text(StatusCode::OK, "ok\n".into(), "text/plain; charset=utf-8")
        }
        Endpoint::Ready => {
            let live = state.live();
            match state.readiness.check(&live.upstream, &live.auth).await {
                Ok(()) => health::text(
                    StatusCode::OK,
                    "ready\n".into(),
                    "text/plain; charset=utf-8",
                ),
                Err(why) => health::text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {why}\n"),
                    "text/plain; charset=utf-8",
                ),
            }
        }
        Endpoint::Metrics => health::text(
            StatusCode::OK,
            state.metrics.encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    }
}

/// A request refused by policy: logged at info, nothing sent upstream.
pub fn refuse(
    metrics: &Metrics,
    peer: SocketAddr,
    parts: &http::request::Parts,
    refusal: Refusal,
) -> Response<ProxyBody> {
    let resp = respond::error_response(&ProxyError::Refused(refusal.clone()));
    metrics.refusal(refusal.rule());
    metrics.request(&parts.method, resp.status().as_u16(), 0);
    tracing::info!(
        target: "access",
        peer = %peer,
        method = %parts.method,
        target = ?shorten(&parts.uri.to_string()),
        status = resp.status().as_u16(),
        rule = %refusal.rule(),
        reason = %refusal,
        "refused"
    );
    resp.map(Either::Right)
}

/// An upstream failure: one line that names the cause for the operator.
fn fail(access: Access, cause: UpstreamError) -> Response<ProxyBody> {
    let err = ProxyError::Upstream(cause);
    let resp = respond::error_response(&err);
    let status = resp.status().as_u16();
    let ProxyError::Upstream(cause) = err else {
        unreachable!("constructed as Upstream above")
    };
    access.metrics.upstream_error(cause.kind());
    access.metrics.request(&access.method, status, 0);
    tracing::error!(
        target: "access",
        peer = %access.peer,
        method = %access.method,
        path = %access.path,
        status,
        kind = %cause.kind(),
        duration_ms = access.started.elapsed().as_millis() as u64,
        "upstream failed: {cause}"
    );
    resp.map(Either::Right)
}

/// Keeps refused targets readable in the log; the rule says why anyway.
fn shorten(target: &str) -> &str {
    match target.char_indices().nth(256) {
        Some((i, _)) => &target[..i],
        None => target,
    }
}
