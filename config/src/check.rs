//! Stage two: every raw value into its checked type, one function per
//! section, every problem kept so the operator sees them all at once.

use crate::error::{ConfigError, Problem};
use crate::raw::{RawBuild, RawCache, RawConfig, RawNetwork, RawProxy, RawSize, RawUpstream};
use crate::types::{
    parse_size, ClientNet, Distro, InterfaceName, ListenAddr, LogLevel, PathPrefix, ProbePath,
    RedirectHost, Scheme, UpstreamOrigin,
};
use crate::{Build, Cache, Config, LogFormat, Mirror, Network, Proxy, Tool, Upstream};
use ipnet::IpNet;
use std::path::{Component, Path};
use std::time::Duration;

/// Problems and warnings found so far.
#[derive(Default)]
struct Findings {
    problems: Vec<Problem>,
    warnings: Vec<String>,
}

impl Findings {
    fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// The value, or `None` with the problem recorded under `key`.
    fn take<T>(&mut self, key: &str, checked: Result<T, String>) -> Option<T> {
        checked.map_err(|m| self.problem(key, m)).ok()
    }

    /// Every item checked, each failure recorded; `None` if any failed.
    fn take_all<T>(
        &mut self,
        key: &str,
        checked: impl IntoIterator<Item = Result<T, String>>,
    ) -> Option<Vec<T>> {
        let mut all = Some(Vec::new());
        for item in checked {
            match (self.take(key, item), all.as_mut()) {
                (Some(v), Some(list)) => list.push(v),
                _ => all = None,
            }
        }
        all
    }

    /// Whole seconds, at least `min`, at most `max`.
    fn secs(
        &mut self,
        key: &str,
        value: Option<u64>,
        default: Duration,
        min: u64,
    ) -> Option<Duration> {
        match value {
            None => Some(default),
            Some(n) if n < min => {
                self.problem(key, format!("must be at least {min} second"));
                None
            }
            Some(n) => Some(Duration::from_secs(n)),
        }
    }

    /// A count within `min..=max`.
    fn within<T: PartialOrd + std::fmt::Display + Copy>(
        &mut self,
        key: &str,
        value: Option<T>,
        default: T,
        (min, max): (T, T),
    ) -> Option<T> {
        let v = value.unwrap_or(default);
        if (min..=max).contains(&v) {
            Some(v)
        } else {
            self.problem(key, format!("must be between {min} and {max}"));
            None
        }
    }
}

/// Checks everything in `raw`; `path` names the file in messages.
pub(crate) fn check(path: &Path, raw: RawConfig) -> Result<Config, ConfigError> {
    let mut f = Findings::default();
    let network = raw.network.and_then(|n| network(n, &mut f));
    let proxy = raw.proxy.and_then(|p| proxy(p, &mut f));
    let upstream = raw.upstream.and_then(|u| upstream(u, &mut f));
    let build = build(raw.build.unwrap_or_default(), &mut f);
    let cache = raw.cache.and_then(|c| cache(c, &mut f));
    match build {
        Some(build) if f.problems.is_empty() => Ok(Config {
            path: path.to_path_buf(),
            network,
            proxy,
            upstream,
            build,
            cache,
            warnings: f.warnings,
        }),
        _ => Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: f.problems,
        }),
    }
}

fn network(n: RawNetwork, f: &mut Findings) -> Option<Network> {
    let bridge = f.take(
        "network.bridge",
        InterfaceName::parse(n.bridge.as_deref().unwrap_or(Network::DEFAULT_BRIDGE)),
    );
    let address = f.take(
        "network.address",
        n.address.parse::<IpNet>().map_err(|_| {
            format!(
                "`{}` is not IP/PREFIX; write e.g. \"192.168.33.3/24\"",
                n.address
            )
        }),
    );
    let ports = f.take_all(
        "network.ports",
        n.ports.iter().map(|p| InterfaceName::parse(p)),
    );
    Some(Network {
        bridge: bridge?,
        address: address?,
        ports: ports?,
    })
}

fn proxy(p: RawProxy, f: &mut Findings) -> Option<Proxy> {
    let listen = f.take("proxy.listen", ListenAddr::parse(&p.listen));
    if let Some(l) = listen.filter(|l| l.socket_addr().port() == 0) {
        f.warnings.push(format!(
            "proxy.listen `{l}` has port 0: the kernel picks a port, and builds cannot know it"
        ));
    }
    let interface = f.take(
        "proxy.interface",
        p.interface.as_deref().map(InterfaceName::parse).transpose(),
    );
    let allowed_clients = match p.allowed_clients {
        None => Some(None),
        Some(list) if list.is_empty() => {
            f.problem(
                "proxy.allowed_clients",
                "is empty, which would refuse every client; remove the key to serve every \
                 peer that can reach the listen address",
            );
            None
        }
        Some(list) => f
            .take_all(
                "proxy.allowed_clients",
                list.iter().map(|c| ClientNet::parse(c)),
            )
            .map(Some),
    };
    let paths = p.allowed_paths.unwrap_or_else(|| {
        Proxy::DEFAULT_ALLOWED_PATHS
            .iter()
            .map(ToString::to_string)
            .collect()
    });
    let allowed_paths = if paths.is_empty() {
        f.problem(
            "proxy.allowed_paths",
            "is empty; list at least \"/pulp/content/\"",
        );
        None
    } else {
        f.take_all(
            "proxy.allowed_paths",
            paths.iter().map(|s| PathPrefix::parse(s)),
        )
    };
    let log_level = f.take(
        "proxy.log_level",
        p.log_level
            .as_deref()
            .map_or(Ok(LogLevel::Info), LogLevel::parse),
    );
    let log_format = f.take(
        "proxy.log_format",
        match p.log_format.as_deref() {
            None | Some("text") => Ok(LogFormat::Text),
            Some("json") => Ok(LogFormat::Json),
            Some(other) => Err(format!("`{other}` is not `text` or `json`")),
        },
    );
    let metrics_listen = f.take(
        "proxy.metrics_listen",
        p.metrics_listen
            .as_deref()
            .map(ListenAddr::parse)
            .transpose(),
    );
    let max_connections = f.within(
        "proxy.max_connections",
        p.max_connections,
        Proxy::DEFAULT_MAX_CONNECTIONS,
        (1, u32::MAX),
    );
    // Checked against the limit it divides; a bad limit is reported once.
    let max_connections_per_client = max_connections.and_then(|max| {
        let key = "proxy.max_connections_per_client";
        match p.max_connections_per_client {
            None => Some((max / Proxy::DEFAULT_CLIENT_SHARE).max(1)),
            Some(0) => {
                f.problem(key, "must be at least 1");
                None
            }
            Some(n) if n > max => {
                f.problem(
                    key,
                    format!(
                        "{n} is more than proxy.max_connections ({max}); lower it or raise that"
                    ),
                );
                None
            }
            Some(n) => Some(n),
        }
    });
    let max_header_bytes = f.within(
        "proxy.max_header_bytes",
        p.max_header_bytes,
        Proxy::DEFAULT_MAX_HEADER_BYTES,
        (8192, 1 << 20),
    );
    let max_headers = f.within(
        "proxy.max_headers",
        p.max_headers,
        Proxy::DEFAULT_MAX_HEADERS,
        (8, 1024),
    );
    let max_url_bytes = f.within(
        "proxy.max_url_bytes",
        p.max_url_bytes,
        Proxy::DEFAULT_MAX_URL_BYTES,
        (256, 1 << 20),
    );
    let header_timeout = f.secs(
        "proxy.header_timeout_secs",
        p.header_timeout_secs,
        Proxy::DEFAULT_HEADER_TIMEOUT,
        1,
    );
    let idle_timeout = f.secs(
        "proxy.idle_timeout_secs",
        p.idle_timeout_secs,
        Proxy::DEFAULT_IDLE_TIMEOUT,
        1,
    );
    let send_timeout = f.secs(
        "proxy.send_timeout_secs",
        p.send_timeout_secs,
        Proxy::DEFAULT_SEND_TIMEOUT,
        1,
    );
    let shutdown_grace = f.secs(
        "proxy.shutdown_grace_secs",
        p.shutdown_grace_secs,
        Proxy::DEFAULT_SHUTDOWN_GRACE,
        1,
    );
    let readiness_cache = f.secs(
        "proxy.readiness_cache_secs",
        p.readiness_cache_secs,
        Proxy::DEFAULT_READINESS_CACHE,
        0,
    );
    let fetch_records = f.within(
        "proxy.fetch_records",
        p.fetch_records,
        Proxy::DEFAULT_FETCH_RECORDS,
        (0, 1_000_000),
    );
    Some(Proxy {
        listen: listen?,
        interface: interface?,
        allowed_clients: allowed_clients?,
        allowed_paths: allowed_paths?,
        log_level: log_level?,
        log_format: log_format?,
        metrics_listen: metrics_listen?,
        max_connections: max_connections?,
        max_connections_per_client: max_connections_per_client?,
        max_header_bytes: max_header_bytes?,
        max_headers: max_headers?,
        max_url_bytes: max_url_bytes?,
        header_timeout: header_timeout?,
        idle_timeout: idle_timeout?,
        send_timeout: send_timeout?,
        shutdown_grace: shutdown_grace?,
        readiness_cache: readiness_cache?,
        fetch_records: fetch_records?,
    })
}

fn upstream(u: RawUpstream, f: &mut Findings) -> Option<Upstream> {
    let origin = f.take(
        "upstream.url",
        UpstreamOrigin::parse(&u.url, u.allow_plaintext),
    );
    if origin.as_ref().is_some_and(|o| o.scheme() == Scheme::Http) {
        f.warnings.push(
            "upstream.allow_plaintext is set: the credentials travel unencrypted to the upstream"
                .to_string(),
        );
    }
    let username = f.take(
        "upstream.username",
        if u.username.is_empty() {
            Err("is empty; write the Pulp user name".to_string())
        } else if u.username.contains(':') {
            Err("contains `:`, which basic authentication cannot carry in a user name".to_string())
        } else if u.username.chars().any(char::is_control) {
            Err("contains control characters".to_string())
        } else {
            Ok(u.username)
        },
    );
    let connect_timeout = f.secs(
        "upstream.connect_timeout_secs",
        u.connect_timeout_secs,
        Upstream::DEFAULT_CONNECT_TIMEOUT,
        1,
    );
    let response_timeout = f.secs(
        "upstream.response_timeout_secs",
        u.response_timeout_secs,
        Upstream::DEFAULT_RESPONSE_TIMEOUT,
        1,
    );
    let body_timeout = f.secs(
        "upstream.body_timeout_secs",
        u.body_timeout_secs,
        Upstream::DEFAULT_BODY_TIMEOUT,
        1,
    );
    let max_redirects = f.within(
        "upstream.max_redirects",
        u.max_redirects,
        Upstream::DEFAULT_MAX_REDIRECTS,
        (0, 10),
    );
    let redirect_hosts = match u.redirect_hosts {
        None => Some(None),
        Some(list) => {
            let mut hosts = Vec::with_capacity(list.len());
            let mut ok = true;
            for text in &list {
                match RedirectHost::parse(text) {
                    Ok(h) => hosts.push(h),
                    Err(e) => {
                        f.problem("upstream.redirect_hosts", e);
                        ok = false;
                    }
                }
            }
            ok.then_some(Some(hosts))
        }
    };
    let readiness_path = f.take(
        "upstream.readiness_path",
        u.readiness_path
            .as_deref()
            .map(ProbePath::parse)
            .transpose(),
    );
    Some(Upstream {
        origin: origin?,
        username: username?,
        password_file: u.password_file,
        ca_file: u.ca_file,
        connect_timeout: connect_timeout?,
        response_timeout: response_timeout?,
        body_timeout: body_timeout?,
        max_redirects: max_redirects?,
        redirect_hosts: redirect_hosts?,
        readiness_path: readiness_path?,
    })
}

fn build(b: RawBuild, f: &mut Findings) -> Option<Build> {
    let distro = f.take(
        "build.distro",
        b.distro.as_deref().map(Distro::parse).transpose(),
    );
    let tool = f.take(
        "build.tool",
        match b.tool.as_deref() {
            None | Some("kayobe") => Ok(Tool::Kayobe),
            Some("kolla-build") => Ok(Tool::KollaBuild),
            Some(other) => Err(format!("`{other}` is not one of kayobe, kolla-build")),
        },
    );
    let mut program = |key: &str, value: Option<String>, default: &str| match value {
        Some(k) if k.is_empty() => {
            f.problem(key, "is empty; name the program or its path");
            None
        }
        other => Some(other.unwrap_or_else(|| default.to_string())),
    };
    let kayobe = program("build.kayobe", b.kayobe, Build::DEFAULT_KAYOBE);
    let kolla_build = program(
        "build.kolla_build",
        b.kolla_build,
        Build::DEFAULT_KOLLA_BUILD,
    );
    let mirrors = f.take_all(
        "build.mirrors",
        b.mirrors
            .unwrap_or_default()
            .into_iter()
            .map(|(u, p)| mirror(&u, &p)),
    );
    Some(Build {
        tool: tool?,
        kayobe: kayobe?,
        kolla_build: kolla_build?,
        kolla_config: b.kolla_config,
        template_override: b.template_override,
        mirrors: mirrors?,
        kayobe_config_path: b.kayobe_config_path,
        environment: b.environment,
        distro: distro?,
    })
}

/// One `[build.mirrors]` entry. The URL goes into sed expressions and
/// repository files inside the build, so it is held to the characters URLs
/// use.
fn mirror(upstream: &str, path: &str) -> Result<Mirror, String> {
    let url = upstream.trim_end_matches('/');
    let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
    let host = url.split_once("://").map(|(_, rest)| rest).unwrap_or("");
    let chars_ok = url
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~:/$@".contains(&b));
    if !scheme_ok || host.is_empty() || host.starts_with('/') || !chars_ok {
        return Err(format!(
            "`{upstream}` is not an http(s) URL of letters, digits and -._~:/$@, \
             as repository files write it, e.g. \"http://deb.debian.org/debian\""
        ));
    }
    let path = PathPrefix::parse(path).map_err(|m| format!("`{upstream}`: {m}"))?;
    if !path.as_str().ends_with('/') {
        return Err(format!(
            "`{upstream}`: the proxy path `{}` must end with `/`, like the repository tree it serves",
            path.as_str()
        ));
    }
    Ok(Mirror {
        upstream: url.to_string(),
        path,
    })
}

fn cache(c: RawCache, f: &mut Findings) -> Option<Cache> {
    let dir = f.take(
        "cache.dir",
        if !c.dir.is_absolute() {
            Err(format!(
                "`{}` is not an absolute path; write e.g. \"/var/lib/pulp-auth-proxy/cache\" \
                 (under the service's StateDirectory)",
                c.dir.display()
            ))
        } else if c.dir.components().any(|p| p == Component::ParentDir) {
            Err(format!(
                "`{}` contains `..`; write the path without it",
                c.dir.display()
            ))
        } else if c.dir.parent().is_none() {
            Err("is the root directory; name a directory of its own".into())
        } else {
            Ok(c.dir)
        },
    );
    let max_size = f.take(
        "cache.max_size",
        match c.max_size {
            RawSize::Bytes(n) => Ok(n),
            RawSize::Text(t) => parse_size(&t),
        }
        .and_then(|n| {
            if n < Cache::MIN_SIZE {
                Err(format!(
                    "{n} bytes is below the minimum of 1 MiB; raise it, or remove [cache] to turn caching off"
                ))
            } else {
                Ok(n)
            }
        }),
    );
    Some(Cache {
        dir: dir?,
        max_size: max_size?,
    })
}
