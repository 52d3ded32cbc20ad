//! The response body streamed back to the client: frames pass through as
//! they arrive (hyper only polls for the next one when the client has taken
//! the last, which is the backpressure), a stall longer than
//! `upstream.body_timeout_secs` aborts the transfer, and the access log
//! line is written when the transfer ends, so it carries the real byte
//! count and outcome.

use crate::access::Access;
use crate::conn::Busy;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

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
}

/// An upstream body on its way to the client.
pub struct ResponseBody {
    inner: Incoming,
    stall: Duration,
    timer: Pin<Box<Sleep>>,
    access: Access,
    bytes: u64,
    outcome: Option<Result<(), String>>,
    // Keeps the connection out of its idle and header deadlines until the
    // transfer is over.
    _busy: Busy,
}

impl ResponseBody {
    /// Wraps `inner`; `access` is logged when the transfer ends.
    pub fn new(inner: Incoming, stall: Duration, access: Access, busy: Busy) -> Self {
        Self {
            inner,
            stall,
            timer: Box::pin(tokio::time::sleep(stall)),
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
            None => Err("client closed the connection before the end".to_string()),
        };
        self.access.finish(self.bytes, outcome);
    }
}

use std::future::Future as _;
