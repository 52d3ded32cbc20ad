//! The accept loop: a bounded number of connections, each served by hyper's
//! HTTP/1.1 server with a header-read timeout, and a graceful drain bounded
//! by a grace period on shutdown.

use crate::service::{self, State};
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
    /// Connections served at once.
    pub max_connections: u32,
    /// Time allowed for a request head.
    pub header_timeout: Duration,
    /// How long in-flight requests may run on after shutdown starts.
    pub shutdown_grace: Duration,
}

/// Serves `listener` until `shutdown` completes, then stops accepting and
/// lets in-flight requests finish for up to `limits.shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let slots = Arc::new(Semaphore::new(limits.max_connections as usize));
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
        let allowed = state.client_allowed(peer.ip());
        let state = state.clone();
        let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let state = state.clone();
            async move {
                let resp = if allowed {
                    service::handle(state, peer, req).await
                } else {
                    let (parts, _) = req.into_parts();
                    service::refuse(peer, &parts, crate::error::Refusal::Client)
                };
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        let conn = http.serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(peer = %peer, "connection ended: {}", crate::error::chain(&e));
            }
            drop(slot);
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
