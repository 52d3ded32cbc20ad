//! `ci-builder`'s errors, written for the operator running it, and the exit
//! codes (`exit`): an error exits 2, a failed preflight 3; `net status`
//! uses 1 for "differs", `audit` and `build --audit` 1 for "leaks" and 5
//! for "incomplete", and `build` 4 when the build tool failed.
//!
//! Each message is one line (or a short list) that already names the
//! cause, so `main` prints `Display` alone; the causes are also kept as
//! `source()` for callers that want to tell cases apart.

use crate::net::netlink::NetlinkError;
use crate::net::{Conflict, DownFailure};
use std::fmt::Display;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The exit codes, one per outcome, so a CI job can tell the builder's own
/// verdicts from the build tool's.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// `audit`, `build --audit`: an image holds the credentials.
    /// `net status`: the host differs from the configuration.
    pub const FOUND: u8 = 1;
    /// An error of the builder (configuration, Docker, usage).
    pub const ERROR: u8 = 2;
    /// `build`: a check before the build failed; nothing was started.
    pub const PREFLIGHT: u8 = 3;
    /// `build`: the build tool (Kayobe or kolla-build) failed; its own
    /// status is in the summary.
    pub const TOOL_FAILED: u8 = 4;
    /// `audit`, `build --audit`: no credentials found, but a bound kept
    /// something from being searched (without `--allow-incomplete`).
    pub const INCOMPLETE: u8 = 5;
}

impl BuilderError {
    /// The exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            BuilderError::Preflight(_) => exit::PREFLIGHT,
            _ => exit::ERROR,
        }
    }
}

/// Failures of `net down`, with what did succeed.
#[derive(Debug)]
pub struct NetFailures {
    /// What was removed, one line each (`deleted dummy dummy1`).
    pub done: Vec<String>,
    /// What could not be removed.
    pub failures: Vec<DownFailure>,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum BuilderError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] pulp_auth_config::ConfigError),
    /// The kernel refused a netlink request: no CAP_NET_ADMIN.
    #[error("{}: needs root or CAP_NET_ADMIN; run it with sudo", .0.op)]
    NotPermitted(#[source] NetlinkError),
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket: {0}")]
    NetlinkSocket(#[source] io::Error),
    /// A netlink request failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// `up` found something in the way and changed nothing.
    #[error("nothing was changed:\n{}", bullets(.0))]
    Conflict(Vec<Conflict>),
    /// A link `up` had just created was gone when it looked for it.
    #[error("{link} disappeared right after it was created; is another tool managing it (NetworkManager, networkd)?")]
    Vanished {
        /// The link's name.
        link: String,
    },
    /// `down` could not remove everything.
    #[error("could not remove everything:\n{}", bullets(&.0.failures))]
    Down(NetFailures),
    /// `persist` would overwrite files with other content.
    #[error("these files exist with other content; pass --force to replace them:\n{}", bullets(.0.iter().map(|p| p.display())))]
    Exists(Vec<PathBuf>),
    /// `persist --dir` does not name a directory.
    #[error("{} is not a directory; create it (e.g. /etc/systemd/network) or pass another --dir", .0.display())]
    NotADirectory(PathBuf),
    /// The Docker daemon could not be reached or refused a request.
    #[error("Docker: {0}; is the daemon running, and DOCKER_HOST right?")]
    Docker(#[source] bollard::errors::Error),
    /// An image named on the command line does not exist.
    #[error("no such image: {image}; check the name with `docker image ls`")]
    NoSuchImage {
        /// The name as given.
        image: String,
    },
    /// Reading or searching an image's export failed part way.
    #[error("Docker: cannot read the export of {image}: {source}; is the daemon running, and DOCKER_HOST right?")]
    Export {
        /// The image being audited.
        image: String,
        /// From the export stream, or the archive inside it.
        source: io::Error,
    },
    /// An image archive or layout directory could not be read.
    #[error("cannot read {image}: {source}")]
    Read {
        /// The image as given.
        image: String,
        /// Why.
        source: io::Error,
    },
    /// The thread searching an export stopped without an answer.
    #[error("the search of the export of {image} stopped: {source}; this is a bug in ci-builder")]
    ScanStopped {
        /// The image being audited.
        image: String,
        /// The task's panic or cancellation.
        source: tokio::task::JoinError,
    },
    /// The password could not be loaded (audit needs it to search for it).
    #[error("cannot load the password to search for: {0}")]
    Credentials(#[from] pulp_auth_config::credentials::CredentialError),
    /// `audit` was given no image names and `--tag` matched no local image.
    #[error("no images to audit: name some, or pass --tag with a tag that local images have")]
    NothingToAudit,
    /// A check before the build failed; nothing was started.
    #[error("preflight: {0}")]
    Preflight(#[from] Preflight),
    /// `--tag` is not a Docker tag.
    #[error("--tag {tag:?} is not a Docker tag: letters, digits, `_`, `.` and `-`, at most 128, not starting with `.` or `-`")]
    BadTag {
        /// The tag as given.
        tag: String,
    },
    /// `tags` could not change the image tags file.
    #[error(transparent)]
    Tags(#[from] crate::tags::TagsError),
    /// `tags` without `--tag`, and the tag of the last build is unknown.
    #[error("no --tag given and the tag of the last build is unknown ({0}); pass --tag")]
    NoTag(String),
    /// The Kayobe program passed preflight but could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// `[build] kayobe`.
        program: String,
        /// Why `exec` failed.
        source: io::Error,
    },
    /// SIGINT/SIGTERM could not be caught to forward them to the build.
    #[error("cannot catch SIGINT and SIGTERM to pass them on to the build: {0}")]
    Signals(#[source] io::Error),
    /// Waiting for the running build failed.
    #[error("lost track of {program} while it ran: {source}")]
    Wait {
        /// `[build] kayobe`.
        program: String,
        /// Why `wait` failed.
        source: io::Error,
    },
    /// A file operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. `read`.
        action: &'static str,
        /// The file or directory, e.g. `/etc/systemd/network/50-breth1.netdev`.
        path: PathBuf,
        /// The system's answer.
        source: io::Error,
    },
    /// `[build] kolla_config` holds a line that would break the build.
    #[error("build.kolla_config {}, line {line}: {message}", path.display())]
    KollaConfig {
        /// The operator's kolla-build.conf.
        path: PathBuf,
        /// 1-based.
        line: usize,
        /// What is wrong and what to do.
        message: String,
    },
    /// `[build] template_override` redefines a block of ci-builder's.
    #[error("build.template_override {}, line {line}: block `{block}` is ci-builder's (it points repositories at the proxy); Kolla renders both overrides as one template, so use another block, e.g. one named <image>_footer", path.display())]
    TemplateBlock {
        /// The operator's override.
        path: PathBuf,
        /// 1-based.
        line: usize,
        /// The block's name.
        block: String,
    },
    /// A build word that does not fit the configured tool.
    #[error("{0}")]
    Usage(String),
    /// A registry image could not be read.
    #[error("audit {image}: {why}")]
    Registry {
        /// The image as given (with its platform for an index entry).
        image: String,
        /// The registry's or the client's answer (never a credential).
        why: String,
    },
    /// A value could not be turned into JSON.
    #[error("cannot write {what} as JSON: {source}")]
    Json {
        /// What it was, e.g. `the audit report`.
        what: String,
        /// The serialiser's answer.
        source: serde_json::Error,
    },
}

/// The checks `build` makes before it starts Kayobe, each naming what to
/// fix.
#[derive(Debug, thiserror::Error)]
pub enum Preflight {
    /// `proxy.listen` is not an address of any interface here.
    #[error("proxy.listen {ip} is not an address of this host: {}", listen_hint(.bridge))]
    ListenAddressMissing {
        /// The address the proxy listens on.
        ip: IpAddr,
        /// When `ip` is `[network]`'s address: how the bridge differs
        /// from the config, one line each (never empty).
        bridge: Option<Vec<String>>,
    },
    /// The status URL could not be formed from `proxy.listen`.
    #[error("cannot form the URL {url}")]
    BadUrl {
        /// The text that failed to parse.
        url: String,
        /// The parser's answer.
        source: http::uri::InvalidUri,
    },
    /// Nothing accepted a connection at the proxy's address.
    #[error("nothing answers at {url}; start pulp-auth-proxy (`systemctl start pulp-auth-proxy`)")]
    ProxyDown {
        /// The status URL asked.
        url: String,
        /// The client's error (connection refused, ...).
        source: hyper_util::client::legacy::Error,
    },
    /// The proxy accepted the connection but did not answer in time.
    #[error("{url} did not answer within {} s; is pulp-auth-proxy stuck? see `journalctl -u pulp-auth-proxy`", .after.as_secs())]
    ProxyTimeout {
        /// The status URL asked.
        url: String,
        /// How long it waited.
        after: Duration,
    },
    /// The proxy's `/readyz` answered 503 (or a gateway error): it cannot
    /// use Pulp; the body holds the reason word.
    #[error("pulp-auth-proxy answers but is not ready ({status}: {reason}); check the password and `journalctl -u pulp-auth-proxy`")]
    UpstreamRefused {
        /// The proxy's status code.
        status: http::StatusCode,
        /// The start of the body.
        reason: String,
    },
    /// The proxy answered 403: this host is not allowed.
    #[error("pulp-auth-proxy refused this host ({status}: {reason}); check proxy.allowed_clients")]
    ProxyRefused {
        /// The proxy's status code.
        status: http::StatusCode,
        /// The start of the body.
        reason: String,
    },
    /// The proxy answered with another status than 200.
    #[error("{url} answered {status}: {reason}")]
    ProxyStatus {
        /// The status URL asked.
        url: String,
        /// The proxy's status code.
        status: http::StatusCode,
        /// The start of the body.
        reason: String,
    },
    /// The Docker daemon did not answer (the build reports images from it).
    #[error("the Docker daemon does not answer ({0}); start it, or set DOCKER_HOST")]
    DockerDown(#[source] bollard::errors::Error),
    /// `[build] kayobe` or `[build] kolla_build` is not an executable
    /// file, nor found on PATH.
    #[error("build.{key} `{program}` is not an executable program here; install it or set build.{key} to its path")]
    ProgramMissing {
        /// `kayobe` or `kolla_build`.
        key: &'static str,
        /// The program as configured.
        program: String,
    },
}

fn listen_hint(bridge: &Option<Vec<String>>) -> String {
    match bridge {
        Some(problems) => format!("{}; run `ci-builder net up`", problems.join("; ")),
        None => "assign it to an interface, or fix proxy.listen".to_string(),
    }
}

fn bullets<T: Display>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| format!("  - {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> http::StatusCode {
        http::StatusCode::from_u16(code).unwrap()
    }

    #[test]
    fn preflight_messages_say_what_to_do() {
        let cases: Vec<(BuilderError, &str)> = vec![
            (
                Preflight::ListenAddressMissing {
                    ip: "192.168.33.3".parse().unwrap(),
                    bridge: Some(vec!["breth1 is missing".into()]),
                }
                .into(),
                "preflight: proxy.listen 192.168.33.3 is not an address of this host: breth1 is missing; run `ci-builder net up`",
            ),
            (
                Preflight::ListenAddressMissing {
                    ip: "192.0.2.1".parse().unwrap(),
                    bridge: None,
                }
                .into(),
                "preflight: proxy.listen 192.0.2.1 is not an address of this host: assign it to an interface, or fix proxy.listen",
            ),
            (
                Preflight::ProxyTimeout {
                    url: "http://192.168.33.3/readyz".into(),
                    after: Duration::from_secs(15),
                }
                .into(),
                "preflight: http://192.168.33.3/readyz did not answer within 15 s; is pulp-auth-proxy stuck? see `journalctl -u pulp-auth-proxy`",
            ),
            (
                Preflight::UpstreamRefused {
                    status: status(503),
                    reason: "not ready: credentials-refused".into(),
                }
                .into(),
                "preflight: pulp-auth-proxy answers but is not ready (503 Service Unavailable: not ready: credentials-refused); check the password and `journalctl -u pulp-auth-proxy`",
            ),
            (
                Preflight::ProxyRefused {
                    status: status(403),
                    reason: "forbidden".into(),
                }
                .into(),
                "preflight: pulp-auth-proxy refused this host (403 Forbidden: forbidden); check proxy.allowed_clients",
            ),
            (
                Preflight::DockerDown(bollard::errors::Error::DockerResponseServerError {
                    status_code: 500,
                    message: "down".into(),
                })
                .into(),
                "preflight: the Docker daemon does not answer (Docker responded with status code 500: down); start it, or set DOCKER_HOST",
            ),
            (
                Preflight::ProgramMissing {
                    key: "kayobe",
                    program: "/nonexistent/kayobe".into(),
                }
                .into(),
                "preflight: build.kayobe `/nonexistent/kayobe` is not an executable program here; install it or set build.kayobe to its path",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }

    #[test]
    fn file_and_usage_messages_name_the_value() {
        let exists =
            BuilderError::Exists(vec!["/d/50-breth1.netdev".into(), "/d/50-x.network".into()]);
        assert_eq!(
            exists.to_string(),
            "these files exist with other content; pass --force to replace them:\n  - /d/50-breth1.netdev\n  - /d/50-x.network"
        );
        let io = BuilderError::Io {
            action: "write",
            path: "/d/50-breth1.netdev.tmp-ci-builder".into(),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert_eq!(
            io.to_string(),
            "cannot write /d/50-breth1.netdev.tmp-ci-builder: permission denied"
        );
        let tag = BuilderError::BadTag {
            tag: "no good".into(),
        };
        assert!(tag
            .to_string()
            .starts_with("--tag \"no good\" is not a Docker tag"));
        let image = BuilderError::NoSuchImage {
            image: "x:y".into(),
        };
        assert_eq!(
            image.to_string(),
            "no such image: x:y; check the name with `docker image ls`"
        );
    }

    #[test]
    fn netlink_messages_name_the_request() {
        let refused = || NetlinkError {
            op: "create bridge breth1".into(),
            source: io::Error::from_raw_os_error(1),
        };
        assert_eq!(
            BuilderError::NotPermitted(refused()).to_string(),
            "create bridge breth1: needs root or CAP_NET_ADMIN; run it with sudo"
        );
        let down = BuilderError::Down(NetFailures {
            done: vec!["deleted dummy dummy1".into()],
            failures: vec![DownFailure::Netlink(refused())],
        });
        assert!(
            down.to_string().starts_with(
                "could not remove everything:\n  - create bridge breth1: Operation not permitted"
            ),
            "{down}"
        );
    }
}
