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
    /// Base distribution; Kayobe's configuration decides when absent.
    pub distro: Option<Distro>,
    /// Image tag; Kayobe's configuration decides when absent.
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
    /// `--tag`, passed as `kolla_tag`; `None` leaves it to Kayobe.
    pub tag: Option<String>,
}

/// Builds the plan. `environ` is the caller's environment; `matcher`, when
/// the password could be read, finds variables whose value holds it in any
/// form.
pub fn plan(
    config: &Config,
    req: &Request,
    environ: Vec<(OsString, OsString)>,
    matcher: Option<&Matcher>,
) -> Result<Plan, BuilderError> {
    let listen = config.proxy()?.listen.socket_addr();
    if let Some(tag) = &req.tag {
        check_tag(tag)?;
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
    // Extra vars beat every other Ansible variable: only what the operator
    // asked for on this command line, so the Kayobe configuration's own
    // distribution and tag stand otherwise.
    let extras = [
        Some("stackhpc_repo_mirror_auth_proxy_enabled=true".to_string()),
        Some(format!(
            "stackhpc_repo_mirror_auth_proxy_url={}",
            proxy_url(listen)
        )),
        req.distro.map(|d| format!("kolla_base_distro={d}")),
        req.tag.as_ref().map(|t| format!("kolla_tag={t}")),
    ];
    for extra in extras.into_iter().flatten() {
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
        tag: req.tag.clone(),
    })
}

/// A Docker tag: letters, digits, `_`, `.`, `-`, at most 128, not starting
/// with `.` or `-`.
fn check_tag(tag: &str) -> Result<(), BuilderError> {
    let ok = tag.len() <= 128
        && tag
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(BuilderError::BadTag {
            tag: tag.to_string(),
        })
    }
}

/// Which images the build made, and how the builder knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Made {
    /// Every local image with this tag (`--tag`, or read from the
    /// `kolla-build.conf` Kayobe wrote).
    Tagged(String),
    /// Every image Docker created since the build started; the reason the
    /// tag could not be read comes with it.
    CreatedSince(SystemTime, String),
}

impl Plan {
    /// How to find the build's images once it has run, `started` being
    /// when it started.
    pub fn made(&self, started: SystemTime) -> Made {
        if let Some(tag) = &self.tag {
            return Made::Tagged(tag.clone());
        }
        let var = |name: &str| {
            self.env
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| PathBuf::from(v))
        };
        let environment = var("KAYOBE_ENVIRONMENT");
        let conf = crate::kayobe::build_conf_path(
            var("KAYOBE_CONFIG_PATH").as_deref(),
            environment.as_deref().and_then(Path::to_str),
        );
        match crate::kayobe::read_tag(&conf, started) {
            Ok(tag) => Made::Tagged(tag),
            Err(why) => Made::CreatedSince(started, why),
        }
    }
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
    // The proxy's own readiness (it proves the credentials upstream), not a
    // forwarded Pulp path, which narrowing `proxy.allowed_paths` could
    // refuse.
    let url = format!("{}/readyz", proxy_url(listen));
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
        502..=504 => Err(Preflight::UpstreamRefused { status, reason }),
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

/// How the build tool ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    /// Its exit status, or `None` when a signal ended it.
    pub code: Option<i32>,
    /// The signal that ended it.
    pub signal: Option<i32>,
    /// The last signal the builder itself received and passed on.
    pub forwarded: Option<Signal>,
}

impl Finished {
    /// Whether the tool succeeded.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit status {code}"),
            (None, Some(sig)) => write!(f, "killed by signal {sig}"),
            (None, None) => f.write_str("unknown status"),
        }
    }
}

/// Runs the plan with stdio inherited, forwarding SIGINT and SIGTERM.
pub async fn run(plan: &Plan) -> Result<Finished, BuilderError> {
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
    let mut forwarded = None;
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
        forwarded = Some(forward);
    };
    Ok(Finished {
        code: status.code(),
        signal: status.signal(),
        forwarded,
    })
}
