//! One request through the phases: `policy` (refuse early) -> `rewrite`
//! (strip, then inject) -> `upstream` (send, with timeouts) -> `respond`
//! (the status for any failure) or stream the upstream's answer back.

use crate::access::Access;
use crate::body::ResponseBody;
use crate::conn::Busy;
use crate::credentials::BasicAuth;
use crate::error::{ProxyError, Refusal, UpstreamError};
use crate::upstream::Upstream;
use crate::{policy, respond, rewrite};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use pulp_auth_config::{ClientNet, PathPrefix};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// The body type of every response the proxy sends.
pub type ProxyBody = Either<ResponseBody, Full<Bytes>>;

/// Everything a request needs, shared by all connections.
#[derive(Debug)]
pub struct State {
    /// The upstream client.
    pub upstream: Upstream,
    /// The credentials to inject.
    pub auth: BasicAuth,
    /// `proxy.allowed_paths`.
    pub allowed_paths: Vec<PathPrefix>,
    /// `proxy.allowed_clients`; `None` serves every peer.
    pub allowed_clients: Option<Vec<ClientNet>>,
    /// `proxy.max_url_bytes`.
    pub max_url_bytes: usize,
    /// `http://ADDR` of the proxy itself, for rewriting redirects.
    pub public_base: String,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upstream({})", self.origin())
    }
}

impl State {
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

    let decision = match policy::check(&parts, &state.allowed_paths, state.max_url_bytes) {
        Ok(d) => d,
        Err(refusal) => return refuse(peer, &parts, refusal),
    };
    let mut access = Access {
        peer,
        method: parts.method.clone(),
        path: decision.path.clone(),
        status: 0,
        started,
        upstream: None,
    };

    let sent = Instant::now();
    let result = match rewrite::to_upstream(&parts, &decision, &state.upstream, &state.auth) {
        Ok(upstream_req) => state.upstream.send(upstream_req).await,
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

    let (mut head, body) = resp.into_parts();
    rewrite::from_upstream(&mut head.headers);
    if head.status.is_redirection() {
        let moved = head
            .headers
            .get(http::header::LOCATION)
            .and_then(|l| rewrite::redirect(l, state.upstream.origin(), &state.public_base));
        if let Some(location) = moved {
            head.headers.insert(http::header::LOCATION, location);
        }
    }
    access.status = head.status.as_u16();
    let body = ResponseBody::new(body, state.upstream.body_timeout, access, busy);
    Response::from_parts(head, Either::Left(body))
}

/// A request refused by policy: logged at info, nothing sent upstream.
pub fn refuse(
    peer: SocketAddr,
    parts: &http::request::Parts,
    refusal: Refusal,
) -> Response<ProxyBody> {
    let resp = respond::error_response(&ProxyError::Refused(refusal.clone()));
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
    let duration_ms = access.started.elapsed().as_millis() as u64;
    tracing::error!(
        target: "access",
        peer = %access.peer,
        method = %access.method,
        path = %access.path,
        status = respond::status(&ProxyError::Upstream(cause.clone())).as_u16(),
        kind = %cause.kind(),
        duration_ms,
        "upstream failed: {cause}"
    );
    respond::error_response(&ProxyError::Upstream(cause)).map(Either::Right)
}

/// Keeps refused targets readable in the log; the rule says why anyway.
fn shorten(target: &str) -> &str {
    match target.char_indices().nth(256) {
        Some((i, _)) => &target[..i],
        None => target,
    }
}
