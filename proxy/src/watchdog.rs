//! systemd's watchdog (`WatchdogSec=`), fed only while every worker runtime
//! is alive.
//!
//! Each worker runs a heartbeat task on its own runtime; a runtime that is
//! wedged (a task that blocks its thread, a busy loop) stops beating. The
//! control thread pings systemd only when every worker has beaten within
//! half the watchdog interval, so a wedged worker stops the pings and
//! systemd restarts the service, as `WatchdogSec=` promises.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The watchdog interval systemd asks for, as libsystemd's
/// `sd_watchdog_enabled()` reads it: `WATCHDOG_USEC` set and positive, and
/// `WATCHDOG_PID`, when present, naming this process.
pub fn interval(var: impl Fn(&str) -> Option<String>, pid: u32) -> Option<Duration> {
    let num = |k| var(k).and_then(|v| v.parse::<u64>().ok());
    match (num("WATCHDOG_USEC"), num("WATCHDOG_PID")) {
        (Some(usec), None) if usec > 0 => Some(Duration::from_micros(usec)),
        (Some(usec), Some(p)) if usec > 0 && p == u64::from(pid) => {
            Some(Duration::from_micros(usec))
        }
        _ => None,
    }
}

/// The last beat of each worker, as milliseconds since `start`.
pub struct Heartbeats {
    start: Instant,
    every: Duration,
    last: Vec<AtomicU64>,
}

impl Heartbeats {
    /// Heartbeats for `workers` runtimes under a watchdog of `interval`.
    pub fn new(workers: usize, interval: Duration) -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            every: interval / 8,
            last: (0..workers).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// Never 0, which marks a worker that has not beaten yet.
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64 + 1
    }

    /// Runs on worker `i`'s runtime for as long as the runtime does.
    pub async fn beat(self: Arc<Self>, i: usize) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.last[i].store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// The workers whose last beat is older than `max_age`.
    pub fn stale(&self, max_age: Duration) -> Vec<usize> {
        let now = self.now_ms();
        let max = max_age.as_millis() as u64;
        self.last
            .iter()
            .enumerate()
            .filter(|(_, t)| now.saturating_sub(t.load(Ordering::Relaxed)) > max)
            .map(|(i, _)| i)
            .collect()
    }
}

/// Pings systemd every quarter interval while no worker is stale (older
/// than half the interval), and withholds the ping, with one log line per
/// episode, while one is.
pub async fn feed(beats: Arc<Heartbeats>, interval: Duration) {
    let mut tick = tokio::time::interval(interval / 4);
    let mut wedged = false;
    loop {
        tick.tick().await;
        let stale = beats.stale(interval / 2);
        if stale.is_empty() {
            if wedged {
                tracing::info!("every worker answers again; feeding the watchdog");
                wedged = false;
            }
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
        } else if !wedged {
            tracing::error!(
                workers = ?stale,
                "a worker has not run for over {} ms; withholding the watchdog ping, so systemd restarts the service",
                (interval / 2).as_millis()
            );
            wedged = true;
        }
    }
}

/// Debug builds only, for the real-systemd test of `WatchdogSec=`: SIGUSR2
/// wedges worker 0 as a task that blocks its thread would. Release builds,
/// which the packages hold, have no such switch (SIGUSR2 keeps its default
/// action there); `tests/tests/systemd.rs` checks that the text below is
/// absent from the packaged binary.
#[cfg(debug_assertions)]
pub mod wedge {
    static WEDGE: tokio::sync::Notify = tokio::sync::Notify::const_new();

    /// On the control thread: waits for SIGUSR2 on `usr2`, then wakes
    /// [`point`].
    pub async fn on_sigusr2(usr2: std::io::Result<tokio::signal::unix::Signal>) {
        let Ok(mut usr2) = usr2 else {
            return;
        };
        usr2.recv().await;
        tracing::warn!("SIGUSR2 in a debug build: wedging worker 0 to test the watchdog");
        WEDGE.notify_one();
    }

    /// On worker 0: once woken, blocks the worker's thread for good.
    pub async fn point() {
        WEDGE.notified().await;
        loop {
            std::thread::park();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_follows_sd_watchdog_enabled() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            interval(env(&[("WATCHDOG_USEC", "2000000")]), 7),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            interval(
                env(&[("WATCHDOG_USEC", "2000000"), ("WATCHDOG_PID", "7")]),
                7
            ),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            interval(
                env(&[("WATCHDOG_USEC", "2000000"), ("WATCHDOG_PID", "8")]),
                7
            ),
            None
        );
        assert_eq!(interval(env(&[("WATCHDOG_USEC", "0")]), 7), None);
        assert_eq!(interval(env(&[]), 7), None);
    }

    /// Two real worker runtimes on threads of their own; one is then made
    /// to block its thread, and only that one goes stale.
    #[test]
    fn a_blocked_worker_runtime_goes_stale_and_the_other_does_not() {
        let window = Duration::from_millis(400);
        let beats = Heartbeats::new(2, window * 2);
        let (block_tx, block_rx) = std::sync::mpsc::channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let mut orders = Some((block_rx, release_rx));
        let mut threads = Vec::new();
        for i in 0..2 {
            let beats = beats.clone();
            let orders = if i == 1 { orders.take() } else { None };
            threads.push(std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let beating = tokio::spawn(beats.beat(i));
                    match orders {
                        Some((block, release)) => {
                            // Wait for the order without blocking, then block
                            // the runtime's only thread as a wedged task would.
                            let _ = tokio::task::spawn_blocking(move || block.recv()).await;
                            let _ = release.recv();
                        }
                        None => {
                            let _ = beating.await;
                        }
                    }
                });
            }));
        }
        let wait = |what: &str, cond: &dyn Fn() -> bool| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !cond() {
                assert!(Instant::now() < deadline, "{what}");
                std::thread::yield_now();
            }
        };
        wait("both workers beat", &|| {
            beats.last.iter().all(|t| t.load(Ordering::Relaxed) > 0)
                && beats.stale(window).is_empty()
        });
        block_tx.send(()).unwrap();
        wait("the blocked worker goes stale", &|| {
            beats.stale(window) == [1]
        });
        // Worker 0 kept beating all along.
        assert!(!beats.stale(window).contains(&0));
        release_tx.send(()).unwrap();
        threads.pop().unwrap().join().unwrap();
    }
}
