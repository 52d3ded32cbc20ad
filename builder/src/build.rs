//! `ci-builder build`: a thin driver. It checks that the way to the
//! packages is in place (preflight), runs Kayobe pointed at the proxy with
//! the password kept out of its arguments and environment, streams its
//! output, forwards SIGINT/SIGTERM, and reports the images it made.

use crate::audit::patterns::Matcher;
use crate::error::{BuilderError, Preflight};
use crate::net::netlink::Netlink;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use nix::sys::signal::Signal;
use pulp_auth_config::{Config, Distro};
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio::signal::unix::{signal, SignalKind};

/// The proxy URL Kayobe is given (the rule the proxy uses for its own
/// address).
pub use pulp_auth_config::http_url as proxy_url;

/// How long the proxy's status URL may take to answer.
const PROXY_TIMEOUT: Duration = Duration::from_secs(15);

/// Which Kayobe image set to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// `kayobe seed container image build`.
    Seed,
    /// `kayobe overcloud container image build`.
    Overcloud,
}

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct Request {
    /// seed or overcloud.
    pub target: Target,
    /// Push the images after building.
    pub push: bool,
    /// Base distribution; `[build] distro` when absent.
    pub distro: Option<Distro>,
    /// Image tag; `<distro>-<UTC datetime>` when absent.
    pub tag: Option<String>,
    /// Image name patterns passed through to Kayobe.
    pub regexes: Vec<String>,
}

/// The exact command to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The program (`[build] kayobe`).
    pub program: String,
    /// Arguments after the program: the Kayobe subcommand, the `-e`
    /// overrides pointing it at the proxy, then the regexes.
    pub args: Vec<String>,
    /// The child's whole environment.
    pub env: Vec<(OsString, OsString)>,
    /// Names of caller variables left out of it.
    pub removed: Vec<String>,
    /// The tag the images get (`kolla_tag`): `--tag` or the default.
    pub tag: String,
}

/// `<distro>-<UTC datetime>`, e.g. `rocky-20261126T093000`.
pub fn default_tag(distro: Distro, now: SystemTime) -> String {
    let stamp = humantime::format_rfc3339_seconds(now).to_string();
    let compact: String = stamp
        .chars()
        .filter(|c| !matches!(c, '-' | ':' | 'Z'))
        .collect();
    format!("{distro}-{compact}")
}

/// Builds the plan. `environ` is the caller's environment; `matcher`, when
/// the password could be read, finds variables whose value holds it in any
/// form.
pub fn plan(
    config: &Config,
    req: &Request,
    environ: Vec<(OsString, OsString)>,
    matcher: Option<&Matcher>,
    now: SystemTime,
) -> Result<Plan, BuilderError> {
    let listen = config.proxy()?.listen.socket_addr();
    let distro = req.distro.unwrap_or(config.build.distro);
    let tag = req.tag.clone().unwrap_or_else(|| default_tag(distro, now));
    let tag_ok = tag.len() <= 128
        && tag
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !tag_ok {
        return Err(BuilderError::BadTag { tag });
    }
    let mut args = vec![
        match req.target {
            Target::Seed => "seed",
            Target::Overcloud => "overcloud",
        }
        .to_string(),
        "container".into(),
        "image".into(),
        "build".into(),
    ];
    if req.push {
        args.push("--push".into());
    }
    for extra in [
        "stackhpc_repo_mirror_auth_proxy_enabled=true".to_string(),
        format!("stackhpc_repo_mirror_auth_proxy_url={}", proxy_url(listen)),
        format!("kolla_base_distro={distro}"),
        format!("kolla_tag={tag}"),
    ] {
        args.push("-e".into());
        args.push(extra);
    }
    args.extend(req.regexes.iter().cloned());

    // The config's Kayobe settings replace the caller's.
    let overridden = |k: &OsString| {
        (k == "KAYOBE_CONFIG_PATH" && config.build.kayobe_config_path.is_some())
            || (k == "KAYOBE_ENVIRONMENT" && config.build.environment.is_some())
    };
    let mut env = Vec::with_capacity(environ.len() + 2);
    let mut removed = Vec::new();
    for (k, v) in environ {
        let holds_secret = k == pulp_auth_config::credentials::PASSWORD_ENV
            || matcher.is_some_and(|m| m.is_match(v.as_bytes()));
        if holds_secret {
            removed.push(k.to_string_lossy().into_owned());
        } else if !overridden(&k) {
            env.push((k, v));
        }
    }
    if let Some(p) = &config.build.kayobe_config_path {
        env.push(("KAYOBE_CONFIG_PATH".into(), p.clone().into_os_string()));
    }
    if let Some(e) = &config.build.environment {
        env.push(("KAYOBE_ENVIRONMENT".into(), e.into()));
    }
    removed.sort();
    Ok(Plan {
        program: config.build.kayobe.clone(),
        args,
        env,
        removed,
        tag,
    })
}

/// Shell-quotes one word for the dry-run printout.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

impl Plan {
    /// The command line, shell-quoted.
    pub fn command_line(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|w| shell_quote(w))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Every check that must pass before anything is started; the first
/// failure is one line saying what to do.
pub async fn preflight(config: &Config, plan: &Plan) -> Result<(), BuilderError> {
    let listen = config.proxy()?.listen.socket_addr();
    listen_address_present(config, listen.ip()).await?;
    proxy_answers(listen).await?;
    let docker = crate::audit::docker().await.map_err(|e| match e {
        BuilderError::Docker(source) => Preflight::DockerDown(source).into(),
        other => other,
    })?;
    docker.ping().await.map_err(Preflight::DockerDown)?;
    find_program(&plan.program)?;
    Ok(())
}

async fn listen_address_present(config: &Config, ip: IpAddr) -> Result<(), BuilderError> {
    if ip.is_loopback() {
        return Ok(());
    }
    let nl = Netlink::connect().map_err(BuilderError::NetlinkSocket)?;
    let addresses = nl.addresses().await?;
    if addresses.iter().any(|a| a.net.addr() == ip) {
        return Ok(());
    }
    let bridge = match config.network.as_ref() {
        Some(net) if net.address.addr() == ip => {
            let status = crate::net::status(net).await?;
            Some(if status.differences.is_empty() {
                vec![format!("{} lacks {}", net.bridge, net.address)]
            } else {
                status.differences
            })
        }
        _ => None,
    };
    Err(Preflight::ListenAddressMissing { ip, bridge }.into())
}

async fn proxy_answers(listen: SocketAddr) -> Result<(), Preflight> {
    let url = format!("{}/pulp/api/v3/status/", proxy_url(listen));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let uri: http::Uri = match url.parse() {
        Ok(uri) => uri,
        Err(source) => return Err(Preflight::BadUrl { url, source }),
    };
    let resp = match tokio::time::timeout(PROXY_TIMEOUT, client.get(uri)).await {
        Err(_) => {
            return Err(Preflight::ProxyTimeout {
                url,
                after: PROXY_TIMEOUT,
            })
        }
        Ok(Err(source)) => return Err(Preflight::ProxyDown { url, source }),
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let reason = String::from_utf8_lossy(&body[..body.len().min(200)])
        .trim()
        .to_string();
    match status.as_u16() {
        200 => Ok(()),
        502 | 504 => Err(Preflight::UpstreamRefused { status, reason }),
        403 => Err(Preflight::ProxyRefused { status, reason }),
        _ => Err(Preflight::ProxyStatus {
            url,
            status,
            reason,
        }),
    }
}

/// Resolves `program` like the shell does, or says it is missing.
pub fn find_program(program: &str) -> Result<PathBuf, Preflight> {
    let executable = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    let found = if program.contains('/') {
        let p = PathBuf::from(program);
        executable(&p).then_some(p)
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(program))
                .find(|p| executable(p))
        })
    };
    found.ok_or_else(|| Preflight::KayobeMissing {
        program: program.to_string(),
    })
}

/// Runs the plan with stdio inherited, forwarding SIGINT and SIGTERM, and
/// returns the exit code the builder should use (128+N for a signal).
pub async fn run(plan: &Plan) -> Result<i32, BuilderError> {
    let mut child = tokio::process::Command::new(&plan.program)
        .args(&plan.args)
        .env_clear()
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .spawn()
        .map_err(|source| BuilderError::Spawn {
            program: plan.program.clone(),
            source,
        })?;
    let pid = child.id().map(|p| nix::unistd::Pid::from_raw(p as i32));
    let mut int = signal(SignalKind::interrupt()).map_err(BuilderError::Signals)?;
    let mut term = signal(SignalKind::terminate()).map_err(BuilderError::Signals)?;
    let status = loop {
        let forward = tokio::select! {
            status = child.wait() => break status.map_err(|source| BuilderError::Wait {
                program: plan.program.clone(),
                source,
            })?,
            _ = int.recv() => Signal::SIGINT,
            _ = term.recv() => Signal::SIGTERM,
        };
        if let Some(pid) = pid {
            let _ = nix::sys::signal::kill(pid, forward);
        }
    };
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}
