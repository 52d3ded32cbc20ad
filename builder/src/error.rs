//! `ci-builder`'s errors, written for the operator running it. Every error
//! exits 2; `net status` uses 1 for "differs" and `audit` 1 for "leaks".

use crate::net::netlink::NetlinkError;

/// Failures of `net down`, with what did succeed.
#[derive(Debug)]
pub struct NetFailures {
    /// What was removed.
    pub done: Vec<String>,
    /// What could not be.
    pub failures: Vec<String>,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum BuilderError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] pulp_auth_config::ConfigError),
    /// No CAP_NET_ADMIN.
    #[error("{0}: needs root or CAP_NET_ADMIN; run it with sudo")]
    NotPermitted(String),
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket: {0}")]
    NetlinkSocket(std::io::Error),
    /// A netlink request failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// `up` found something in the way and changed nothing.
    #[error("nothing was changed:\n{}", bullets(.0))]
    Conflict(Vec<String>),
    /// A link disappeared while being set up.
    #[error("{0} disappeared right after it was created; is another tool managing it (NetworkManager, networkd)?")]
    Vanished(String),
    /// `down` could not remove everything.
    #[error("could not remove everything:\n{}", bullets(&.0.failures))]
    Down(NetFailures),
    /// `persist` would overwrite files with other content.
    #[error("these files exist with other content; pass --force to replace them:\n{}", bullets(.0))]
    Exists(Vec<String>),
    /// The Docker daemon could not be reached or refused a request.
    #[error("Docker: {0}; is the daemon running, and DOCKER_HOST right?")]
    Docker(String),
    /// An image named on the command line does not exist.
    #[error("no such image: {0}; check the name with `docker image ls`")]
    NoSuchImage(String),
    /// The password could not be loaded (audit needs it to search for it).
    #[error("cannot load the password to search for: {0}")]
    Credentials(#[from] pulp_auth_config::credentials::CredentialError),
    /// Nothing to audit.
    #[error("no images to audit: name some, or pass --tag with a tag that local images have")]
    NothingToAudit,
    /// A check before the build failed; nothing was started.
    #[error("preflight: {0}")]
    Preflight(String),
    /// A command-line value is not acceptable.
    #[error("{0}")]
    Usage(String),
    /// A file operation failed.
    #[error("{0}")]
    Io(String),
}

fn bullets(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("  - {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}
