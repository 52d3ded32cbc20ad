//! The accept loop: a bounded number of connections, each served by hyper's
//! HTTP/1.1 server with a header-read timeout, and a graceful drain bounded
//! by a grace period on shutdown. The main listener and the metrics
//! listener share it.

use crate::conn::{Activity, Deadline, TimedIo};
use crate::error::Refusal;
use crate::metrics::Metrics;
use crate::state::State;
use crate::{respond, service};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connection-level settings.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connection slots, shared by every worker so that
    /// `proxy.max_connections` bounds the whole process.
    pub slots: Arc<Semaphore>,
    /// Time allowed for a request head, from its first byte.
    pub header_timeout: Duration,
    /// Time an idle keep-alive connection is kept.
    pub idle_timeout: Duration,
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
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);

    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept(&listener, &slots) => accepted,
        };
        let Some((stream, peer, slot)) = accepted else {
            continue;
        };
        // The metrics listener is not for builds: `allowed_clients` is the
        // proxy's rule, and the metrics address is chosen apart from it.
        let allowed = role == Role::Metrics || state.client_allowed(peer.ip());
        // Scrapes are not client connections.
        let open = (role == Role::Proxy).then(|| state.metrics.connection());
        let metrics = state.metrics.clone();
        let state = state.clone();
        let activity = Activity::default();
        let io = TimedIo::new(
            stream,
            activity.clone(),
            limits.idle_timeout,
            limits.header_timeout,
        );
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
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
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
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!("grace period over; closing the remaining connections")
        }
    }
}

async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> Option<(
    tokio::net::TcpStream,
    std::net::SocketAddr,
    tokio::sync::OwnedSemaphorePermit,
)> {
    // Take a slot first: beyond the limit, connections wait in the kernel's
    // backlog instead of being accepted and starved.
    let slot = slots.clone().acquire_owned().await.ok()?;
    match listener.accept().await {
        Ok((stream, peer)) => {
            let _ = stream.set_nodelay(true);
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
