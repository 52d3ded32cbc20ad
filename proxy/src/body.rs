//! The response body streamed back to the client: frames pass through as
//! they arrive (hyper only polls for the next one when the client has taken
//! the last, which is the backpressure), a stall longer than
//! `upstream.body_timeout_secs` aborts the transfer, and the access log
//! line is written when the transfer ends, so it carries the real byte
//! count and outcome.
//!
//! When the cache stores the response, each frame is also written to the
//! cache's temporary file, and the entry is put in place only when the
//! transfer ended without error. [`CachedBody`] serves a stored entry.
//! [`ProxyBody`] is the one body type every response has.

use crate::access::Access;
use crate::cache::entry::Entry;
use crate::cache::Fill;
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
}

/// An upstream body on its way to the client.
pub struct ResponseBody {
    inner: UpstreamBody,
    stall: Duration,
    timer: Pin<Box<Sleep>>,
    access: Access,
    bytes: u64,
    outcome: Option<Result<(), String>>,
    fill: Option<Fill>,
    // Keeps the connection out of its idle and header deadlines until the
    // transfer is over.
    _busy: Busy,
}

impl ResponseBody {
    /// Wraps `inner`; `access` is logged when the transfer ends, and the
    /// body is stored through `fill` when given.
    pub fn new(
        inner: UpstreamBody,
        stall: Duration,
        access: Access,
        busy: Busy,
        fill: Option<Fill>,
    ) -> Self {
        Self {
            inner,
            stall,
            timer: Box::pin(tokio::time::sleep(stall)),
            access,
            bytes: 0,
            outcome: None,
            fill,
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
                    if let Some(fill) = this.fill.as_mut() {
                        fill.write(data);
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
        if let (Some(fill), Ok(())) = (self.fill.take(), &outcome) {
            fill.finish();
        }
        self.access.finish(self.bytes, outcome);
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

/// A stored body (or one range of it) on its way to the client.
pub struct CachedBody {
    entry: Entry,
    at: u64,
    end: u64,
    access: Access,
    bytes: u64,
    outcome: Option<Result<(), String>>,
    _busy: Busy,
}

impl CachedBody {
    /// Serves body bytes `start..end` of `entry`.
    pub fn new(entry: Entry, start: u64, end: u64, access: Access, busy: Busy) -> Self {
        Self {
            entry,
            at: start,
            end,
            access,
            bytes: 0,
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
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.at >= this.end {
            this.outcome = Some(Ok(()));
            return Poll::Ready(None);
        }
        let want = (this.end - this.at).min(CHUNK) as usize;
        match this.entry.read(this.at, want) {
            Ok(data) if !data.is_empty() => {
                this.at += data.len() as u64;
                this.bytes += data.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            // The file was checked at open; shorter now means damage.
            Ok(_) => Poll::Ready(Some(Err(
                this.failed(std::io::ErrorKind::UnexpectedEof.into())
            ))),
            Err(e) => Poll::Ready(Some(Err(this.failed(e)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.at >= self.end
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.end - self.at)
    }
}

impl CachedBody {
    fn failed(&mut self, e: std::io::Error) -> BodyError {
        let err = BodyError::Cached(e);
        self.outcome = Some(Err(err.to_string()));
        err
    }
}

impl Drop for CachedBody {
    fn drop(&mut self) {
        let outcome = match self.outcome.take() {
            Some(o) => o,
            None if self.at >= self.end => Ok(()),
            None => Err(departed(&self._busy)),
        };
        self.access.metrics.cache_served(self.bytes);
        self.access.finish(self.bytes, outcome);
    }
}
