//! The `pulp-auth-proxy` binary. Start order is fixed and each step can
//! fail on its own: logging, configuration (exit 78), password (78), TLS
//! trust (78), bind with the address checks (1), serve.

use clap::Parser;
use pulp_auth_config::credentials::load_password;
use pulp_auth_config::Config;
use pulp_auth_proxy::credentials::BasicAuth;
use pulp_auth_proxy::error::StartError;
use pulp_auth_proxy::server::{self, Limits};
use pulp_auth_proxy::service::State;
use pulp_auth_proxy::upstream::{self, Upstream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tracing_subscriber::{reload, EnvFilter};

/// Forwards GET and HEAD requests for Pulp content to the upstream, adding
/// the basic-auth credentials, so that image builds never hold them.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// The configuration file (TOML); PULP_AUTH_PROXY_* variables override it.
    #[arg(long, value_name = "FILE", default_value = pulp_auth_config::DEFAULT_PATH)]
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let reload = init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli, reload)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

type FilterHandle = reload::Handle<EnvFilter, tracing_subscriber::Registry>;

/// Logs go to stderr (journald picks them up under systemd). `RUST_LOG`
/// wins over `proxy.log_level`, which is applied once the config is read.
fn init_logging() -> Option<FilterHandle> {
    use tracing_subscriber::prelude::*;
    let from_env = std::env::var_os("RUST_LOG").is_some();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false);
    tracing_subscriber::registry().with(filter).with(fmt).init();
    (!from_env).then_some(handle)
}

async fn run(cli: Cli, reload: Option<FilterHandle>) -> Result<(), StartError> {
    let config = Config::load(&cli.config)?;
    let proxy = config.proxy()?;
    let upstream_config = config.upstream()?;
    if let Some(handle) = reload {
        let _ = handle.reload(EnvFilter::new(&proxy.log_level));
    }
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }

    let (password, source) = load_password(upstream_config.password_file.as_deref(), |k| {
        std::env::var_os(k)
    })?;
    let auth = BasicAuth::new(&upstream_config.username, &password);
    drop(password);
    tracing::info!(%source, "loaded the upstream password");

    let tls = upstream::tls_config(upstream_config.ca_file.as_deref())?;
    let upstream = Upstream::new(upstream_config, tls)?;

    let listener = pulp_auth_proxy::listener::bind(proxy).await?;
    let local = listener.local_addr().map_err(StartError::Interfaces)?;
    tracing::info!(listen = %local, upstream = %upstream.origin(), "listening");

    let state = Arc::new(State {
        upstream,
        auth,
        allowed_paths: proxy.allowed_paths.clone(),
        allowed_clients: proxy.allowed_clients.clone(),
        max_url_bytes: proxy.max_url_bytes,
        public_base: public_base(local),
    });
    let limits = Limits {
        max_connections: proxy.max_connections,
        header_timeout: proxy.header_timeout,
        idle_timeout: proxy.idle_timeout,
        max_header_bytes: proxy.max_header_bytes,
        max_headers: proxy.max_headers,
        shutdown_grace: proxy.shutdown_grace,
    };
    server::serve(listener, state, limits, shutdown_signal()).await;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the proxy with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

/// `http://IP` when the port is 80, else `http://IP:PORT`; IPv6 in brackets.
fn public_base(addr: std::net::SocketAddr) -> String {
    match (addr.port(), addr.ip()) {
        (80, std::net::IpAddr::V6(ip)) => format!("http://[{ip}]"),
        (80, ip) => format!("http://{ip}"),
        _ => format!("http://{addr}"),
    }
}
