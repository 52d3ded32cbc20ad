//! `ci-builder build`: a thin driver. It checks that the way to the
//! packages is in place (preflight), runs Kayobe or kolla-build pointed at
//! the proxy with the password kept out of its arguments and environment,
//! streams its output, forwards SIGINT/SIGTERM, and reports the images it
//! made.

use crate::audit::patterns::Matcher;
use crate::error::{BuilderError, Preflight};
use crate::net::netlink::Netlink;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use nix::sys::signal::Signal;
use pulp_auth_config::{Config, Distro, Tool};
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

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct Request {
    /// The words after `build`: `seed|overcloud` then the regexes for
    /// Kayobe, only regexes for kolla-build.
    pub words: Vec<String>,
    /// Push the images after building.
    pub push: bool,
    /// Base distribution; Kayobe's configuration decides when absent.
    pub distro: Option<Distro>,
    /// Image tag; Kayobe's configuration decides when absent.
    pub tag: Option<String>,
}

/// The exact command to run.
#[derive(Debug)]
pub struct Plan {
    /// The program (`[build] kayobe` or `[build] kolla_build`).
    pub program: String,
    /// Its configuration key, for messages.
    pub program_key: &'static str,
    /// Arguments after the program: the Kayobe subcommand, the `-e`
    /// overrides pointing it at the proxy, then the regexes.
    pub args: Vec<String>,
    /// The child's whole environment.
    pub env: Vec<(OsString, OsString)>,
    /// Names of caller variables left out of it.
    pub removed: Vec<String>,
    /// `--tag`, passed as `kolla_tag`; `None` leaves it to Kayobe. Always
    /// set for kolla-build, which ci-builder configures.
    pub tag: Option<String>,
    /// kolla-build: the private directory holding the kolla-build.conf
    /// and template override written for this build (removed when the
    /// plan is dropped), and what was written.
    pub kolla: Option<(tempfile::TempDir, crate::kolla::Files)>,
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
    let (env, removed) = scrubbed(config, environ, matcher);
    match config.build.tool {
        Tool::Kayobe => kayobe_plan(config, req, listen, env, removed),
        Tool::KollaBuild => kolla_plan(config, req, listen, env, removed),
    }
}

/// `kayobe seed|overcloud container image build` with the extra vars that
/// point it at the proxy.
fn kayobe_plan(
    config: &Config,
    req: &Request,
    listen: SocketAddr,
    env: Vec<(OsString, OsString)>,
    removed: Vec<String>,
) -> Result<Plan, BuilderError> {
    let target = match req.words.first().map(String::as_str) {
        Some("seed") => "seed",
        Some("overcloud") => "overcloud",
        other => {
            return Err(BuilderError::Usage(format!(
                "build with build.tool = \"kayobe\" starts with seed or overcloud, not {}; \
                 e.g. `ci-builder build seed`",
                other.map_or("nothing".to_string(), |w| format!("`{w}`"))
            )))
        }
    };
    let mut args = vec![
        target.to_string(),
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
    args.extend(req.words[1..].iter().cloned());
    Ok(Plan {
        program: config.build.kayobe.clone(),
        program_key: "kayobe",
        args,
        env,
        removed,
        tag: req.tag.clone(),
        kolla: None,
    })
}

/// `kolla-build --config-file <ours>`, with our kolla-build.conf and
/// template override written to a private directory.
fn kolla_plan(
    config: &Config,
    req: &Request,
    listen: SocketAddr,
    env: Vec<(OsString, OsString)>,
    removed: Vec<String>,
) -> Result<Plan, BuilderError> {
    use crate::kolla;
    if let Some(word @ ("seed" | "overcloud")) = req.words.first().map(String::as_str) {
        return Err(BuilderError::Usage(format!(
            "`{word}` is a Kayobe target; with build.tool = \"kolla-build\" give only image \
             regexes (e.g. `ci-builder build ^base$ ^cron$`), or set build.tool = \"kayobe\""
        )));
    }
    let (defaults, operator_text) = match &config.build.kolla_config {
        Some(path) => {
            let (d, text) = kolla::operator_conf(path)?;
            (d, Some(text))
        }
        None => (kolla::OperatorDefaults::default(), None),
    };
    if let Some(path) = &config.build.template_override {
        kolla::check_operator_template(path)?;
    }
    let base = req
        .distro
        .or(config.build.distro)
        .map(|d| d.as_str().to_string())
        .or(defaults.base)
        .unwrap_or_else(|| Distro::Rocky.as_str().to_string());
    let tag = match req.tag.clone().or(defaults.tag) {
        Some(tag) => {
            check_tag(&tag)?;
            tag
        }
        None => format!("{base}-{}", timestamp(SystemTime::now())),
    };
    let dir = tempfile::Builder::new()
        .prefix("ci-builder-kolla-")
        .tempdir()
        .map_err(|source| BuilderError::Io {
            action: "create a private directory in",
            path: std::env::temp_dir(),
            source,
        })?;
    let template_path = dir.path().join("ci-builder-override.j2");
    let conf_path = dir.path().join("kolla-build.conf");
    let files = kolla::Files {
        conf: kolla::conf(
            &kolla::Settings {
                base: &base,
                tag: &tag,
                template: &template_path,
                operator_template: config.build.template_override.as_deref(),
            },
            operator_text.as_deref(),
        ),
        template: kolla::template_override(&proxy_url(listen), &config.build.mirrors),
    };
    for (path, text) in [(&conf_path, &files.conf), (&template_path, &files.template)] {
        std::fs::write(path, text).map_err(|source| BuilderError::Io {
            action: "write",
            path: path.clone(),
            source,
        })?;
    }
    let mut args = vec![
        "--config-file".to_string(),
        conf_path.to_string_lossy().into_owned(),
    ];
    if req.push {
        args.push("--push".into());
    }
    args.extend(req.words.iter().cloned());
    Ok(Plan {
        program: config.build.kolla_build.clone(),
        program_key: "kolla_build",
        args,
        env,
        removed,
        tag: Some(tag),
        kolla: Some((dir, files)),
    })
}

/// `20261204T064000`, UTC: the time part of a generated tag.
fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect()
}

/// The caller's environment without any variable that holds the password
/// (by name or by value), with the config's Kayobe settings in place of
/// the caller's; and the names left out.
fn scrubbed(
    config: &Config,
    environ: Vec<(OsString, OsString)>,
    matcher: Option<&Matcher>,
) -> (Vec<(OsString, OsString)>, Vec<String>) {
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
    (env, removed)
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
    find_program(&plan.program).ok_or_else(|| Preflight::ProgramMissing {
        key: plan.program_key,
        program: plan.program.clone(),
    })?;
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

/// Resolves `program` like the shell does.
pub fn find_program(program: &str) -> Option<PathBuf> {
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
    found
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
    // Handlers first: a signal that arrives while the child starts is then
    // forwarded, not fatal, and the child starts with both signals at their
    // default, since exec resets caught signals but keeps ignored ones (a
    // script's background job is started with SIGINT ignored).
    let mut int = signal(SignalKind::interrupt()).map_err(BuilderError::Signals)?;
    let mut term = signal(SignalKind::terminate()).map_err(BuilderError::Signals)?;
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
