//! The `pulp-auth-proxy` binary. Start order is fixed and each step can
//! fail on its own: configuration (exit 78), logging, password (78), TLS
//! trust (78), listening socket, inherited or bound, with the address
//! checks (78 or 1), `READY=1`, serve.

use clap::Parser;
use pulp_auth_config::{Config, LogFormat, LogLevel};
use pulp_auth_proxy::cache::Cache;
use pulp_auth_proxy::error::StartError;
use pulp_auth_proxy::health::Readiness;
use pulp_auth_proxy::listener;
use pulp_auth_proxy::metrics::Metrics;
use pulp_auth_proxy::server::{self, Limits, Role};
use pulp_auth_proxy::state::State;
use pulp_auth_proxy::{reload, watchdog};
use sd_notify::NotifyState;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::sync::watch;

/// Forwards GET and HEAD requests for Pulp content to the upstream, adding
/// the basic-auth credentials, so that image builds never hold them.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// The configuration file (TOML); PULP_AUTH_PROXY_* variables override it.
    #[arg(long, value_name = "FILE", default_value = pulp_auth_config::DEFAULT_PATH)]
    config: PathBuf,
    /// Load and check the configuration, the password and the CA file, then
    /// exit (0 when everything is usable) without listening.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let loaded = Config::load(&cli.config, std::env::vars_os());
    init_logging(loaded.as_ref().ok().and_then(|c| c.proxy.as_ref()));
    let result = loaded.map_err(StartError::from).and_then(|config| {
        // This thread runs the control tasks (signals, reload, the watchdog
        // pings that the workers' heartbeats allow, the metrics listener);
        // requests are served by the workers of `run`.
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?
            .block_on(run(&cli, &config))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            let _ = sd_notify::notify(false, &[NotifyState::Status(&format!("failed: {e}"))]);
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Logs go to stderr (journald under systemd). `RUST_LOG` wins over
/// `proxy.log_level`.
fn init_logging(proxy: Option<&pulp_auth_config::Proxy>) {
    use tracing_subscriber::{fmt, prelude::*, EnvFilter};
    let level = proxy.map_or(LogLevel::Info, |p| p.log_level).as_str();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let json = proxy.is_some_and(|p| p.log_format == LogFormat::Json);
    let text = (!json).then(|| fmt::layer().with_writer(std::io::stderr).with_ansi(false));
    let json = json.then(|| fmt::layer().json().with_writer(std::io::stderr));
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .init();
}

/// Workers: one single-threaded runtime per CPU, each with its own accept
/// loop on the shared socket and its own upstream connection pool, so a
/// request never hops between threads (the profile showed cross-thread
/// wake-ups dominating with a work-stealing runtime).
fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

async fn run(cli: &Cli, config: &Config) -> Result<(), StartError> {
    let proxy = config.proxy()?;
    let upstream_config = config.upstream()?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let loaded = reload::load(upstream_config)?;
    let source = &loaded.source;
    tracing::info!(%source, "loaded the upstream password");
    if let Some(warning) = source.exposure() {
        tracing::warn!("{warning}");
    }

    if cli.check_config {
        if let Some(interface) = &proxy.interface {
            listener::check_interface(proxy.listen.socket_addr().ip(), interface.as_str())?;
        }
        println!(
            "{}: configuration is valid (listen {}, upstream {}, password from {source})",
            cli.config.display(),
            proxy.listen,
            upstream_config.origin
        );
        return Ok(());
    }

    let (socket, how) = match listener::inherited(proxy)? {
        Some(l) => (l, "socket from systemd"),
        None => (listener::bind(proxy).await?, "bound"),
    };
    let local = socket.local_addr().map_err(StartError::Interfaces)?;
    let socket = socket.into_std().map_err(StartError::Interfaces)?;
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::new(proxy.readiness_cache));
    let cache = config.cache.as_ref().and_then(|c| {
        Cache::open(c, &upstream_config.username, metrics.clone())
            .map_err(|why| {
                tracing::warn!(
                    dir = %c.dir.display(),
                    "cache off: {why}; requests are proxied without caching \
                     (under systemd, keep cache.dir inside the unit's StateDirectory)"
                )
            })
            .ok()
    });
    let fetches = (proxy.fetch_records > 0).then(|| {
        Arc::new(pulp_auth_proxy::fetches::Fetches::new(
            proxy.fetch_records as usize,
            upstream_config.origin.host_header(),
        ))
    });
    let states = (0..workers())
        .map(|_| {
            let live = loaded.live(upstream_config)?;
            let state = State::new(
                live,
                proxy,
                pulp_auth_config::http_url(local),
                metrics.clone(),
                readiness.clone(),
                cache.clone(),
                fetches.clone(),
            );
            Ok(Arc::new(state))
        })
        .collect::<Result<Vec<_>, StartError>>()?;
    let metrics_socket = match proxy.metrics_listen {
        Some(addr) => Some(listener::bind_metrics(addr).await?),
        None => None,
    };
    tracing::info!(listen = %local, socket = how, workers = states.len(), upstream = %upstream_config.origin, "listening");

    let (stop_tx, stop_rx) = watch::channel(false);
    let slots = |proxy: &pulp_auth_config::Proxy| {
        server::Slots::new(
            proxy.max_connections as usize,
            proxy.max_connections_per_client as usize,
        )
    };
    let limits = Limits {
        slots: slots(proxy),
        header_timeout: proxy.header_timeout,
        idle_timeout: proxy.idle_timeout,
        send_timeout: proxy.send_timeout,
        max_header_bytes: proxy.max_header_bytes,
        max_headers: proxy.max_headers,
        shutdown_grace: proxy.shutdown_grace,
    };
    let watchdog = watchdog::interval(|k| std::env::var(k).ok(), std::process::id())
        .map(|every| (watchdog::Heartbeats::new(states.len(), every), every));
    let mut threads = Vec::new();
    for (i, state) in states.iter().enumerate() {
        let socket = socket.try_clone().map_err(StartError::Interfaces)?;
        let (state, limits, stop) = (state.clone(), limits.clone(), stop_rx.clone());
        let beats = watchdog.as_ref().map(|(beats, _)| beats.clone());
        let thread = std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || -> std::io::Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    if let Some(beats) = beats {
                        tokio::spawn(beats.beat(i));
                    }
                    #[cfg(debug_assertions)]
                    if i == 0 {
                        tokio::spawn(watchdog::wedge::point());
                    }
                    let socket = tokio::net::TcpListener::from_std(socket)?;
                    server::serve(socket, state, limits, Role::Proxy, stopped(stop)).await;
                    Ok(())
                })
            })
            .map_err(StartError::Runtime)?;
        threads.push(thread);
    }

    // Before READY=1: a `systemctl reload` or `stop` that follows the start
    // at once must meet these handlers, not the default action, which
    // ends the process.
    use tokio::signal::unix::{signal, SignalKind};
    let hup = signal(SignalKind::hangup());
    let stop = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    #[cfg(debug_assertions)]
    let usr2 = signal(SignalKind::user_defined2());

    let status = format!("serving on {local}");
    let _ = sd_notify::notify(false, &[NotifyState::Ready, NotifyState::Status(&status)]);
    if let Some((beats, every)) = watchdog {
        tokio::spawn(watchdog::feed(beats, every));
    }
    #[cfg(debug_assertions)]
    tokio::spawn(watchdog::wedge::on_sigusr2(usr2));
    tokio::spawn(reload::on_hup(hup, states.clone(), upstream_config.clone()));
    tokio::spawn(async move {
        shutdown_signal(stop).await;
        let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
        let _ = stop_tx.send(true);
    });
    if let Some(m) = metrics_socket {
        tracing::info!(metrics_listen = ?proxy.metrics_listen.map(|a| a.to_string()), "serving /metrics separately");
        // The same limits, with slots of its own: a full proxy must not
        // starve the scrape that shows it is full.
        let limits = Limits {
            slots: slots(proxy),
            ..limits.clone()
        };
        tokio::spawn(server::serve(
            m,
            states[0].clone(),
            limits,
            Role::Metrics,
            stopped(stop_rx.clone()),
        ));
    }
    let joined = tokio::task::spawn_blocking(move || {
        threads.into_iter().map(|t| t.join()).collect::<Vec<_>>()
    })
    .await
    .map_err(|e| StartError::Runtime(std::io::Error::other(e.to_string())))?;
    for result in joined {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(StartError::Runtime(e)),
            Err(_) => {
                return Err(StartError::Runtime(std::io::Error::other(
                    "a worker panicked",
                )))
            }
        }
    }
    Ok(())
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Resolves on SIGTERM or SIGINT, from the streams installed before
/// `READY=1`.
async fn shutdown_signal(
    (term, int): (
        std::io::Result<tokio::signal::unix::Signal>,
        std::io::Result<tokio::signal::unix::Signal>,
    ),
) {
    let (Ok(mut term), Ok(mut int)) = (term, int) else {
        tracing::error!("cannot install signal handlers; stop the proxy with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
