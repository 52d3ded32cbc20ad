//! One request through the phases, in order:
//! `policy::shape` (every request, local or forwarded) -> local endpoints
//! (`health`) -> `policy::path` (refuse early) -> `rewrite` (strip, then
//! inject) -> `cache` when on (answer from disk, revalidate, or wait for
//! another request's fetch) or straight to `forward` (send with timeouts,
//! stream back) -> `respond` for every failure.

use crate::access::Access;
use crate::body::ProxyBody;
use crate::conn::Busy;
use crate::forward::Exchange;
use crate::state::State;
use crate::{cache, health, policy, respond, rewrite};
use http::{Request, Response};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

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

    if let Err(refusal) = policy::shape(&parts, state.max_url_bytes) {
        return respond::refused(&state.metrics, peer, &parts, refusal);
    }

    if let Some(resp) = health::answer(&state, &parts).await {
        return resp;
    }

    let decision = match policy::path(&parts, &state.allowed_paths) {
        Ok(d) => d,
        Err(refusal) => return respond::refused(&state.metrics, peer, &parts, refusal),
    };

    let live = state.live();
    let upstream_req = rewrite::to_upstream(&parts, &decision, &live.upstream, &live.auth);

    let access = Access::new(
        peer,
        &parts.method,
        &decision.path,
        started,
        &state.metrics,
        state.fetches.as_ref(),
    );
    let exchange = Exchange::new(&state, &live, access, busy);
    match &state.cache {
        Some(c) => cache::answer(c, exchange, &parts, &decision, upstream_req).await,
        None => exchange.forward(upstream_req).await,
    }
}

/// Handles one request on `proxy.metrics_listen`: `policy::shape`, then
/// `/metrics` or `/healthz`.
pub async fn metrics(
    state: Arc<State>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let (parts, _body) = req.into_parts();
    if let Err(refusal) = policy::shape(&parts, state.max_url_bytes) {
        return respond::refused(&state.metrics, peer, &parts, refusal);
    }
    health::metrics_only(&state, &parts).await
}
