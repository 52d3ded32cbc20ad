//! The forward phase: one request sent to the upstream and its answer
//! streamed back. [`Exchange`] carries what every way of answering a
//! forwarded request needs, so the cache's paths and the plain one share
//! it.

use crate::access::Access;
use crate::body::{CachedBody, ProxyBody, ResponseBody, Source};
use crate::cache::{Fill, Outcome};
use crate::conn::Busy;
use crate::error::UpstreamError;
use crate::scrub::{self, ScrubbedBody};
use crate::state::{Live, State};
use crate::{framing, respond, rewrite};
use bytes::Bytes;
use http::{header, response, Request, Response};
use http_body_util::Empty;
use std::time::Instant;

/// The request as `rewrite` built it for the upstream.
pub type UpstreamRequest = Result<Request<Empty<Bytes>>, UpstreamError>;

/// An upstream response body as the rest of the proxy sees it: what the
/// client is sent and what the cache stores, already searched for the
/// proxy's credential (`scrub`), so neither ever holds it.
pub type UpstreamBody = ScrubbedBody;

/// One forwarded request on its way.
pub struct Exchange<'a> {
    state: &'a State,
    live: &'a Live,
    access: Access,
    busy: Busy,
    storage_conditionals: Option<http::HeaderMap>,
}

impl<'a> Exchange<'a> {
    /// Starts an exchange; `access` is logged when it ends.
    pub fn new(state: &'a State, live: &'a Live, access: Access, busy: Busy) -> Self {
        Self {
            state,
            live,
            access,
            busy,
            storage_conditionals: None,
        }
    }

    /// Records what the cache did, for the access line.
    pub fn note(&mut self, outcome: Outcome) {
        self.access.cache = Some(outcome);
    }

    /// Storage hops of this exchange carry `conditionals` (a cached
    /// entry's storage validators) where the upstream request carries the
    /// upstream's own.
    pub fn storage_conditionals(&mut self, conditionals: http::HeaderMap) {
        self.storage_conditionals = Some(conditionals);
    }

    /// Where the upstream's redirect led, once [`Exchange::send`] followed
    /// one.
    pub fn followed(&self) -> Option<&crate::redirect::Followed> {
        self.access.storage.as_ref()
    }

    /// Sends the request and streams the answer back.
    pub async fn forward(mut self, req: UpstreamRequest) -> Response<ProxyBody> {
        match self.send(req).await {
            Ok(resp) => self.stream(resp, None),
            Err(e) => self.fail(e),
        }
    }

    /// The upstream's answer to `req`, its head rewritten for the client:
    /// refused unless its framing can be forwarded faithfully, stripped
    /// of hop-by-hop headers and cookies, and scrubbed of the proxy's
    /// credential, head and body.
    pub async fn send(
        &mut self,
        req: UpstreamRequest,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let upstream = &self.live.upstream;
        let sent = Instant::now();
        let result = match req {
            Ok(req) => {
                let method = req.method().clone();
                let replay = crate::redirect::Replay::of(&req, self.storage_conditionals.take());
                match upstream.send(req).await {
                    Ok(resp) => {
                        self.access.upstream = Some(sent.elapsed());
                        crate::redirect::follow(upstream, &replay, resp, &self.state.metrics)
                            .await
                            .map(|(resp, followed)| (method, resp, followed))
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        if self.access.upstream.is_none() {
            self.access.upstream = Some(sent.elapsed());
        }
        let (method, resp, followed) = result?;
        if let Some(followed) = followed {
            self.access.storage = Some(followed);
        }
        self.state.metrics.upstream_latency(sent.elapsed());
        // Before the headers are rewritten: the check reads the framing
        // headers that `from_upstream` removes.
        framing::check(&method, resp.status(), resp.headers()).map_err(UpstreamError::Framing)?;
        let (mut head, body) = resp.into_parts();
        rewrite::from_upstream(&mut head.headers);
        let forms = self.live.auth.forms();
        scrub::head(&mut head, forms, &self.access.path);
        let body = ScrubbedBody::new(body, forms.clone(), &self.access.path);
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

    /// Streams the upstream's body to the client; when the cache stores it,
    /// `fill` reads the body at the upstream's pace and the client follows
    /// the fill.
    pub fn stream(
        mut self,
        resp: Response<UpstreamBody>,
        fill: Option<Fill>,
    ) -> Response<ProxyBody> {
        self.access.status = resp.status().as_u16();
        let (head, body) = resp.into_parts();
        let stall = self.live.upstream.body_timeout;
        let body = match fill {
            Some(fill) => {
                let len = fill.body_len();
                let source = Source::Filling(fill.start(body, stall));
                let body = CachedBody::new(source, (0, len), false, self.access, self.busy);
                ProxyBody::Cached(body)
            }
            None => ProxyBody::Upstream(ResponseBody::new(body, stall, self.access, self.busy)),
        };
        Response::from_parts(head, body)
    }

    /// Answers with `head` and body bytes `start..end` from the cache: a
    /// stored entry, or another request's fill.
    pub fn stored(
        mut self,
        head: response::Parts,
        source: Source,
        range: (u64, Option<u64>),
    ) -> Response<ProxyBody> {
        self.access.status = head.status.as_u16();
        let body = CachedBody::new(source, range, true, self.access, self.busy);
        Response::from_parts(head, ProxyBody::Cached(body))
    }

    /// The upstream failed: the status for the client, the cause for the
    /// log.
    pub fn fail(self, cause: UpstreamError) -> Response<ProxyBody> {
        respond::failed(self.access, &cause)
    }
}
