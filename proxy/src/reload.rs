//! What SIGHUP re-reads (the password and the trust anchors), and the
//! bound on how long a reload may take.
//!
//! Loading reads files, and a file can stall its reader (a hung network
//! file system, a device). The load therefore runs on a thread of its own
//! and the signal task waits for it only so long: a stuck reload is given
//! up with the current credential in force, and the control runtime, which
//! also handles SIGTERM, is never blocked. The stuck thread is left
//! behind rather than joined: nothing can interrupt a blocked read, and
//! the process may exit with it still waiting.

use crate::credentials::BasicAuth;
use crate::error::StartError;
use crate::state::{Live, State};
use crate::upstream::{self, Upstream};
use pulp_auth_config::credentials::{load_password, PasswordSource};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a SIGHUP reload may take. Reading a password file and a CA
/// bundle takes milliseconds; anything near this is a stalled file.
pub const RELOAD_LIMIT: Duration = Duration::from_secs(10);

/// The password and trust anchors as read at one moment.
pub struct Loaded {
    auth: BasicAuth,
    tls: rustls::ClientConfig,
    /// Where the password came from, for the log.
    pub source: PasswordSource,
}

/// Reads the password and the trust anchors now; used at start and on SIGHUP.
pub fn load(upstream: &pulp_auth_config::Upstream) -> Result<Loaded, StartError> {
    let (password, source) =
        load_password(upstream.password_file.as_deref(), |k| std::env::var_os(k))?;
    let auth = BasicAuth::new(&upstream.username, &password);
    drop(password);
    let tls = upstream::tls_config(upstream.ca_file.as_deref())?;
    Ok(Loaded { auth, tls, source })
}

impl Loaded {
    /// A worker's own client (its own connection pool) with these settings.
    pub fn live(&self, upstream: &pulp_auth_config::Upstream) -> Result<Live, StartError> {
        Ok(Live {
            upstream: Upstream::new(upstream, self.tls.clone())?,
            auth: self.auth.clone(),
        })
    }
}

/// Why a bounded load gave no value.
#[derive(Debug, thiserror::Error)]
pub enum Stuck {
    /// The load did not finish in time; its thread is abandoned.
    #[error("it did not finish within {} s (is a file on a stalled file system?)", .0.as_secs())]
    TimedOut(Duration),
    /// An earlier load is still stuck; another would only pile up threads.
    #[error("an earlier reload is still stuck")]
    Busy,
    /// The thread could not be started, or died.
    #[error("the reload thread failed: {0}")]
    Thread(String),
}

/// Runs `load` on a thread of its own and waits for it at most `limit`.
/// `busy` is held while a load runs, including one that was given up, so
/// stuck loads never pile up.
pub async fn bounded<T, F>(busy: &Arc<AtomicBool>, limit: Duration, load: F) -> Result<T, Stuck>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    if busy.swap(true, Ordering::AcqRel) {
        return Err(Stuck::Busy);
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let flag = busy.clone();
    std::thread::Builder::new()
        .name("reload".into())
        .spawn(move || {
            let value = load();
            flag.store(false, Ordering::Release);
            let _ = tx.send(value);
        })
        .map_err(|e| {
            busy.store(false, Ordering::Release);
            Stuck::Thread(e.to_string())
        })?;
    match tokio::time::timeout(limit, rx).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_)) => Err(Stuck::Thread("it ended without an answer".into())),
        Err(_) => Err(Stuck::TimedOut(limit)),
    }
}

/// SIGHUP re-reads the password source and the CA file. A new value that
/// fails to load, or takes longer than [`RELOAD_LIMIT`], leaves the current
/// one in force; transfers in flight keep the client they started with.
/// `hup` is the SIGHUP stream, installed before `READY=1`.
pub async fn on_hup(
    hup: std::io::Result<tokio::signal::unix::Signal>,
    states: Vec<Arc<State>>,
    upstream: pulp_auth_config::Upstream,
) {
    let Ok(mut hup) = hup else {
        tracing::error!("cannot install the SIGHUP handler; credential rotation needs a restart");
        return;
    };
    let busy = Arc::new(AtomicBool::new(false));
    let upstream = Arc::new(upstream);
    while hup.recv().await.is_some() {
        let (config, workers) = (upstream.clone(), states.len());
        let fresh = bounded(&busy, RELOAD_LIMIT, move || {
            let loaded = load(&config)?;
            let lives = (0..workers)
                .map(|_| loaded.live(&config))
                .collect::<Result<Vec<_>, _>>()?;
            Ok::<_, StartError>((lives, loaded.source))
        })
        .await;
        match fresh {
            Ok(Ok((lives, source))) => {
                for (state, live) in states.iter().zip(lives) {
                    state.replace(live).await;
                }
                if let Some(warning) = source.exposure() {
                    tracing::warn!("{warning}");
                }
                tracing::info!(%source, "SIGHUP: reloaded the upstream password and trust anchors");
            }
            Ok(Err(e)) => tracing::error!(
                "SIGHUP: reload failed, the current password and trust anchors stay in force: {e}"
            ),
            Err(stuck) => tracing::error!(
                "SIGHUP: reload given up, the current password and trust anchors stay in force: {stuck}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real time, not paused: the load runs on a real thread, and paused time
    // would run out before it answers.
    #[tokio::test]
    async fn a_blocked_load_is_given_up_and_blocks_nothing_else() {
        let busy = Arc::new(AtomicBool::new(false));
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let limit = Duration::from_millis(100);
        let stuck = bounded(&busy, limit, move || blocked.recv().is_ok());
        // The runtime keeps serving other tasks (here: a stand-in for the
        // SIGTERM handler) while the load is blocked.
        let (signal_tx, signal_rx) = tokio::sync::oneshot::channel();
        let other = tokio::spawn(async move { signal_rx.await.is_ok() });
        signal_tx.send(()).unwrap();
        assert!(other.await.unwrap());
        assert!(matches!(stuck.await, Err(Stuck::TimedOut(l)) if l == limit));
        // Still stuck: a second reload is refused instead of piling up.
        assert!(matches!(
            bounded(&busy, RELOAD_LIMIT, || ()).await,
            Err(Stuck::Busy)
        ));
        // Once the stuck load ends, reloads work again.
        release.send(()).unwrap();
        let mut tries = 0;
        while busy.load(Ordering::Acquire) {
            tries += 1;
            assert!(tries < 1_000_000, "the released load never finished");
            tokio::task::yield_now().await;
            std::thread::yield_now();
        }
        assert_eq!(bounded(&busy, RELOAD_LIMIT, || 7).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn a_quick_load_returns_its_value() {
        let busy = Arc::new(AtomicBool::new(false));
        assert_eq!(bounded(&busy, RELOAD_LIMIT, || "ok").await.unwrap(), "ok");
        assert!(!busy.load(Ordering::Acquire));
    }
}
