//! One request through the phases: local endpoints (`health`) -> `policy`
//! (refuse early) -> `cache` (when on: answer from disk, revalidate, or
//! wait for another request's fetch) -> `rewrite` (strip, then inject) ->
//! `upstream` (send, with timeouts) -> `respond` (the status for any
//! failure) or stream the upstream's answer back (and into the cache).

use crate::access::Access;
use crate::body::{CachedBody, ResponseBody};
use crate::cache::entry::{self, Entry, Meta, Ranged};
use crate::cache::rules::{self, Freshness, Use};
use crate::cache::{Cache, FetchGuard, Fill, Lookup};
use crate::conn::Busy;
use crate::credentials::BasicAuth;
use crate::error::{ProxyError, Refusal, UpstreamError};
use crate::health::{self, Endpoint, Readiness};
use crate::metrics::Metrics;
use crate::upstream::Upstream;
use crate::{policy, respond, rewrite};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{Either, Empty, Full};
use hyper::body::Incoming;
use pulp_auth_config::{ClientNet, PathPrefix};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// The body type of every response the proxy sends: streamed from the
/// upstream, read from the cache, or made here.
pub type ProxyBody = Either<Either<ResponseBody, CachedBody>, Full<Bytes>>;

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
    /// The read-through cache, when `[cache]` is set and usable.
    pub cache: Option<Arc<Cache>>,
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
        cache: Option<Arc<Cache>>,
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
    let access = Access {
        peer,
        method: parts.method.clone(),
        path: decision.path.clone(),
        status: 0,
        started,
        upstream: None,
        cache: None,
        metrics: state.metrics.clone(),
    };
    let live = state.live();
    let upstream_req = rewrite::to_upstream(&parts, &decision, &live.upstream, &live.auth);
    let ctx = Ctx {
        state: &state,
        live: &live,
        access,
        busy,
    };
    match &state.cache {
        None => ctx.forward(upstream_req).await,
        Some(cache) => match rules::request_use(&parts.method, &parts.headers) {
            Use::Bypass => ctx.note("bypass").forward(upstream_req).await,
            Use::Lookup { fill } => {
                let freshness = rules::freshness(&decision.path, decision.query.as_deref());
                ctx.cached(cache, &parts, upstream_req, freshness, fill)
                    .await
            }
        },
    }
}

/// What every way of answering a forwarded request needs.
struct Ctx<'a> {
    state: &'a State,
    live: &'a Live,
    access: Access,
    busy: Busy,
}

type UpstreamRequest = Result<Request<Empty<Bytes>>, UpstreamError>;

impl Ctx<'_> {
    fn note(mut self, cache: &'static str) -> Self {
        self.access.cache = Some(cache);
        self
    }

    /// Sends the request and streams the answer back.
    async fn forward(mut self, req: UpstreamRequest) -> Response<ProxyBody> {
        match self.send(req).await {
            Ok(resp) => self.stream(resp, None),
            Err(e) => fail(self.access, e),
        }
    }

    /// The upstream's answer to `req`, its head rewritten for the client.
    async fn send(&mut self, req: UpstreamRequest) -> Result<Response<Incoming>, UpstreamError> {
        let upstream = &self.live.upstream;
        let sent = Instant::now();
        let result = match req {
            Ok(req) => upstream.send(req).await,
            Err(e) => Err(e),
        };
        self.access.upstream = Some(sent.elapsed());
        let resp = result?;
        if matches!(
            resp.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            // The upstream's WWW-Authenticate and body stay here: the client
            // must not be invited to supply credentials of its own.
            return Err(UpstreamError::CredentialsRefused(resp.status()));
        }
        self.state.metrics.upstream_latency(sent.elapsed());
        let (mut head, body) = resp.into_parts();
        rewrite::from_upstream(&mut head.headers);
        if head.status.is_redirection() {
            let moved = head
                .headers
                .get(header::LOCATION)
                .and_then(|l| rewrite::redirect(l, upstream.origin(), &self.state.public_base));
            if let Some(location) = moved {
                head.headers.insert(header::LOCATION, location);
            }
        }
        Ok(Response::from_parts(head, body))
    }

    fn stream(mut self, resp: Response<Incoming>, fill: Option<Fill>) -> Response<ProxyBody> {
        self.access.status = resp.status().as_u16();
        let (head, body) = resp.into_parts();
        let body = ResponseBody::new(
            body,
            self.live.upstream.body_timeout,
            self.access,
            self.busy,
            fill,
        );
        Response::from_parts(head, Either::Left(Either::Left(body)))
    }

    /// A cacheable GET: from disk when stored and fresh, after a 304 when
    /// stored and not content-addressed, else fetched (by one request per
    /// key at a time) and stored.
    async fn cached(
        mut self,
        cache: &Arc<Cache>,
        parts: &http::request::Parts,
        req: UpstreamRequest,
        freshness: Freshness,
        fill: bool,
    ) -> Response<ProxyBody> {
        let mut req = match req {
            Ok(r) => r,
            Err(e) => return fail(self.access, e),
        };
        let key = cache.key(&req.uri().to_string());
        match cache.lookup(&key, fill).await {
            Lookup::Pass => self.note("bypass").forward(Ok(req)).await,
            Lookup::Miss(guard) => {
                cache.metrics().cache_miss();
                self.access.cache = Some("miss");
                match self.send(Ok(req)).await {
                    Ok(resp) => {
                        let fill = store(cache, key, freshness, &resp, Some(guard));
                        self.stream(resp, fill)
                    }
                    Err(e) => fail(self.access, e),
                }
            }
            Lookup::Hit {
                entry,
                fetched_meanwhile,
            } if fetched_meanwhile || entry.meta.freshness == Freshness::Immutable => {
                let age = HeaderValue::from(entry.meta.age());
                let mut resp = self.note("hit").serve_stored(cache, parts, entry);
                // Served without asking the upstream (RFC 9111 5.1).
                resp.headers_mut().insert(header::AGE, age);
                resp
            }
            Lookup::Hit { entry, .. } => {
                revalidating(req.headers_mut(), &entry.meta);
                let resp = match self.send(Ok(req)).await {
                    Ok(resp) => resp,
                    Err(e) => {
                        cache.metrics().cache_revalidation("failed");
                        return fail(self.access, e);
                    }
                };
                let result = match resp.status() {
                    StatusCode::NOT_MODIFIED => {
                        cache.metrics().cache_revalidation("not_modified");
                        return self.note("revalidated").serve_stored(cache, parts, entry);
                    }
                    StatusCode::OK => "changed",
                    StatusCode::NOT_FOUND | StatusCode::GONE => "gone",
                    _ => "failed",
                };
                cache.metrics().cache_revalidation(result);
                let fill = store(cache, key.clone(), freshness, &resp, None);
                if fill.is_none() && result != "failed" {
                    cache.forget(&key);
                }
                self.note(result).stream(resp, fill)
            }
        }
    }

    /// Answers from a stored entry: 304 when the client's own validators
    /// match, the requested range, or the whole body.
    fn serve_stored(
        mut self,
        cache: &Cache,
        parts: &http::request::Parts,
        entry: Entry,
    ) -> Response<ProxyBody> {
        cache.metrics().cache_hit();
        let len = entry.meta.body_len;
        let mut resp = Response::new(Empty::<Bytes>::new());
        let headers = resp.headers_mut();
        for (name, value) in &entry.meta.headers {
            headers.append(name, value.clone());
        }
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        let (status, start, end) = if entry::not_modified(&parts.headers, &entry.meta.headers) {
            headers.remove(header::CONTENT_TYPE);
            headers.remove(header::CONTENT_DISPOSITION);
            (StatusCode::NOT_MODIFIED, 0, 0)
        } else {
            match entry::range(parts.headers.get(header::RANGE), len) {
                Ranged::Whole => (StatusCode::OK, 0, len),
                Ranged::Part(a, b) => {
                    headers.insert(
                        header::CONTENT_RANGE,
                        content_range(&format!("{a}-{b}/{len}")),
                    );
                    (StatusCode::PARTIAL_CONTENT, a, b + 1)
                }
                Ranged::Unsatisfiable => {
                    headers.insert(header::CONTENT_RANGE, content_range(&format!("*/{len}")));
                    (StatusCode::RANGE_NOT_SATISFIABLE, 0, 0)
                }
            }
        };
        if status != StatusCode::NOT_MODIFIED {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
        }
        *resp.status_mut() = status;
        self.access.status = status.as_u16();
        let body = CachedBody::new(entry, start, end, self.access, self.busy);
        resp.map(|_| Either::Left(Either::Right(body)))
    }
}

fn content_range(value: &str) -> HeaderValue {
    // Digits, `-`, `*` and `/` only.
    HeaderValue::from_str(&format!("bytes {value}")).expect("a valid header value")
}

/// Turns a client's request into a revalidation of `stored`: the client's
/// own validators and `Range` go (the cache answers those itself), the
/// stored validators are sent.
fn revalidating(headers: &mut http::HeaderMap, stored: &Meta) {
    for name in [
        header::RANGE,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
    ] {
        headers.remove(name);
    }
    if let Some(etag) = stored.headers.get(header::ETAG) {
        headers.insert(header::IF_NONE_MATCH, etag.clone());
    }
    if let Some(modified) = stored.headers.get(header::LAST_MODIFIED) {
        headers.insert(header::IF_MODIFIED_SINCE, modified.clone());
    }
}

/// A fill for the response when the rules allow storing it; otherwise the
/// guard is dropped here, so requests waiting for this fetch go on at once.
fn store(
    cache: &Arc<Cache>,
    key: String,
    freshness: Freshness,
    resp: &Response<Incoming>,
    guard: Option<FetchGuard>,
) -> Option<Fill> {
    match rules::storable(resp.status(), resp.headers(), freshness, cache.max_size()) {
        Ok(len) => {
            let freshness = if rules::forces_revalidation(resp.headers()) {
                Freshness::Revalidate
            } else {
                freshness
            };
            cache.begin(Meta::new(key, freshness, len, resp.headers()), guard)
        }
        Err(why) => {
            tracing::debug!(target: "cache", status = resp.status().as_u16(), "not stored: {why}");
            None
        }
    }
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
