//! The accept loop: a bounded number of connections, each served by hyper's
//! HTTP/1.1 server with the deadlines of [`crate::conn`], and a graceful
//! drain bounded by a grace period on shutdown, in which a connection that
//! has not sent its first request yet still gets that one answered. The
//! main listener and the metrics listener share it.
//!
//! Connection slots ([`Slots`]) are shared by every worker. A connection
//! is accepted first and given a slot after: one from a peer address that
//! already holds `proxy.max_connections_per_client` slots is closed at
//! once (logged and counted), so one client cannot take every slot. At
//! `proxy.max_connections`, an idle keep-alive connection (no request in
//! progress) is asked to close and the new one takes its slot; only when
//! every slot serves a request does the new connection wait (and the ones
//! behind it in the kernel's backlog) until one is free.

use crate::conn::{Activity, Deadline, Deadlines, TimedIo};
use crate::error::Refusal;
use crate::metrics::Metrics;
use crate::state::State;
use crate::{respond, service};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Connection-level settings.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connection slots, shared by every worker so that
    /// `proxy.max_connections` bounds the whole process.
    pub slots: Arc<Slots>,
    /// Time allowed for a request head, from its first byte.
    pub header_timeout: Duration,
    /// Time an idle keep-alive connection is kept.
    pub idle_timeout: Duration,
    /// Time one write to a client may stay pending.
    pub send_timeout: Duration,
    /// Largest request head in bytes.
    pub max_header_bytes: usize,
    /// Most request headers.
    pub max_headers: usize,
    /// How long in-flight requests may run on after shutdown starts.
    pub shutdown_grace: Duration,
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `proxy.listen`: the proxy itself.
    Proxy,
    /// `proxy.metrics_listen`: only `/metrics` and `/healthz`.
    Metrics,
}

/// Serves `listener` in `role` until `shutdown` completes, then stops
/// accepting and lets in-flight requests finish for up to
/// `limits.shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    limits: Limits,
    role: Role,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    // The header and idle deadlines live in `TimedIo`; hyper's own header
    // timer would also cut idle keep-alive connections.
    http.timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_header_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        .keep_alive(true);
    let slots = limits.slots.clone();
    let deadlines = Deadlines {
        idle: limits.idle_timeout,
        header: limits.header_timeout,
        send: limits.send_timeout,
    };
    // Every connection task holds a clone of `alive`: the drain is over
    // when the last one is dropped.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (alive, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    tokio::pin!(shutdown);

    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept(&listener, &slots) => accepted,
        };
        let Some((stream, peer, slot)) = accepted else {
            continue;
        };
        let slot = match slot {
            Ok(slot) => slot,
            Err(held) => {
                over_client_limit(&state.metrics, peer, held, stream);
                continue;
            }
        };
        // The metrics listener is not for builds: `allowed_clients` is the
        // proxy's rule, and the metrics address is chosen apart from it.
        let allowed = role == Role::Metrics || state.client_allowed(peer.ip());
        // Scrapes are not client connections.
        let open = (role == Role::Proxy).then(|| state.metrics.connection());
        let metrics = state.metrics.clone();
        let state = state.clone();
        let activity = slot.activity.clone();
        let io = TimedIo::new(stream, activity.clone(), deadlines);
        let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let state = state.clone();
            let busy = activity.busy();
            async move {
                let resp = match role {
                    Role::Proxy if allowed => service::handle(state, peer, req, busy).await,
                    Role::Proxy => {
                        let (parts, _) = req.into_parts();
                        respond::refused(&state.metrics, peer, &parts, Refusal::Client)
                    }
                    Role::Metrics => service::metrics(state, peer, req).await,
                };
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        let conn = http.serve_connection(TokioIo::new(io), svc);
        let (mut stop, alive) = (stop_rx.clone(), alive.clone());
        let first_wait = limits.header_timeout;
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => Some(ended),
                _ = stop.wait_for(|stop| *stop) => None,
            };
            let ended = match ended {
                Some(ended) => ended,
                // hyper closes a connection that has read no request yet
                // at once, even when the client's request already waits in
                // the socket: a restart under socket activation would
                // reset connections the old process had just accepted.
                // Such a connection is owed its first answer, for as long
                // as a head may take.
                None => tokio::select! {
                    ended = conn.as_mut() => ended,
                    _ = tokio::time::timeout(first_wait, slot.activity.first_request()) => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                },
            };
            drop(alive);
            // Told by its flag: hyper ends an idle connection whose read
            // fails as if the client had closed it.
            if slot.activity.reclaimed() {
                metrics.connection_closed("reclaimed");
                tracing::info!(
                    peer = %peer,
                    rule = %"reclaimed",
                    "closed an idle keep-alive connection to admit a new client \
                     (proxy.max_connections reached)"
                );
            } else if let Err(e) = ended {
                log_connection_error(&metrics, peer, &e);
            }
            drop((slot, open));
        });
    }

    drop(listener);
    tracing::info!(
        grace_secs = limits.shutdown_grace.as_secs(),
        "shutting down: no new connections, draining"
    );
    let _ = stop_tx.send(true);
    drop(alive);
    tokio::select! {
        _ = all_closed.recv() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!("grace period over; closing the remaining connections")
        }
    }
}

/// The next connection and its slot, or how many slots its peer already
/// holds when it is over the per-client limit.
type Accepted = (TcpStream, SocketAddr, Result<Slot, usize>);

async fn accept(listener: &TcpListener, slots: &Arc<Slots>) -> Option<Accepted> {
    match listener.accept().await {
        Ok((stream, peer)) => {
            let _ = stream.set_nodelay(true);
            let slot = slots.take(peer.ip()).await;
            Some((stream, peer, slot))
        }
        Err(e) => {
            // EMFILE and friends: back off instead of spinning.
            tracing::warn!("accept failed: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

fn over_client_limit(metrics: &Metrics, peer: SocketAddr, held: usize, stream: TcpStream) {
    metrics.refusal("client-connections");
    tracing::info!(
        target: "access",
        peer = %peer,
        rule = %"client-connections",
        "refused: this address already holds {held} connections \
         (proxy.max_connections_per_client); connection closed"
    );
    drop(stream);
}

/// The connection slots of one listener, shared by every worker.
#[derive(Debug)]
pub struct Slots {
    max: usize,
    per_client: usize,
    held: Mutex<Held>,
    // Told when a slot is freed or a connection turns idle.
    changed: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Held {
    next_id: u64,
    open: HashMap<u64, Activity>,
    by_client: HashMap<IpAddr, usize>,
}

/// One connection's slot; freed on drop.
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    client: IpAddr,
    /// The connection's requests in progress.
    pub activity: Activity,
}

impl Slots {
    /// `max` connections in all, at most `per_client` from one address.
    pub fn new(max: usize, per_client: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max,
            per_client,
            held: Mutex::default(),
            changed: Arc::new(Notify::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // No code panics while holding it (panic=abort besides).
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a connection from `client`; `Err` with the number it
    /// holds when it is at its own limit. At the overall limit, an idle
    /// connection is reclaimed and this waits until its slot is free; with
    /// none idle, until any slot is.
    pub async fn take(self: &Arc<Self>, client: IpAddr) -> Result<Slot, usize> {
        let client = client.to_canonical();
        loop {
            // Registered before the check, so no wake-up falls in between.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut held = self.lock();
                let mine = held.by_client.get(&client).copied().unwrap_or(0);
                if mine >= self.per_client {
                    return Err(mine);
                }
                if held.open.len() < self.max {
                    let id = held.next_id;
                    held.next_id += 1;
                    let activity = Activity::new(self.changed.clone());
                    held.open.insert(id, activity.clone());
                    *held.by_client.entry(client).or_default() += 1;
                    return Ok(Slot {
                        slots: self.clone(),
                        id,
                        client,
                        activity,
                    });
                }
                // One reclaim at a time: a connection asked to close frees
                // its slot in a moment, and waking meanwhile (another
                // connection turning idle) must not close a second one.
                let closing = held.open.values().any(|a| a.reclaimed());
                match held.open.values().find(|a| a.is_idle()) {
                    _ if closing => {}
                    Some(idle) => idle.reclaim(),
                    None => tracing::debug!(
                        client = %client,
                        "every connection slot is serving a request; waiting for one"
                    ),
                }
            }
            changed.await;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.lock();
        held.open.remove(&self.id);
        if let Some(n) = held.by_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                held.by_client.remove(&self.client);
            }
        }
        drop(held);
        self.slots.changed.notify_waiters();
    }
}

/// Requests hyper refuses itself (it answers 400 or 431 and closes) and
/// deadline closures get an info line saying why; ordinary disconnects are
/// debug noise.
fn log_connection_error(metrics: &Metrics, peer: std::net::SocketAddr, e: &hyper::Error) {
    let deadline = deadline_of(e);
    // hyper answers a head it cannot parse itself (431 or 400) before it
    // closes; a head that is not complete in time gets no answer at all.
    let (rule, status, why) = if e.is_parse_too_large() {
        ("header-size", Some(431), "request head larger than proxy.max_header_bytes or more than proxy.max_headers headers")
    } else if e.is_parse() {
        ("malformed", Some(400), "malformed request head")
    } else if deadline == Some(Deadline::Header) {
        (
            "header-timeout",
            None,
            "request head not complete within proxy.header_timeout_secs; connection closed",
        )
    } else if deadline == Some(Deadline::Send) {
        metrics.connection_closed("send-timeout");
        tracing::info!(
            target: "access",
            peer = %peer,
            rule = %"send-timeout",
            "closed: the client read nothing of the response for \
             proxy.send_timeout_secs; nothing more is sent"
        );
        return;
    } else {
        let why = if deadline == Some(Deadline::Idle) {
            "idle timeout".to_string()
        } else {
            crate::error::chain(e)
        };
        tracing::debug!(peer = %peer, "connection ended: {why}");
        return;
    };
    metrics.refusal(rule);
    tracing::info!(target: "access", peer = %peer, status, rule = %rule, "refused: {why}: {e}");
}

fn deadline_of(e: &hyper::Error) -> Option<Deadline> {
    crate::error::causes(e)
        .into_iter()
        .find_map(|c| c.downcast_ref::<Deadline>().copied())
}
