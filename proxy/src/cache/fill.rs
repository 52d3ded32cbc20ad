//! Filling the cache at the upstream's pace. A miss that may be stored
//! starts a fill: a task on the worker's runtime that reads the upstream
//! body into a temporary file as fast as the upstream sends it, honouring
//! `upstream.body_timeout_secs` for stalls. Clients never read the upstream
//! body themselves: the one that caused the fill and every request that
//! arrives meanwhile are [`Follower`]s of the growing file, told through a
//! watch channel how many body bytes are on disk and how the fill ended.
//! So a client that reads slowly, stalls or leaves delays nobody: the fill
//! goes on to the end (bounded by the body timeout between chunks) and
//! holds no connection slot, and a later client reads what is on disk.
//!
//! A fill that fails (the upstream breaks, stalls or sends less than its
//! `Content-Length`) aborts every follower's transfer and stores nothing:
//! never a silently short file. When the disk fails part way (full, I/O
//! error), nothing is stored either; the followers that joined are
//! aborted, and the client that caused the fill gets the rest relayed
//! from the upstream at its own pace, as without a cache, so it still
//! receives every byte.
//!
//! A chunked body (no `Content-Length`) is stored when its last chunk
//! arrives, its length written into the entry's head then; one that
//! outgrows `cache.max_size` is given up as a failed disk is.

use super::entry::Meta;
use super::{Cache, FetchGuard, InFlight};
use crate::forward::UpstreamBody;
use bytes::Bytes;
use http_body_util::BodyExt as _;
use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Why a fill, and with it every transfer following it, stopped early.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FillError {
    /// No bytes for too long.
    #[error("upstream body stalled for {0:?} (upstream.body_timeout_secs)")]
    Stalled(Duration),
    /// The upstream connection failed mid-body.
    #[error("upstream body failed: {0}")]
    Upstream(String),
    /// The body ended before its `Content-Length`, or went past it.
    #[error("upstream body was {got} bytes, not the {expected} its Content-Length announced")]
    Length {
        /// Bytes received.
        got: u64,
        /// `Content-Length`.
        expected: u64,
    },
    /// The fill stopped storing part way (the disk failed, or a chunked
    /// body outgrew `cache.max_size`) while other requests followed it.
    #[error("storing the cache entry stopped part way; this transfer followed it")]
    Disk,
    /// The temporary file could not be read back.
    #[error("reading the cache entry being filled failed: {0}")]
    Read(String),
    /// The fill's task is gone (the worker is shutting down).
    #[error("the cache fill this transfer followed stopped")]
    Gone,
}

/// What a fill has done so far.
#[derive(Debug, Clone)]
struct Progress {
    /// Body bytes on disk.
    on_disk: u64,
    state: State,
}

#[derive(Debug, Clone)]
enum State {
    Running,
    /// Every body byte is on disk.
    Complete,
    /// The disk failed; the rest goes to the first client only.
    Relayed,
    Failed(FillError),
}

/// A response being written to the cache, as its followers see it.
#[derive(Debug)]
pub struct Growing {
    /// Its head: what the stored entry will hold.
    pub meta: Meta,
    // `None` when nothing reaches the disk.
    file: Option<File>,
    body_at: u64,
    // `None` for a chunked body.
    len: Option<u64>,
    progress: watch::Receiver<Progress>,
}

/// A response on its way to disk. Dropped without [`Fill::finish`], it
/// removes its file.
pub struct Fill {
    cache: Arc<Cache>,
    name: String,
    temp: PathBuf,
    meta: Meta,
    // The `Content-Length`; `None` for a chunked body.
    expected: Option<u64>,
    head_len: u64,
    written: u64,
    file: Option<File>,
    // Released after the rename, so waiters find the entry.
    guard: Option<FetchGuard>,
}

impl Fill {
    /// A fill writing `meta`'s entry into `file` at `temp`; the head is
    /// written here, and again at the end of a chunked body (`expected`
    /// `None`) with its length. `None` (after a warning) when that write
    /// fails.
    pub(super) fn new(
        cache: Arc<Cache>,
        name: String,
        temp: PathBuf,
        file: File,
        mut meta: Meta,
        expected: Option<u64>,
        guard: Option<FetchGuard>,
    ) -> Option<Fill> {
        meta.body_len = expected.unwrap_or(0);
        let head = meta.encode();
        let mut fill = Fill {
            cache,
            name,
            temp,
            meta,
            expected,
            head_len: head.len() as u64,
            written: 0,
            file: Some(file),
            guard,
        };
        match fill.write(&head) {
            Ok(()) => Some(fill),
            Err(_) => None,
        }
    }

    /// The body length the entry must have; `None` for a chunked body.
    pub fn body_len(&self) -> Option<u64> {
        self.expected
    }

    /// Starts reading `body` into the file on a task of its own and
    /// returns the follower for the request that fetched it; requests
    /// waiting for this key follow it from now on.
    pub fn start(mut self, body: UpstreamBody, stall: Duration) -> Follower {
        let reader = self.file.as_ref().map(File::try_clone);
        let reader = match reader {
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                // Without a second handle nobody can follow: hand the
                // whole body to the client.
                self.abandon(&e);
                return self.relay_only(body, stall);
            }
            None => return self.relay_only(body, stall),
        };
        let (tx, rx) = watch::channel(Progress {
            on_disk: 0,
            state: State::Running,
        });
        let growing = Arc::new(Growing {
            meta: self.meta.clone(),
            file: Some(reader),
            body_at: self.head_len,
            len: self.expected,
            progress: rx,
        });
        if let Some(guard) = self.guard.as_mut() {
            guard.filling(growing.clone());
        }
        let (relay_tx, relay_rx) = mpsc::channel(2);
        let mut first = Follower::new(growing);
        first.relay = Some(relay_rx);
        tokio::spawn(self.run(Box::pin(body), stall, tx, relay_tx));
        first
    }

    /// A follower that only relays: nothing reaches the disk.
    fn relay_only(self, body: UpstreamBody, stall: Duration) -> Follower {
        let (tx, rx) = watch::channel(Progress {
            on_disk: 0,
            state: State::Relayed,
        });
        let growing = Arc::new(Growing {
            meta: self.meta.clone(),
            file: None,
            body_at: 0,
            len: self.expected,
            progress: rx,
        });
        drop(self);
        let (relay_tx, relay_rx) = mpsc::channel(2);
        let mut first = Follower::new(growing);
        first.relay = Some(relay_rx);
        tokio::spawn(async move {
            relay(Box::pin(body), Bytes::new(), stall, relay_tx).await;
            drop(tx);
        });
        first
    }

    async fn run(
        mut self,
        mut body: Pin<Box<UpstreamBody>>,
        stall: Duration,
        progress: watch::Sender<Progress>,
        to_first: mpsc::Sender<Result<Bytes, FillError>>,
    ) {
        loop {
            let data = match next(&mut body, stall).await {
                Ok(Some(data)) => data,
                Ok(None) => break,
                Err(e) => return self.fail(&progress, e),
            };
            let got = self.body_written() + data.len() as u64;
            match self.expected {
                Some(expected) if got > expected => {
                    return self.fail(&progress, FillError::Length { got, expected });
                }
                None if got > self.cache.max_size => {
                    tracing::debug!(target: "cache", entry = %self.name, "not storing a chunked body larger than cache.max_size");
                    self.give_up();
                }
                _ => {}
            }
            if self.write(&data).is_err() {
                // `on_disk` does not count this frame: it goes whole.
                progress.send_modify(|p| p.state = State::Relayed);
                drop(self);
                return relay(body, data, stall, to_first).await;
            }
            progress.send_modify(|p| p.on_disk = got);
        }
        let got = self.body_written();
        match self.expected {
            Some(expected) if got != expected => {
                return self.fail(&progress, FillError::Length { got, expected });
            }
            Some(_) => {}
            None => {
                // The head's fields have fixed widths: same length, new
                // value.
                self.meta.body_len = got;
                let head = self.meta.encode();
                if let Some(Err(e)) = self.file.as_ref().map(|f| f.write_all_at(&head, 0)) {
                    self.abandon(&e);
                }
            }
        }
        progress.send_modify(|p| p.state = State::Complete);
        self.finish();
    }

    /// Stores nothing and aborts the followers. New requests for the key
    /// fetch on their own from here on, not follow this fill.
    fn fail(mut self, progress: &watch::Sender<Progress>, e: FillError) {
        self.guard = None;
        tracing::debug!(target: "cache", entry = %self.name, "not storing: {e}");
        progress.send_modify(|p| p.state = State::Failed(e));
    }

    fn body_written(&self) -> u64 {
        self.written.saturating_sub(self.head_len)
    }

    /// Appends bytes; a failure abandons the fill (its file removed,
    /// waiters let go).
    fn write(&mut self, data: &[u8]) -> Result<(), ()> {
        let Some(file) = self.file.as_mut() else {
            return Err(());
        };
        match file.write_all(data) {
            Ok(()) => {
                self.written += data.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.abandon(&e);
                Err(())
            }
        }
    }

    fn abandon(&mut self, e: &std::io::Error) {
        self.give_up();
        self.cache.write_failed(e);
    }

    /// Stores nothing from here on: the next write fails, so the rest goes
    /// to the first client only.
    fn give_up(&mut self) {
        self.file = None;
        let _ = std::fs::remove_file(&self.temp);
        // Waiters need not wait for a fill that stores nothing.
        self.guard = None;
    }

    /// The whole body arrived: put the entry in place if every byte is
    /// there, then evict what no longer fits.
    fn finish(mut self) {
        let Some(file) = self.file.take() else {
            return;
        };
        drop(file);
        let expected = self.head_len + self.meta.body_len;
        if self.written != expected {
            let _ = std::fs::remove_file(&self.temp);
            tracing::debug!(entry = %self.name, written = self.written, expected, "not storing a short body");
            return;
        }
        let cache = self.cache.clone();
        let target = cache.dir.join(&self.name);
        let mut index = cache.lock();
        if let Err(e) = std::fs::rename(&self.temp, &target) {
            drop(index);
            let _ = std::fs::remove_file(&self.temp);
            cache.write_failed(&e);
            return;
        }
        index.insert(&self.name, self.written);
        cache.evict(&mut index, Some(&self.name));
        cache
            .metrics
            .cache_size(index.entries.len() as u64, index.total);
        tracing::debug!(entry = %self.name, bytes = self.written, "stored");
    }
}

impl Drop for Fill {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// The next data of `body`; `None` at its end.
async fn next(
    body: &mut Pin<Box<UpstreamBody>>,
    stall: Duration,
) -> Result<Option<Bytes>, FillError> {
    loop {
        match tokio::time::timeout(stall, body.frame()).await {
            Err(_) => return Err(FillError::Stalled(stall)),
            Ok(None) => return Ok(None),
            Ok(Some(Err(e))) => return Err(FillError::Upstream(crate::error::chain(&e))),
            // Trailers carry nothing a stored entry keeps.
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => return Ok(Some(data)),
                Err(_) => continue,
            },
        }
    }
}

/// Passes `first` and the rest of `body` to the one client left, at its
/// pace (the channel is the backpressure).
async fn relay(
    mut body: Pin<Box<UpstreamBody>>,
    first: Bytes,
    stall: Duration,
    to: mpsc::Sender<Result<Bytes, FillError>>,
) {
    if !first.is_empty() && to.send(Ok(first)).await.is_err() {
        return;
    }
    loop {
        let item = match next(&mut body, stall).await {
            Ok(Some(data)) => Ok(data),
            Ok(None) => return,
            Err(e) => Err(e),
        };
        let failed = item.is_err();
        if to.send(item).await.is_err() || failed {
            return;
        }
    }
}

/// One transfer reading a fill as it grows.
pub struct Follower {
    growing: Arc<Growing>,
    progress: watch::Receiver<Progress>,
    // The fill's first client gets the rest from here if the disk fails.
    relay: Option<mpsc::Receiver<Result<Bytes, FillError>>>,
    changed: Option<Pin<Box<dyn Future<Output = bool> + Send>>>,
    closed: bool,
}

impl Follower {
    /// Follows `growing` from its current state.
    pub fn new(growing: Arc<Growing>) -> Self {
        Self {
            progress: growing.progress.clone(),
            growing,
            relay: None,
            changed: None,
            closed: false,
        }
    }

    /// The head of the response being filled.
    pub fn meta(&self) -> &Meta {
        &self.growing.meta
    }

    /// Its body length; `None` for a chunked body.
    pub fn body_len(&self) -> Option<u64> {
        self.growing.len
    }

    /// Up to `max` body bytes from body offset `at`, as soon as they are
    /// there; `None` when the fill ended before `at`.
    pub fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        at: u64,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, FillError>> {
        loop {
            let Progress { on_disk, state } = self.progress.borrow_and_update().clone();
            if at < on_disk {
                let want = (on_disk - at).min(max as u64) as usize;
                let mut buf = bytes::BytesMut::zeroed(want);
                let Some(file) = self.growing.file.as_ref() else {
                    return Poll::Ready(Err(FillError::Read("nothing was written".into())));
                };
                return Poll::Ready(match file.read_at(&mut buf, self.growing.body_at + at) {
                    Ok(0) => Err(FillError::Read("the file is shorter than written".into())),
                    Ok(n) => {
                        buf.truncate(n);
                        Ok(Some(buf.freeze()))
                    }
                    Err(e) => Err(FillError::Read(e.to_string())),
                });
            }
            match state {
                State::Complete => return Poll::Ready(Ok(None)),
                State::Failed(e) => return Poll::Ready(Err(e)),
                State::Relayed => {
                    let Some(relay) = self.relay.as_mut() else {
                        return Poll::Ready(Err(FillError::Disk));
                    };
                    return relay.poll_recv(cx).map(Option::transpose);
                }
                State::Running if self.closed => return Poll::Ready(Err(FillError::Gone)),
                State::Running => {}
            }
            let changed = self.changed.get_or_insert_with(|| {
                // A clone has seen what this one has, so it waits for news.
                let mut rx = self.progress.clone();
                Box::pin(async move { rx.changed().await.is_ok() })
            });
            match changed.as_mut().poll(cx) {
                Poll::Ready(open) => {
                    self.changed = None;
                    self.closed = !open;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("on_disk", &self.progress.borrow().on_disk)
            .finish_non_exhaustive()
    }
}

impl InFlight {
    /// A follower when the key's body is being filled.
    pub(super) fn follow(&self) -> Option<Follower> {
        match self {
            InFlight::Body(growing) => Some(Follower::new(growing.clone())),
            InFlight::Head(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::rules::Freshness;
    use std::future::poll_fn;

    /// A fill's shared side by hand: a file with `head` bytes before the
    /// body, and the sender that reports progress.
    fn filling(head: usize) -> (File, Arc<Growing>, watch::Sender<Progress>) {
        let file = tempfile::tempfile().unwrap();
        file.write_all_at(&vec![0; head], 0).unwrap();
        let (tx, rx) = watch::channel(Progress {
            on_disk: 0,
            state: State::Running,
        });
        let meta = Meta::new("k".into(), Freshness::Immutable, 6, &Default::default());
        let growing = Arc::new(Growing {
            meta,
            file: Some(file.try_clone().unwrap()),
            body_at: head as u64,
            len: Some(6),
            progress: rx,
        });
        (file, growing, tx)
    }

    async fn read(f: &mut Follower, at: u64) -> Result<Option<Bytes>, FillError> {
        poll_fn(|cx| f.poll_read(cx, at, 1024)).await
    }

    #[tokio::test]
    async fn followers_get_bytes_as_they_reach_the_disk() {
        let (file, growing, tx) = filling(10);
        let mut late = Follower::new(growing.clone());
        let mut early = Follower::new(growing);
        // Nothing on disk yet: the read waits for the fill.
        let waiting = tokio::spawn(async move {
            let got = read(&mut early, 0).await;
            (early, got)
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        file.write_all_at(b"abc", 10).unwrap();
        tx.send_modify(|p| p.on_disk = 3);
        let (mut early, got) = waiting.await.unwrap();
        assert_eq!(got.unwrap().unwrap(), Bytes::from_static(b"abc"));
        file.write_all_at(b"def", 13).unwrap();
        tx.send_modify(|p| p.on_disk = 6);
        tx.send_modify(|p| p.state = State::Complete);
        assert_eq!(read(&mut early, 3).await.unwrap().unwrap(), "def");
        assert!(read(&mut early, 6).await.unwrap().is_none());
        // One that joins late reads from the start, at its own pace.
        assert_eq!(read(&mut late, 1).await.unwrap().unwrap(), "bcdef");
    }

    #[tokio::test]
    async fn a_failed_or_vanished_fill_is_an_error_never_an_end() {
        let (file, growing, tx) = filling(4);
        let mut f = Follower::new(growing.clone());
        file.write_all_at(b"ab", 4).unwrap();
        tx.send_modify(|p| p.on_disk = 2);
        tx.send_modify(|p| p.state = State::Failed(FillError::Stalled(Duration::from_secs(1))));
        // What is on disk is still read; then the failure, not an end.
        assert_eq!(read(&mut f, 0).await.unwrap().unwrap(), "ab");
        assert!(matches!(read(&mut f, 2).await, Err(FillError::Stalled(_))));

        let (_file, growing, tx) = filling(4);
        let mut f = Follower::new(growing);
        drop(tx);
        assert!(matches!(read(&mut f, 0).await, Err(FillError::Gone)));

        // The disk failed: only the first client, with the relay, goes on.
        let (_file, growing, tx) = filling(4);
        let mut other = Follower::new(growing.clone());
        let mut first = Follower::new(growing);
        let (relay_tx, relay_rx) = mpsc::channel(2);
        first.relay = Some(relay_rx);
        tx.send_modify(|p| p.state = State::Relayed);
        relay_tx
            .send(Ok(Bytes::from_static(b"rest")))
            .await
            .unwrap();
        drop(relay_tx);
        assert!(matches!(read(&mut other, 0).await, Err(FillError::Disk)));
        assert_eq!(read(&mut first, 0).await.unwrap().unwrap(), "rest");
        assert!(read(&mut first, 4).await.unwrap().is_none());
    }
}
