//! The one configuration both `pulp-auth-proxy` and `ci-builder` read.
//!
//! Loading happens in two stages: the TOML file, then `PULP_AUTH_PROXY_*`
//! overrides from the environment the caller passes, are deserialised into
//! raw structs that refuse unknown keys (`load`); then every value is
//! checked into a type that cannot hold a bad value, with all problems
//! collected into one error (`check`). The password is not part of the
//! configuration: [`credentials::load_password`] reads it straight into a
//! `SecretString`.

#![warn(missing_docs)]

mod check;
pub mod credentials;
mod error;
pub mod files;
pub mod forms;
mod load;
mod raw;
pub mod signatures;
mod types;

pub use error::{ConfigError, Problem};

/// Walks an error's `source()` chain into one line: hyper's, hyper-util's
/// and reqwest's `Display` show only the top level.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}
pub use types::{
    http_url, parse_size, ClientNet, Distro, InterfaceName, ListenAddr, LogLevel, PathPrefix,
    ProbePath, RedirectHost, Scheme, UpstreamOrigin,
};

use ipnet::IpNet;
use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the binaries look when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/pulp-auth-proxy/config.toml";
/// Prefix of environment overrides; nested keys are joined with `__`.
pub const ENV_PREFIX: &str = "PULP_AUTH_PROXY_";

/// The checked configuration. Sections a binary does not use may be absent;
/// each binary asks for the ones it needs with [`Config::proxy`] and friends.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration came from, for messages.
    pub path: PathBuf,
    /// `[network]`: the bridge `ci-builder net` manages.
    pub network: Option<Network>,
    /// `[proxy]`.
    pub proxy: Option<Proxy>,
    /// `[upstream]`.
    pub upstream: Option<Upstream>,
    /// `[build]`.
    pub build: Build,
    /// `[cache]`: the proxy's read-through cache; absent means off.
    pub cache: Option<Cache>,
    /// Problems that do not stop start-up but an operator should see.
    pub warnings: Vec<String>,
}

/// `[network]`.
#[derive(Debug, Clone)]
pub struct Network {
    /// The bridge name (default `breth1`).
    pub bridge: InterfaceName,
    /// The bridge's address with its prefix length.
    pub address: IpNet,
    /// Dummy interfaces enslaved to the bridge to keep it up.
    pub ports: Vec<InterfaceName>,
}

impl Network {
    /// `network.bridge` when absent.
    pub const DEFAULT_BRIDGE: &'static str = "breth1";
}

/// `[proxy]`.
#[derive(Debug, Clone)]
pub struct Proxy {
    /// The one concrete address to listen on.
    pub listen: ListenAddr,
    /// When set, the listen IP must be on this interface at start.
    pub interface: Option<InterfaceName>,
    /// When set, only peers in these networks are served.
    pub allowed_clients: Option<Vec<ClientNet>>,
    /// Path prefixes that may be forwarded.
    pub allowed_paths: Vec<PathPrefix>,
    /// The log filter when `RUST_LOG` is not set.
    pub log_level: LogLevel,
    /// `text` (default) or `json` log lines.
    pub log_format: LogFormat,
    /// A separate address for `/metrics`; when absent, the main listener
    /// answers `/metrics`.
    pub metrics_listen: Option<ListenAddr>,
    /// Connections served at once. At the limit, idle keep-alive
    /// connections are closed to admit new ones; when every connection is
    /// serving a request, new ones wait.
    pub max_connections: u32,
    /// Connections one peer address may hold at once; more are closed at
    /// once.
    pub max_connections_per_client: u32,
    /// Largest request head (request line and headers) accepted, in bytes.
    pub max_header_bytes: usize,
    /// Most request headers accepted.
    pub max_headers: usize,
    /// Longest request target accepted, in bytes.
    pub max_url_bytes: usize,
    /// A client must send its complete request head within this time.
    pub header_timeout: Duration,
    /// An idle keep-alive connection is closed after this time.
    pub idle_timeout: Duration,
    /// A client that takes nothing of a response for this long is closed.
    pub send_timeout: Duration,
    /// How long in-flight requests may run on after SIGTERM.
    pub shutdown_grace: Duration,
    /// How long a `/readyz` probe result is reused; zero probes every time.
    pub readiness_cache: Duration,
    /// Fetches kept for `/fetches`; zero keeps none (and hashes nothing).
    pub fetch_records: u32,
}

impl Proxy {
    /// `proxy.allowed_paths` when absent: repository content and the status
    /// endpoint used for readiness. Never the rest of the REST API.
    pub const DEFAULT_ALLOWED_PATHS: [&'static str; 2] = ["/pulp/content/", "/pulp/api/v3/status/"];
    /// `proxy.fetch_records` when absent: a few Kolla builds' worth, about
    /// 5 MiB at most (the ring also bounds the bytes its paths take).
    pub const DEFAULT_FETCH_RECORDS: u32 = 20_000;
    /// `proxy.max_connections` when absent.
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;
    /// `proxy.max_connections_per_client` when absent: this fraction of
    /// `proxy.max_connections` (at least 1), so one address can never take
    /// every slot.
    pub const DEFAULT_CLIENT_SHARE: u32 = 2;
    /// `proxy.max_header_bytes` when absent.
    pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
    /// `proxy.max_headers` when absent.
    pub const DEFAULT_MAX_HEADERS: usize = 64;
    /// `proxy.max_url_bytes` when absent.
    pub const DEFAULT_MAX_URL_BYTES: usize = 8192;
    /// `proxy.header_timeout_secs` when absent.
    pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    /// `proxy.idle_timeout_secs` when absent.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    /// `proxy.send_timeout_secs` when absent.
    pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
    /// `proxy.shutdown_grace_secs` when absent.
    pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
    /// `proxy.readiness_cache_secs` when absent: readiness checks from load
    /// balancers or systemd must not turn into a request stream to Pulp.
    pub const DEFAULT_READINESS_CACHE: Duration = Duration::from_secs(5);
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable `key=value` lines.
    Text,
    /// One JSON object per line, for journald or Loki.
    Json,
}

/// `[upstream]`.
#[derive(Clone)]
pub struct Upstream {
    /// The Pulp origin and path prefix.
    pub origin: UpstreamOrigin,
    /// The basic-auth user name (not secret, but never needed in logs).
    pub username: String,
    /// `password_file`: the first password source when set.
    pub password_file: Option<PathBuf>,
    /// Extra trust anchors (PEM), added to the system store.
    pub ca_file: Option<PathBuf>,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Time to the upstream's response head.
    pub response_timeout: Duration,
    /// Longest gap between two body chunks.
    pub body_timeout: Duration,
    /// Most redirects to other origins followed for one request.
    pub max_redirects: u32,
    /// Hosts redirects may be followed to; `None`: any host whose
    /// addresses are all public.
    pub redirect_hosts: Option<Vec<RedirectHost>>,
    /// What `/readyz` probes (with HEAD) instead of the status endpoint,
    /// which needs no credentials and so cannot prove them.
    pub readiness_path: Option<ProbePath>,
}

impl Upstream {
    /// `upstream.max_redirects` when absent.
    pub const DEFAULT_MAX_REDIRECTS: u32 = 3;
    /// `upstream.connect_timeout_secs` when absent.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// `upstream.response_timeout_secs` when absent.
    pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
    /// `upstream.body_timeout_secs` when absent.
    pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
}

impl fmt::Debug for Upstream {
    // Hand-written so that no future field can print something secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("origin", &self.origin)
            .field("password_file", &self.password_file)
            .field("ca_file", &self.ca_file)
            .field("max_redirects", &self.max_redirects)
            .field("redirect_hosts", &self.redirect_hosts)
            .field("readiness_path", &self.readiness_path)
            .finish_non_exhaustive()
    }
}

/// `[build]`.
#[derive(Debug, Clone)]
pub struct Build {
    /// What `ci-builder build` drives.
    pub tool: Tool,
    /// The Kayobe program to run.
    pub kayobe: String,
    /// The kolla-build program to run (plain Kolla mode).
    pub kolla_build: String,
    /// The operator's own kolla-build.conf, merged into the one ci-builder
    /// writes (plain Kolla mode).
    pub kolla_config: Option<PathBuf>,
    /// The operator's own template override, rendered after ci-builder's
    /// (plain Kolla mode).
    pub template_override: Option<PathBuf>,
    /// Upstream repository URLs and the proxy paths that serve them: the
    /// plain Kolla mode's template override points repository files at
    /// these.
    pub mirrors: Vec<Mirror>,
    /// Exported as `KAYOBE_CONFIG_PATH` for Kayobe.
    pub kayobe_config_path: Option<PathBuf>,
    /// Exported as `KAYOBE_ENVIRONMENT` for Kayobe.
    pub environment: Option<String>,
    /// The base distribution for plain Kolla builds when `--distro` is not
    /// given. Kayobe builds leave the distribution to Kayobe's own
    /// configuration unless `--distro` is given.
    pub distro: Option<Distro>,
}

impl Build {
    /// `build.kayobe` when absent.
    pub const DEFAULT_KAYOBE: &'static str = "kayobe";
    /// `build.kolla_build` when absent.
    pub const DEFAULT_KOLLA_BUILD: &'static str = "kolla-build";
}

/// `build.tool`: what drives the image build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `kayobe seed|overcloud container image build`, pointed at the proxy
    /// through the StackHPC Kayobe configuration's variables.
    Kayobe,
    /// `kolla-build` with a configuration and template override that
    /// ci-builder writes.
    KollaBuild,
}

/// One `[build.mirrors]` entry: repository files naming `upstream` (or a
/// URL under it) are pointed at `path` on the proxy for the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// The upstream URL as repository files write it, without a trailing
    /// slash: `http://deb.debian.org/debian`.
    pub upstream: String,
    /// The proxy path that serves the same tree, ending in `/`.
    pub path: PathPrefix,
}

/// `[cache]`.
#[derive(Debug, Clone)]
pub struct Cache {
    /// The directory entries live in (absolute); created with mode 0700 if
    /// its parent exists.
    pub dir: PathBuf,
    /// The most bytes the entries may take together.
    pub max_size: u64,
}

impl Cache {
    /// The smallest `cache.max_size` accepted: less holds hardly one package.
    pub const MIN_SIZE: u64 = 1 << 20;
}

impl Config {
    /// Loads `path`, then the `PULP_AUTH_PROXY_*` overrides among `env`
    /// (except `PULP_AUTH_PROXY_PASSWORD`, which only the credential loader
    /// reads), and checks everything. The binaries pass
    /// `std::env::vars_os()`; tests pass their own list.
    pub fn load<K, V>(
        path: &Path,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Config, ConfigError>
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        check::check(path, load::raw(path, env)?)
    }

    /// The `[proxy]` section, or an error naming the file.
    pub fn proxy(&self) -> Result<&Proxy, ConfigError> {
        self.proxy.as_ref().ok_or(ConfigError::MissingSection {
            path: self.path.clone(),
            section: "proxy",
            hint: "add `[proxy]` with `listen = \"IP:PORT\"`",
        })
    }

    /// The `[upstream]` section, or an error naming the file.
    pub fn upstream(&self) -> Result<&Upstream, ConfigError> {
        self.upstream.as_ref().ok_or(ConfigError::MissingSection {
            path: self.path.clone(),
            section: "upstream",
            hint: "add `[upstream]` with `url` and `username`",
        })
    }

    /// The `[network]` section, or an error naming the file.
    pub fn network(&self) -> Result<&Network, ConfigError> {
        self.network.as_ref().ok_or(ConfigError::MissingSection {
            path: self.path.clone(),
            section: "network",
            hint: "add `[network]` with `bridge` and `address = \"IP/PREFIX\"`",
        })
    }
}

#[cfg(test)]
mod tests;
