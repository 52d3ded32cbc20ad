//! Client connection deadlines that hyper cannot express alone.
//!
//! hyper's own header-read timer starts when it begins waiting for a
//! request, so it would also cut idle keep-alive connections at the header
//! timeout. Here the two are separate: an idle connection (no request in
//! progress) is closed after `idle_timeout` without a first byte; once the
//! first byte of a request head arrives, the whole head must arrive within
//! `header_timeout` (slowloris); while a request is being served, neither
//! applies (the upstream timeouts do).

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Counts requests in progress on one connection. The service holds a
/// [`Busy`] guard from the moment a head is parsed until its response body
/// is done.
#[derive(Clone, Default)]
pub struct Activity(Arc<Inner>);

#[derive(Default)]
struct Inner {
    requests: AtomicUsize,
    // The read side parked while a request was served. When the last
    // request ends it must be woken, or the idle clock would only start at
    // the next socket event, which for an idle client never comes.
    parked: Mutex<Option<Waker>>,
}

/// Marks a request in progress while alive.
pub struct Busy(Arc<Inner>);

impl Activity {
    /// A request head was parsed.
    pub fn busy(&self) -> Busy {
        self.0.requests.fetch_add(1, Ordering::SeqCst);
        Busy(self.0.clone())
    }

    fn is_busy(&self) -> bool {
        self.0.requests.load(Ordering::SeqCst) > 0
    }

    fn park(&self, waker: &Waker) {
        if let Ok(mut parked) = self.0.parked.lock() {
            *parked = Some(waker.clone());
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.requests.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Some(waker) = self.0.parked.lock().ok().and_then(|mut p| p.take()) {
                waker.wake();
            }
        }
    }
}

/// Which deadline ran out; carried inside the `io::Error` hyper reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Deadline {
    /// No request started within the idle timeout.
    #[error("idle keep-alive connection closed after proxy.idle_timeout_secs")]
    Idle,
    /// A request head did not complete within the header timeout.
    #[error("request head not complete within proxy.header_timeout_secs")]
    Header,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first byte of a request.
    Idle,
    /// Reading a request head.
    Head,
    /// A request is being served.
    Serving,
}

/// A client stream with the idle and header deadlines.
pub struct TimedIo<T> {
    inner: T,
    activity: Activity,
    phase: Phase,
    timer: Pin<Box<Sleep>>,
    idle: Duration,
    header: Duration,
}

impl<T> TimedIo<T> {
    /// Wraps a freshly accepted stream; it starts idle.
    pub fn new(inner: T, activity: Activity, idle: Duration, header: Duration) -> Self {
        Self {
            inner,
            activity,
            phase: Phase::Idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            idle,
            header,
        }
    }

    fn arm(&mut self, phase: Phase) {
        self.phase = phase;
        let after = match phase {
            Phase::Idle => self.idle,
            _ => self.header,
        };
        self.timer.as_mut().reset(Instant::now() + after);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.activity.is_busy() {
            this.phase = Phase::Serving;
        } else if this.phase == Phase::Serving {
            this.arm(Phase::Idle);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.phase == Phase::Idle && buf.filled().len() > before {
                    this.arm(Phase::Head);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let deadline = match this.phase {
                    Phase::Serving => {
                        this.activity.park(cx.waker());
                        if !this.activity.is_busy() {
                            // The request ended between the check above and
                            // parking: go round again rather than sleep.
                            cx.waker().wake_by_ref();
                        }
                        return Poll::Pending;
                    }
                    Phase::Idle => Deadline::Idle,
                    Phase::Head => Deadline::Header,
                };
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, deadline)))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn idle_then_header_deadlines() {
        let (client, server) = tokio::io::duplex(64);
        let activity = Activity::default();
        let mut io = TimedIo::new(
            server,
            activity.clone(),
            Duration::from_secs(60),
            Duration::from_secs(10),
        );
        let mut client = client;
        let mut buf = [0u8; 8];

        // Idle for 59 s is fine; then a first byte starts the header clock.
        tokio::time::sleep(Duration::from_secs(59)).await;
        client.write_all(b"G").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 1);
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(
            err.get_ref().unwrap().downcast_ref::<Deadline>(),
            Some(&Deadline::Header)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn serving_has_no_deadline_and_idle_restarts_after() {
        let (mut client, server) = tokio::io::duplex(64);
        let activity = Activity::default();
        let mut io = TimedIo::new(
            server,
            activity.clone(),
            Duration::from_secs(5),
            Duration::from_secs(1),
        );
        let mut buf = [0u8; 8];
        client.write_all(b"GET").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 3);
        let busy = activity.busy();
        // A long upstream transfer: reads stay pending without a deadline.
        let pending = tokio::time::timeout(Duration::from_secs(100), io.read(&mut buf)).await;
        assert!(pending.is_err(), "deadline applied while serving");
        drop(busy);
        let started = Instant::now();
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(
            err.get_ref().unwrap().downcast_ref::<Deadline>(),
            Some(&Deadline::Idle)
        );
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }
}
