//! The response body streamed back to the client: frames pass through as
//! they arrive (hyper only polls for the next one when the client has taken
//! the last, which is the backpressure), a stall longer than
//! `upstream.body_timeout_secs` aborts the transfer, and the access log
//! line is written when the transfer ends, so it carries the real byte
//! count and outcome.
//!
//! When the cache stores the response, the client does not read the
//! upstream body at all: the cache's fill does, at the upstream's pace, and
//! [`CachedBody`] follows the growing file (see [`crate::cache::fill`]).
//! [`CachedBody`] also serves a stored entry. [`ProxyBody`] is the one
//! body type every response has.

use crate::access::Access;
use crate::cache::entry::Entry;
use crate::cache::fill::FillError;
use crate::cache::Follower;
use crate::conn::Busy;
use crate::forward::UpstreamBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The body of every response the proxy sends.
pub enum ProxyBody {
    /// Streamed from the upstream, and into the cache when it stores it.
    Upstream(ResponseBody),
    /// Read from a stored entry.
    Cached(CachedBody),
    /// Made by the proxy: refusals, failures, its own endpoints.
    Local(Full<Bytes>),
}

impl From<Full<Bytes>> for ProxyBody {
    fn from(body: Full<Bytes>) -> Self {
        ProxyBody::Local(body)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ProxyBody::Upstream(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Cached(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Local(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(b) => b.is_end_stream(),
            ProxyBody::Cached(b) => b.is_end_stream(),
            ProxyBody::Local(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(b) => b.size_hint(),
            ProxyBody::Cached(b) => b.size_hint(),
            ProxyBody::Local(b) => b.size_hint(),
        }
    }
}

/// Why a body transfer stopped early. Returning it from `poll_frame` makes
/// hyper abort the client connection, so a truncated body is never mistaken
/// for a complete one.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// No bytes for too long.
    #[error("upstream body stalled for {0:?} (upstream.body_timeout_secs)")]
    Stalled(Duration),
    /// The upstream connection failed mid-body.
    #[error("upstream body failed: {0}")]
    Upstream(String),
    /// A stored entry could not be read to the end.
    #[error("reading the cache entry failed: {0}")]
    Cached(std::io::Error),
    /// The cache fill this transfer followed stopped early.
    #[error("{0}")]
    Fill(FillError),
}

/// An upstream body on its way to the client.
pub struct ResponseBody {
    inner: UpstreamBody,
    stall: Duration,
    timer: Pin<Box<Sleep>>,
    access: Access,
    bytes: u64,
    hasher: Option<ring::digest::Context>,
    outcome: Option<Result<(), String>>,
    // Keeps the connection out of its idle and header deadlines until the
    // transfer is over.
    _busy: Busy,
}

impl ResponseBody {
    /// Wraps `inner`; `access` is logged when the transfer ends.
    pub fn new(inner: UpstreamBody, stall: Duration, access: Access, busy: Busy) -> Self {
        Self {
            inner,
            stall,
            timer: Box::pin(tokio::time::sleep(stall)),
            hasher: access.hasher(),
            access,
            bytes: 0,
            outcome: None,
            _busy: busy,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                    if let Some(h) = &mut this.hasher {
                        h.update(data);
                    }
                }
                this.timer.as_mut().reset(Instant::now() + this.stall);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let err = BodyError::Upstream(crate::error::chain(&e));
                this.outcome = Some(Err(err.to_string()));
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => {
                this.outcome = Some(Ok(()));
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.timer.as_mut().poll(cx).is_ready() {
                    let err = BodyError::Stalled(this.stall);
                    this.outcome = Some(Err(err.to_string()));
                    return Poll::Ready(Some(Err(err)));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        let outcome = match self.outcome.take() {
            Some(o) => o,
            // HEAD, 304 and empty bodies may never be polled.
            None if self.inner.is_end_stream() => Ok(()),
            None => Err(departed(&self._busy)),
        };
        self.access.finish(self.bytes, outcome, self.hasher.take());
    }
}

/// Why a transfer the client did not take to the end stopped.
fn departed(busy: &Busy) -> String {
    if busy.send_timed_out() {
        crate::conn::Deadline::Send.to_string() + "; connection closed"
    } else {
        "client closed the connection before the end".to_string()
    }
}

/// Bytes read from a stored entry per frame.
const CHUNK: u64 = 64 * 1024;

/// Where a [`CachedBody`] reads.
pub enum Source {
    /// A stored entry.
    Stored(Entry),
    /// A fill in progress.
    Filling(Follower),
}

/// A body (or one range of it) read from the cache, stored or being filled,
/// on its way to the client.
pub struct CachedBody {
    source: Source,
    at: u64,
    // `None`: up to the end of a chunked fill.
    end: Option<u64>,
    access: Access,
    bytes: u64,
    hasher: Option<ring::digest::Context>,
    // Counted as served from the cache (not for the request whose fetch
    // fills it).
    hit: bool,
    outcome: Option<Result<(), String>>,
    _busy: Busy,
}

impl CachedBody {
    /// Serves body bytes `start..end` of `source`, or from `start` to the
    /// end of a chunked fill (`end` `None`); `hit` when it counts as served
    /// from the cache.
    pub fn new(
        source: Source,
        (start, end): (u64, Option<u64>),
        hit: bool,
        access: Access,
        busy: Busy,
    ) -> Self {
        Self {
            source,
            at: start,
            end,
            hasher: access.hasher(),
            access,
            bytes: 0,
            hit,
            outcome: None,
            _busy: busy,
        }
    }
}

impl Body for CachedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.is_end_stream() {
            this.outcome = Some(Ok(()));
            return Poll::Ready(None);
        }
        let left = this.end.map_or(u64::MAX, |end| end - this.at);
        let want = left.min(CHUNK) as usize;
        let read = match &mut this.source {
            Source::Stored(entry) => entry.read(this.at, want).map_err(BodyError::Cached),
            Source::Filling(follower) => match follower.poll_read(cx, this.at, want) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(Some(data))) => Ok(data),
                // A chunked fill's end is the end of its body.
                Poll::Ready(Ok(None)) if this.end.is_none() => {
                    this.outcome = Some(Ok(()));
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(None)) => Ok(Bytes::new()),
                Poll::Ready(Err(e)) => Err(BodyError::Fill(e)),
            },
        };
        match read {
            Ok(data) if !data.is_empty() => {
                // A relayed frame may be larger than `want`, never than
                // what is left: the fill checks the length.
                let left = left.min(usize::MAX as u64) as usize;
                let data = data.slice(..data.len().min(left));
                this.at += data.len() as u64;
                this.bytes += data.len() as u64;
                if let Some(h) = &mut this.hasher {
                    h.update(&data);
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            // Stored files are checked at open and fills end at their
            // length: shorter now means damage.
            Ok(_) => Poll::Ready(Some(Err(
                this.failed(BodyError::Cached(std::io::ErrorKind::UnexpectedEof.into()))
            ))),
            Err(e) => Poll::Ready(Some(Err(this.failed(e)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.end.is_some_and(|end| self.at >= end)
    }

    fn size_hint(&self) -> SizeHint {
        match self.end {
            Some(end) => SizeHint::with_exact(end - self.at),
            None => SizeHint::default(),
        }
    }
}

impl CachedBody {
    fn failed(&mut self, err: BodyError) -> BodyError {
        self.outcome = Some(Err(err.to_string()));
        err
    }
}

impl Drop for CachedBody {
    fn drop(&mut self) {
        let outcome = match self.outcome.take() {
            Some(o) => o,
            None if self.is_end_stream() => Ok(()),
            None => Err(departed(&self._busy)),
        };
        if self.hit {
            self.access.metrics.cache_served(self.bytes);
        }
        self.access.finish(self.bytes, outcome, self.hasher.take());
    }
}
