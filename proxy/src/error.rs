//! The proxy's errors. Start-up errors are for the operator's terminal;
//! request errors are turned into responses in exactly one place
//! (`respond::error_response`), where the client gets a fixed short reason and
//! the log gets the cause.

use std::fmt;
use std::path::PathBuf;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] pulp_auth_config::ConfigError),
    /// The password could not be loaded.
    #[error(transparent)]
    Credentials(#[from] pulp_auth_config::credentials::CredentialError),
    /// `upstream.ca_file` is unusable.
    #[error("upstream.ca_file {}: {reason}; point it at a PEM file of CA certificates", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `upstream.ca_file` is not a file the proxy may trust: whoever can
    /// change it can add a trust anchor.
    #[error("upstream.ca_file {0}")]
    CaFileUnsafe(pulp_auth_config::files::FileError),
    /// No trust anchor at all.
    #[error("no trust anchors: the system store is empty and upstream.ca_file is not set; install ca-certificates or set upstream.ca_file")]
    NoTrustAnchors,
    /// The upstream host cannot be sent as a `Host` header.
    #[error("upstream.url's host is not a valid Host header value")]
    UpstreamHost,
    /// The TLS library refused the settings.
    #[error("cannot set up TLS to the upstream: {0}")]
    Tls(#[from] rustls::Error),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}{hint}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
        /// What to do.
        hint: &'static str,
    },
    /// `proxy.interface` is set and the listen IP is not on it.
    #[error("proxy.listen {addr} is not assigned to interface {interface} ({found}); run `ci-builder net up`, or fix proxy.listen / proxy.interface")]
    NotOnInterface {
        /// The listen IP.
        addr: std::net::IpAddr,
        /// The interface.
        interface: String,
        /// What was found instead.
        found: String,
    },
    /// The socket systemd passed is not usable or not the configured one.
    #[error("socket activation: {0}")]
    Inherited(String),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// Reading the host's interfaces failed.
    #[error("cannot list network interfaces to check proxy.interface: {0}")]
    Interfaces(std::io::Error),
}

impl StartError {
    /// The process exit code: 78 (EX_CONFIG) for configuration mistakes,
    /// 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Config(_)
            | StartError::Credentials(_)
            | StartError::CaFile { .. }
            | StartError::CaFileUnsafe(_)
            | StartError::NoTrustAnchors
            | StartError::UpstreamHost
            | StartError::NotOnInterface { .. }
            | StartError::Inherited(_) => 78,
            _ => 1,
        }
    }
}

/// Why a request was refused before anything was sent upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not GET or HEAD.
    Method,
    /// Absolute-form, authority-form or asterisk-form request target.
    TargetForm,
    /// A target that cannot be normalised safely (raw non-ASCII, encoded
    /// `/`, `\`, dot segments plain, encoded or disguised, escapes that are
    /// invalid or not UTF-8, escaping the root).
    BadPath(&'static str),
    /// A clean path outside `proxy.allowed_paths`.
    PathNotAllowed,
    /// Zero or several `Host` headers, or one that is not `host[:port]`.
    Host(&'static str),
    /// GET and HEAD carry no body here.
    Body,
    /// The peer is outside `proxy.allowed_clients`.
    Client,
    /// The request target is longer than `proxy.max_url_bytes`.
    UriTooLong,
}

impl Refusal {
    /// The rule's name, for logs and metrics.
    pub fn rule(&self) -> &'static str {
        match self {
            Refusal::Method => "method",
            Refusal::TargetForm => "target-form",
            Refusal::BadPath(_) => "path-syntax",
            Refusal::PathNotAllowed => "path-not-allowed",
            Refusal::Host(_) => "host",
            Refusal::Body => "body",
            Refusal::Client => "client",
            Refusal::UriTooLong => "url-length",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Method => f.write_str("method not allowed: only GET and HEAD are forwarded"),
            Refusal::TargetForm => {
                f.write_str("request target is not origin-form: this is not a forward proxy")
            }
            Refusal::BadPath(why) => write!(f, "bad path: {why}"),
            Refusal::PathNotAllowed => f.write_str("path is outside proxy.allowed_paths"),
            Refusal::Host(why) => write!(f, "bad Host header: {why}"),
            Refusal::Body => f.write_str("GET and HEAD requests must not carry a body"),
            Refusal::Client => f.write_str("client address is outside proxy.allowed_clients"),
            Refusal::UriTooLong => f.write_str("request target longer than proxy.max_url_bytes"),
        }
    }
}

/// What went wrong talking to the upstream.
#[derive(Debug, Clone)]
pub enum UpstreamError {
    /// The certificate or host name did not verify.
    Certificate(String),
    /// Another TLS failure (protocol version, handshake).
    Tls(String),
    /// TCP connect refused.
    Refused(String),
    /// The host name did not resolve.
    Dns(String),
    /// TCP + TLS did not complete in time.
    ConnectTimeout,
    /// No response head in time.
    ResponseTimeout,
    /// The upstream answered 401, or a 403 that says authentication was
    /// missing or failed: the credentials were refused.
    CredentialsRefused(http::StatusCode),
    /// The upstream answered any other 403: it knows the proxy's user and
    /// does not let it read this path.
    Forbidden,
    /// The response is framed in a way the proxy cannot forward faithfully.
    Framing(Framing),
    /// Any other failure, with its cause chain.
    Other(String),
    /// A hop to object storage failed the way `cause` names.
    Storage {
        /// The storage host (never the URL: its query is a credential).
        host: String,
        /// What failed.
        cause: Box<UpstreamError>,
    },
    /// The storage answered 401 or 403 (an expired or refused signature),
    /// also after a fresh redirect.
    StorageRefused {
        /// The storage host.
        host: String,
        /// Its status.
        status: http::StatusCode,
    },
    /// A redirect target the proxy may not follow: outside
    /// `upstream.redirect_hosts`, a private address, plain http.
    StorageHost {
        /// The host.
        host: String,
        /// Which rule.
        why: &'static str,
    },
    /// More than `upstream.max_redirects` hops, a loop, or an unusable
    /// `Location`.
    Redirects {
        /// The last host.
        host: String,
        /// What went wrong.
        why: &'static str,
    },
}

/// Response framing the proxy refuses to forward (see `framing`): with
/// any of these, the bytes the client would get are not what the upstream
/// meant as the content, or their end cannot be told from a cut
/// connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// A 1xx status as the final answer to a plain request (`101
    /// Switching Protocols`: what follows is another protocol).
    Informational(http::StatusCode),
    /// A transfer coding other than `chunked` alone (`gzip, chunked`,
    /// `chunked, gzip`, `identity`, `chunked` twice).
    TransferCoding,
    /// Neither `Content-Length` nor chunked: the body ends when the
    /// connection does, so a cut connection looks like a complete file.
    CloseDelimited,
}

impl fmt::Display for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Framing::Informational(s) => write!(
                f,
                "the upstream answered {s} to a plain request; only final answers are forwarded"
            ),
            Framing::TransferCoding => f.write_str(
                "the upstream used a transfer coding other than `chunked` alone (e.g. gzip); only Content-Length and chunked bodies are forwarded",
            ),
            Framing::CloseDelimited => f.write_str(
                "the upstream sent a body with neither Content-Length nor chunked framing, whose end cannot be told from a cut connection; configure the upstream to send Content-Length or chunked",
            ),
        }
    }
}

impl UpstreamError {
    /// The kind's name, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Certificate(_) => "bad-certificate",
            UpstreamError::Tls(_) => "tls",
            UpstreamError::Refused(_) => "connect-refused",
            UpstreamError::Dns(_) => "dns",
            UpstreamError::ConnectTimeout => "connect-timeout",
            UpstreamError::ResponseTimeout => "response-timeout",
            UpstreamError::CredentialsRefused(_) => "credentials-refused",
            UpstreamError::Forbidden => "forbidden",
            UpstreamError::Framing(_) => "framing",
            UpstreamError::Other(_) => "other",
            UpstreamError::Storage { cause, .. } => match cause.kind() {
                "bad-certificate" => "storage-bad-certificate",
                "tls" => "storage-tls",
                "connect-refused" => "storage-connect-refused",
                "dns" => "storage-dns",
                "connect-timeout" => "storage-connect-timeout",
                "response-timeout" => "storage-response-timeout",
                "framing" => "storage-framing",
                _ => "storage-other",
            },
            UpstreamError::StorageRefused { .. } => "storage-refused",
            UpstreamError::StorageHost { .. } => "storage-host",
            UpstreamError::Redirects { .. } => "redirects",
        }
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Certificate(e) => write!(
                f,
                "upstream TLS certificate rejected: {e}; check upstream.url's host name and upstream.ca_file"
            ),
            UpstreamError::Tls(e) => write!(f, "TLS handshake with the upstream failed: {e}"),
            UpstreamError::Refused(e) => write!(f, "upstream refused the connection: {e}"),
            UpstreamError::Dns(e) => write!(f, "upstream host name did not resolve: {e}"),
            UpstreamError::ConnectTimeout => f.write_str(
                "connecting to the upstream timed out (upstream.connect_timeout_secs)",
            ),
            UpstreamError::ResponseTimeout => f.write_str(
                "the upstream sent no response head in time (upstream.response_timeout_secs)",
            ),
            UpstreamError::CredentialsRefused(s) => write!(
                f,
                "the upstream refused the proxy's credentials ({s}); check upstream.username and the password source"
            ),
            UpstreamError::Forbidden => f.write_str(
                "the upstream accepted the proxy's credentials but forbids this path to its user (403); in Pulp, give upstream.username the download role on the distribution's content guard"
            ),
            UpstreamError::Framing(why) => write!(f, "upstream response refused: {why}"),
            UpstreamError::Other(e) => write!(f, "upstream request failed: {e}"),
            UpstreamError::Storage { host, cause } => {
                write!(f, "following the upstream's redirect to storage host {host}: {cause}")
            }
            UpstreamError::StorageRefused { host, status } => write!(
                f,
                "storage host {host} refused the presigned URL ({status}), also after a fresh redirect: an expired signature or clocks apart"
            ),
            UpstreamError::StorageHost { host, why } => write!(
                f,
                "the upstream redirected to {host}, which the proxy does not follow: {why}"
            ),
            UpstreamError::Redirects { host, why } => {
                write!(f, "redirects not followed at {host}: {why}")
            }
        }
    }
}

impl std::error::Error for UpstreamError {}

/// The outcome of one request that did not produce an upstream response to
/// stream back.
#[derive(Debug)]
pub enum ProxyError {
    /// Refused by policy; nothing was sent upstream.
    Refused(Refusal),
    /// The upstream failed.
    Upstream(UpstreamError),
}

/// Walks an error's `source()` chain into one line (shared with
/// ci-builder).
pub use pulp_auth_config::error_chain as chain;

/// Every error in the chain, outermost first, including those wrapped
/// inside `io::Error`s.
pub fn causes<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Vec<&'a (dyn std::error::Error + 'static)> {
    let mut out = Vec::new();
    let mut stack = vec![err];
    while let Some(e) = stack.pop() {
        if out.len() > 32 {
            break;
        }
        out.push(e);
        if let Some(source) = e.source() {
            stack.push(source);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            stack.push(inner);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::StartError;

    /// 78 stops systemd retrying (`RestartPreventExitStatus=78`): only for
    /// what a restart cannot fix.
    #[test]
    fn exit_codes_tell_configuration_mistakes_from_other_failures() {
        let io = || std::io::Error::other("x");
        for (e, code) in [
            (StartError::NoTrustAnchors, 78),
            (StartError::UpstreamHost, 78),
            (StartError::Inherited("two sockets".into()), 78),
            (
                StartError::NotOnInterface {
                    addr: "192.168.33.3".parse().unwrap(),
                    interface: "breth1".into(),
                    found: "missing".into(),
                },
                78,
            ),
            (StartError::Runtime(io()), 1),
            (StartError::Interfaces(io()), 1),
            (
                StartError::Bind {
                    addr: "127.0.0.1:80".parse().unwrap(),
                    source: io(),
                    hint: "",
                },
                1,
            ),
        ] {
            assert_eq!(e.exit_code(), code, "{e}");
        }
    }
}
