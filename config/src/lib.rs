//! The one configuration both `pulp-auth-proxy` and `ci-builder` read.
//!
//! Loading happens in two stages: the TOML file, then `PULP_AUTH_PROXY_*`
//! environment overrides, are deserialised into raw structs that refuse
//! unknown keys; then every value is checked into a type that cannot hold a
//! bad value, with all problems collected into one error. The password is
//! not part of the configuration: [`credentials::load_password`] reads it
//! straight into a `SecretString`.

#![warn(missing_docs)]

pub mod credentials;
mod raw;
mod types;

pub use types::{
    http_url, parse_size, ClientNet, InterfaceName, ListenAddr, PathPrefix, Scheme, UpstreamOrigin,
};

use figment::providers::{Env, Serialized};
use figment::value::{Dict, Value};
use figment::Figment;
use ipnet::IpNet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the binaries look when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/pulp-auth-proxy/config.toml";
/// Prefix of environment overrides; nested keys are joined with `__`.
pub const ENV_PREFIX: &str = "PULP_AUTH_PROXY_";
/// The default `proxy.allowed_paths`: repository content and the status
/// endpoint used for readiness. Never the rest of the REST API.
pub const DEFAULT_ALLOWED_PATHS: [&str; 2] = ["/pulp/content/", "/pulp/api/v3/status/"];

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
    pub log_level: String,
    /// `text` (default) or `json` log lines.
    pub log_format: LogFormat,
    /// A separate address for `/metrics`; when absent, the main listener
    /// answers `/metrics`.
    pub metrics_listen: Option<ListenAddr>,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: u32,
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
    /// How long in-flight requests may run on after SIGTERM.
    pub shutdown_grace: Duration,
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
}

impl fmt::Debug for Upstream {
    // Hand-written so that no future field can print something secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("origin", &self.origin)
            .field("password_file", &self.password_file)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

/// `[build]`.
#[derive(Debug, Clone)]
pub struct Build {
    /// The Kayobe program to run.
    pub kayobe: String,
    /// Exported as `KAYOBE_CONFIG_PATH` for Kayobe.
    pub kayobe_config_path: Option<PathBuf>,
    /// Exported as `KAYOBE_ENVIRONMENT` for Kayobe.
    pub environment: Option<String>,
    /// The default base distribution (`rocky` or `ubuntu`).
    pub distro: String,
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

/// The smallest `cache.max_size` accepted: less holds hardly one package.
pub const MIN_CACHE_SIZE: u64 = 1 << 20;

/// The base distributions Kolla builds here.
pub const DISTROS: [&str; 2] = ["rocky", "ubuntu"];

/// One thing wrong with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The dotted key, e.g. `proxy.listen`.
    pub key: String,
    /// What is wrong and what to write instead.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why the configuration could not be loaded. Messages name the file and key
/// and say what to do; none quotes the password.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}; pass --config FILE or create it (see config/example.toml)", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML. Only the parser's message and position are
    /// kept, never the offending line, which might hold a password.
    #[error("config file {} is not valid TOML: {message} (line {line}, column {column})", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// A `password` key: the password does not belong in the configuration.
    #[error(
        "{origin}: the key `{key}` is not allowed, the password must not live in the \
         configuration; put it in a file of mode 0600 named by upstream.password_file, \
         deliver it as the systemd credential `pulp-password`, or set PULP_AUTH_PROXY_PASSWORD"
    )]
    PasswordKey {
        /// The dotted key.
        key: String,
        /// `config file X` or `environment variable Y`.
        origin: String,
    },
    /// A value has the wrong type or a key is unknown.
    #[error("{origin}: {problems}")]
    Schema {
        /// The file.
        origin: String,
        /// One line per problem.
        problems: String,
    },
    /// Values that parse but are not acceptable.
    #[error("invalid configuration in {}:\n{}", path.display(), list(problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
    /// A section the running command needs is absent.
    #[error("{} has no [{section}] section; {hint}", path.display())]
    MissingSection {
        /// The file.
        path: PathBuf,
        /// The section name.
        section: &'static str,
        /// What to add.
        hint: &'static str,
    },
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Loads `path`, then `PULP_AUTH_PROXY_*` overrides from the process
    /// environment (except `PULP_AUTH_PROXY_PASSWORD`, which only the
    /// credential loader reads), and checks everything.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(&text, s.start)).unwrap_or((0, 0));
            ConfigError::Syntax {
                path: path.to_path_buf(),
                message: e.message().trim().to_string(),
                line,
                column,
            }
        })?;
        let file_origin = format!("config file {}", path.display());
        refuse_password_keys(&toml_dict(&table), "", &|key| {
            (key.to_string(), file_origin.clone())
        })?;

        let env = Env::prefixed(ENV_PREFIX).ignore(&["PASSWORD"]).split("__");
        refuse_password_keys(&env_dict(&env), "", &|key| {
            let var = format!("{ENV_PREFIX}{}", key.replace('.', "__").to_uppercase());
            (key.to_string(), format!("environment variable {var}"))
        })?;

        let figment = Figment::from(Serialized::defaults(table)).merge(env);
        let raw: raw::RawConfig = figment.extract().map_err(|e| ConfigError::Schema {
            origin: file_origin.clone(),
            problems: schema_problems(e),
        })?;
        check(path, raw)
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

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

fn toml_dict(table: &toml::Table) -> Dict {
    // A toml::Table always serialises; an empty dict is a safe fallback.
    Serialized::defaults(table)
        .data()
        .ok()
        .and_then(|mut m| m.remove(&figment::Profile::Default))
        .unwrap_or_default()
}

fn env_dict(env: &Env) -> Dict {
    use figment::Provider;
    env.data()
        .ok()
        .and_then(|mut m| m.remove(&figment::Profile::Default))
        .unwrap_or_default()
}

use figment::Provider as _;

/// Refuses any key named `password` at any depth, by name, before a type
/// check could quote its value.
fn refuse_password_keys(
    dict: &Dict,
    prefix: &str,
    describe: &dyn Fn(&str) -> (String, String),
) -> Result<(), ConfigError> {
    for (k, v) in dict {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if k.eq_ignore_ascii_case("password") {
            let (key, origin) = describe(&key);
            return Err(ConfigError::PasswordKey { key, origin });
        }
        if let Value::Dict(_, inner) = v {
            refuse_password_keys(inner, &key, describe)?;
        }
    }
    Ok(())
}

fn schema_problems(errors: figment::Error) -> String {
    errors
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            if key.is_empty() {
                e.kind.to_string()
            } else {
                format!("{key}: {}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn secs(problems: &mut Vec<Problem>, key: &str, value: Option<u64>, default: u64) -> Duration {
    match value {
        Some(0) => {
            problems.push(Problem {
                key: key.to_string(),
                message: "must be at least 1 second".to_string(),
            });
            Duration::from_secs(default)
        }
        Some(n) => Duration::from_secs(n),
        None => Duration::from_secs(default),
    }
}

/// Stage two: every raw value into its checked type, every problem kept.
fn check(path: &Path, raw: raw::RawConfig) -> Result<Config, ConfigError> {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut field = |key: &str, r: Result<(), String>| {
        if let Err(message) = r {
            problems.push(Problem {
                key: key.to_string(),
                message,
            });
        }
    };

    let network = raw.network.and_then(|n| {
        let bridge = InterfaceName::parse(n.bridge.as_deref().unwrap_or("breth1"));
        let address = n.address.parse::<IpNet>().map_err(|_| {
            format!(
                "`{}` is not IP/PREFIX; write e.g. \"192.168.33.3/24\"",
                n.address
            )
        });
        let ports: Vec<_> = n.ports.iter().map(|p| InterfaceName::parse(p)).collect();
        field(
            "network.bridge",
            bridge.as_ref().map(|_| ()).map_err(Clone::clone),
        );
        field(
            "network.address",
            address.as_ref().map(|_| ()).map_err(Clone::clone),
        );
        for p in &ports {
            field(
                "network.ports",
                p.as_ref().map(|_| ()).map_err(Clone::clone),
            );
        }
        Some(Network {
            bridge: bridge.ok()?,
            address: address.ok()?,
            ports: ports.into_iter().collect::<Result<_, _>>().ok()?,
        })
    });

    let proxy = raw.proxy.and_then(|p| {
        let listen = ListenAddr::parse(&p.listen);
        field("proxy.listen", listen.as_ref().map(|_| ()).map_err(Clone::clone));
        let interface = p.interface.as_deref().map(InterfaceName::parse).transpose();
        field("proxy.interface", interface.as_ref().map(|_| ()).map_err(Clone::clone));
        let clients = p
            .allowed_clients
            .map(|list| list.iter().map(|c| ClientNet::parse(c)).collect::<Vec<_>>());
        for c in clients.iter().flatten() {
            field("proxy.allowed_clients", c.as_ref().map(|_| ()).map_err(Clone::clone));
        }
        if clients.as_ref().is_some_and(|c| c.is_empty()) {
            field(
                "proxy.allowed_clients",
                Err("is empty, which would refuse every client; remove the key to serve every peer that can reach the listen address".into()),
            );
        }
        let raw_paths = p
            .allowed_paths
            .unwrap_or_else(|| DEFAULT_ALLOWED_PATHS.iter().map(|s| s.to_string()).collect());
        let paths: Vec<_> = raw_paths.iter().map(|s| PathPrefix::parse(s)).collect();
        for r in &paths {
            field("proxy.allowed_paths", r.as_ref().map(|_| ()).map_err(Clone::clone));
        }
        if paths.is_empty() {
            field("proxy.allowed_paths", Err("is empty; list at least \"/pulp/content/\"".into()));
        }
        let log_level = p.log_level.unwrap_or_else(|| "info".to_string());
        if !matches!(
            log_level.as_str(),
            "error" | "warn" | "info" | "debug" | "trace"
        ) {
            field(
                "proxy.log_level",
                Err(format!("`{log_level}` is not one of error, warn, info, debug, trace")),
            );
        }
        let log_format = match p.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                field("proxy.log_format", Err(format!("`{other}` is not `text` or `json`")));
                LogFormat::Text
            }
        };
        let metrics_listen = p.metrics_listen.as_deref().map(ListenAddr::parse).transpose();
        field("proxy.metrics_listen", metrics_listen.as_ref().map(|_| ()).map_err(Clone::clone));
        if p.max_connections == Some(0) {
            field("proxy.max_connections", Err("must be at least 1".into()));
        }
        let mut limit = |key: &str, value: Option<usize>, min: usize, max: usize, default: usize| {
            let v = value.unwrap_or(default);
            if !(min..=max).contains(&v) {
                field(key, Err(format!("must be between {min} and {max}")));
            }
            v
        };
        let max_header_bytes =
            limit("proxy.max_header_bytes", p.max_header_bytes, 8192, 1 << 20, 16 * 1024);
        let max_headers = limit("proxy.max_headers", p.max_headers, 8, 1024, 64);
        let max_url_bytes = limit("proxy.max_url_bytes", p.max_url_bytes, 256, 1 << 20, 8192);
        if let Ok(l) = &listen {
            if l.socket_addr().port() == 0 {
                warnings.push(format!(
                    "proxy.listen `{l}` has port 0: the kernel picks a port, and builds cannot know it"
                ));
            }
        }
        let mut timeouts = Vec::new();
        let header_timeout = secs(&mut timeouts, "proxy.header_timeout_secs", p.header_timeout_secs, 10);
        let idle_timeout = secs(&mut timeouts, "proxy.idle_timeout_secs", p.idle_timeout_secs, 60);
        let shutdown_grace = secs(&mut timeouts, "proxy.shutdown_grace_secs", p.shutdown_grace_secs, 30);
        for t in timeouts {
            field(&t.key, Err(t.message));
        }
        Some(Proxy {
            listen: listen.ok()?,
            interface: interface.ok()?,
            allowed_clients: clients.map(|c| c.into_iter().collect::<Result<_, _>>()).transpose().ok()?,
            allowed_paths: paths.into_iter().collect::<Result<_, _>>().ok()?,
            log_level,
            log_format,
            metrics_listen: metrics_listen.ok()?,
            max_connections: p.max_connections.unwrap_or(1024),
            max_header_bytes,
            max_headers,
            max_url_bytes,
            header_timeout,
            idle_timeout,
            shutdown_grace,
        })
    });

    let upstream = raw.upstream.and_then(|u| {
        let origin = UpstreamOrigin::parse(&u.url, u.allow_plaintext);
        field("upstream.url", origin.as_ref().map(|_| ()).map_err(Clone::clone));
        if origin.as_ref().is_ok_and(|o| o.scheme() == Scheme::Http) {
            warnings.push(
                "upstream.allow_plaintext is set: the credentials travel unencrypted to the upstream"
                    .to_string(),
            );
        }
        let username_ok = if u.username.is_empty() {
            Err("is empty; write the Pulp user name".to_string())
        } else if u.username.contains(':') {
            Err("contains `:`, which basic authentication cannot carry in a user name".to_string())
        } else if u.username.chars().any(char::is_control) {
            Err("contains control characters".to_string())
        } else {
            Ok(())
        };
        field("upstream.username", username_ok);
        let mut timeouts = Vec::new();
        let connect_timeout = secs(&mut timeouts, "upstream.connect_timeout_secs", u.connect_timeout_secs, 10);
        let response_timeout = secs(&mut timeouts, "upstream.response_timeout_secs", u.response_timeout_secs, 60);
        let body_timeout = secs(&mut timeouts, "upstream.body_timeout_secs", u.body_timeout_secs, 60);
        for t in timeouts {
            field(&t.key, Err(t.message));
        }
        Some(Upstream {
            origin: origin.ok()?,
            username: u.username,
            password_file: u.password_file,
            ca_file: u.ca_file,
            connect_timeout,
            response_timeout,
            body_timeout,
        })
    });

    let raw_build = raw.build.unwrap_or_default();
    let distro = raw_build.distro.unwrap_or_else(|| "rocky".to_string());
    if !DISTROS.contains(&distro.as_str()) {
        field(
            "build.distro",
            Err(format!("`{distro}` is not one of {}", DISTROS.join(", "))),
        );
    }
    if raw_build.kayobe.as_deref() == Some("") {
        field(
            "build.kayobe",
            Err("is empty; name the kayobe program or its path".into()),
        );
    }
    let build = Build {
        kayobe: raw_build.kayobe.unwrap_or_else(|| "kayobe".to_string()),
        kayobe_config_path: raw_build.kayobe_config_path,
        environment: raw_build.environment,
        distro,
    };

    let cache = raw.cache.and_then(|c| {
        let dir_ok = if !c.dir.is_absolute() {
            Err(format!(
                "`{}` is not an absolute path; write e.g. \"/var/lib/pulp-auth-proxy/cache\" \
                 (under the service's StateDirectory)",
                c.dir.display()
            ))
        } else if c.dir.components().any(|p| p == std::path::Component::ParentDir) {
            Err(format!("`{}` contains `..`; write the path without it", c.dir.display()))
        } else if c.dir.parent().is_none() {
            Err("is the root directory; name a directory of its own".into())
        } else {
            Ok(())
        };
        field("cache.dir", dir_ok);
        let max_size = match c.max_size {
            raw::RawSize::Bytes(n) => Ok(n),
            raw::RawSize::Text(t) => parse_size(&t),
        }
        .and_then(|n| {
            if n < MIN_CACHE_SIZE {
                Err(format!(
                    "{n} bytes is below the minimum of 1 MiB; raise it, or remove [cache] to turn caching off"
                ))
            } else {
                Ok(n)
            }
        });
        field("cache.max_size", max_size.as_ref().map(|_| ()).map_err(Clone::clone));
        Some(Cache {
            dir: c.dir,
            max_size: max_size.ok()?,
        })
    });

    if !problems.is_empty() {
        return Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        });
    }
    Ok(Config {
        path: path.to_path_buf(),
        network,
        proxy,
        upstream,
        build,
        cache,
        warnings,
    })
}

#[cfg(test)]
mod tests;
