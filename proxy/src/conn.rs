//! Client connection deadlines that hyper cannot express alone.
//!
//! hyper's own header-read timer starts when it begins waiting for a
//! request, so it would also cut idle keep-alive connections at the header
//! timeout. Here the two are separate: an idle connection (no request in
//! progress) is closed after `idle_timeout` without a first byte; once the
//! first byte of a request head arrives, the whole head must arrive within
//! `header_timeout` (slowloris); while a request is being served, neither
//! applies (the upstream timeouts do).
//!
//! Writes have their own deadline: a write that stays pending (the client
//! stopped reading and the socket buffer is full) for longer than
//! `send_timeout` fails with [`Deadline::Send`], and hyper closes the
//! connection without writing more. Dropping the response body then drops
//! the upstream body with it, so the pooled upstream connection is closed,
//! never kept half-read.
//!
//! An idle connection can also be asked to close ([`Activity::reclaim`]):
//! the accept loop does that at `proxy.max_connections`, so idle keep-alive
//! connections never keep a new client out.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    // A request head has been parsed on this connection, ever; told on
    // `first` when that first happens.
    served: AtomicBool,
    first: tokio::sync::Notify,
    // Waiting for the first byte of a request: the only state in which the
    // connection may be reclaimed.
    idle: AtomicBool,
    // Asked to close at its next idle moment.
    reclaim: AtomicBool,
    // The send deadline closed it, for the access line.
    send_timed_out: AtomicBool,
    // Told when the connection turns idle, so that a new client waiting
    // for a slot can reclaim it.
    on_idle: Option<Arc<tokio::sync::Notify>>,
    // The read side parked while a request was served. When the last
    // request ends it must be woken, or the idle clock would only start at
    // the next socket event, which for an idle client never comes.
    parked: Mutex<Option<Waker>>,
}

impl std::fmt::Debug for Activity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activity")
            .field("requests", &self.0.requests.load(Ordering::SeqCst))
            .field("idle", &self.0.idle.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

/// Marks a request in progress while alive.
pub struct Busy(Arc<Inner>);

impl Activity {
    /// A connection's activity; `on_idle` is told each time it turns idle.
    pub fn new(on_idle: Arc<tokio::sync::Notify>) -> Self {
        Self(Arc::new(Inner {
            on_idle: Some(on_idle),
            ..Inner::default()
        }))
    }

    /// Whether the connection waits for a request and may be reclaimed.
    pub fn is_idle(&self) -> bool {
        self.0.idle.load(Ordering::SeqCst) && !self.0.reclaim.load(Ordering::SeqCst)
    }

    /// Asks the connection to close as soon as it is idle (at once if it
    /// is idle now); a request in progress is never cut.
    pub fn reclaim(&self) {
        self.0.reclaim.store(true, Ordering::SeqCst);
        self.wake();
    }

    fn wake(&self) {
        if let Some(waker) = self.0.parked.lock().ok().and_then(|mut p| p.take()) {
            waker.wake();
        }
    }

    fn set_idle(&self, idle: bool) {
        let was = self.0.idle.swap(idle, Ordering::SeqCst);
        if idle && !was {
            if let Some(n) = &self.0.on_idle {
                n.notify_waiters();
            }
        }
    }

    /// Whether it was asked to close to make room ([`Activity::reclaim`]).
    pub fn reclaimed(&self) -> bool {
        self.0.reclaim.load(Ordering::SeqCst)
    }

    /// A request head was parsed.
    pub fn busy(&self) -> Busy {
        self.0.requests.fetch_add(1, Ordering::SeqCst);
        if !self.0.served.swap(true, Ordering::SeqCst) {
            self.0.first.notify_waiters();
        }
        Busy(self.0.clone())
    }

    /// Resolves once the connection's first request head has been parsed
    /// (at once if it has been).
    pub async fn first_request(&self) {
        let notified = self.0.first.notified();
        tokio::pin!(notified);
        // Registered before the check, so a head parsed in between wakes it.
        notified.as_mut().enable();
        if self.0.served.load(Ordering::SeqCst) {
            return;
        }
        notified.await;
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

impl Busy {
    /// Whether the send deadline closed the connection.
    pub fn send_timed_out(&self) -> bool {
        self.0.send_timed_out.load(Ordering::SeqCst)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.requests.fetch_sub(1, Ordering::SeqCst) == 1 {
            Activity(self.0.clone()).wake();
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
    /// The client took nothing of the response within the send timeout.
    #[error("client read nothing for proxy.send_timeout_secs")]
    Send,
    /// Closed while idle to make room for a new client.
    #[error("idle keep-alive connection closed to admit a new client at proxy.max_connections")]
    Reclaimed,
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

/// The deadlines of one client connection.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Waiting for a request's first byte.
    pub idle: Duration,
    /// A request head, from its first byte.
    pub header: Duration,
    /// One write staying pending.
    pub send: Duration,
}

/// A client stream with the idle, header and send deadlines.
pub struct TimedIo<T> {
    inner: T,
    activity: Activity,
    phase: Phase,
    timer: Pin<Box<Sleep>>,
    deadlines: Deadlines,
    // Armed when a write goes pending, disarmed when one completes.
    send_timer: Option<Pin<Box<Sleep>>>,
}

impl<T> TimedIo<T> {
    /// Wraps a freshly accepted stream; it starts idle.
    pub fn new(inner: T, activity: Activity, deadlines: Deadlines) -> Self {
        activity.set_idle(true);
        Self {
            inner,
            activity,
            phase: Phase::Idle,
            timer: Box::pin(tokio::time::sleep(deadlines.idle)),
            deadlines,
            send_timer: None,
        }
    }

    fn arm(&mut self, phase: Phase) {
        self.phase = phase;
        self.activity.set_idle(phase == Phase::Idle);
        let after = match phase {
            Phase::Idle => self.deadlines.idle,
            _ => self.deadlines.header,
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
            if this.phase != Phase::Serving {
                this.phase = Phase::Serving;
                this.activity.set_idle(false);
            }
        } else if this.phase == Phase::Serving {
            this.arm(Phase::Idle);
        }
        if this.phase == Phase::Idle && this.activity.0.reclaim.load(Ordering::SeqCst) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                Deadline::Reclaimed,
            )));
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
                    Phase::Idle => {
                        // `reclaim` wakes it from another worker.
                        this.activity.park(cx.waker());
                        if this.activity.0.reclaim.load(Ordering::SeqCst) {
                            cx.waker().wake_by_ref();
                        }
                        Deadline::Idle
                    }
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

impl<T> TimedIo<T> {
    /// Passes a write's result on; a write pending for longer than the send
    /// deadline becomes an error.
    fn sending<R>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if result.is_ready() {
            self.send_timer = None;
            return result;
        }
        let send = self.deadlines.send;
        let timer = self
            .send_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(send)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.activity.0.send_timed_out.store(true, Ordering::SeqCst);
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, Deadline::Send)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.sending(cx, result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.sending(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            // A finished flush moved no bytes: the clock of a write still
            // pending goes on.
            Poll::Ready(r) => Poll::Ready(r),
            pending => this.sending(cx, pending),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn deadlines(idle: u64, header: u64) -> Deadlines {
        Deadlines {
            idle: Duration::from_secs(idle),
            header: Duration::from_secs(header),
            send: Duration::from_secs(30),
        }
    }

    fn deadline(err: &io::Error) -> Option<Deadline> {
        err.get_ref()?.downcast_ref::<Deadline>().copied()
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_pending_past_the_send_timeout_fails() {
        let (mut client, server) = tokio::io::duplex(16);
        let mut io = TimedIo::new(server, Activity::default(), deadlines(60, 10));
        // A reader that keeps up resets the clock on every write.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                client.read_exact(&mut buf).await.unwrap();
            }
            client
        });
        for _ in 0..4 {
            io.write_all(&[1; 16]).await.unwrap();
        }
        let _client = reader.await.unwrap();
        // Then it stops reading: the buffer fills and the write waits 30 s.
        io.write_all(&[1; 16]).await.unwrap();
        let started = Instant::now();
        let err = io.write_all(&[1; 16]).await.unwrap_err();
        assert_eq!(deadline(&err), Some(Deadline::Send));
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn reclaim_closes_an_idle_connection_but_not_a_busy_one() {
        let (mut client, server) = tokio::io::duplex(64);
        let on_idle = Arc::new(tokio::sync::Notify::new());
        let activity = Activity::new(on_idle.clone());
        let mut io = TimedIo::new(server, activity.clone(), deadlines(60, 10));
        let mut buf = [0u8; 8];
        client.write_all(b"GET").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 3);
        assert!(!activity.is_idle(), "a head is being read");
        let busy = activity.busy();
        activity.reclaim();
        let pending = tokio::time::timeout(Duration::from_secs(1), io.read(&mut buf)).await;
        assert!(pending.is_err(), "a request in progress was cut");
        let turned_idle = on_idle.notified();
        drop(busy);
        // Reclaimed the moment the request is over, long before idle_timeout.
        let started = Instant::now();
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(deadline(&err), Some(Deadline::Reclaimed));
        assert!(started.elapsed() < Duration::from_secs(1));
        turned_idle.await;

        // An idle connection parked in its read is woken and closed.
        let (_client, server) = tokio::io::duplex(64);
        let activity = Activity::new(on_idle);
        let mut io = TimedIo::new(server, activity.clone(), deadlines(60, 10));
        let read = tokio::spawn(async move { io.read(&mut [0u8; 8]).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(activity.is_idle());
        activity.reclaim();
        let err = read.await.unwrap().unwrap_err();
        assert_eq!(deadline(&err), Some(Deadline::Reclaimed));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_then_header_deadlines() {
        let (client, server) = tokio::io::duplex(64);
        let activity = Activity::default();
        let mut io = TimedIo::new(server, activity.clone(), deadlines(60, 10));
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
        let mut io = TimedIo::new(server, activity.clone(), deadlines(5, 1));
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
