//! Self-validating values: each type can only hold something the proxy may
//! safely act on, so the rest of the code never re-checks.

use ipnet::IpNet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// The one concrete address the proxy listens on. Never a wildcard: a
/// wildcard bind would expose the credentials' reach to every network the
/// host is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr(SocketAddr);

impl ListenAddr {
    /// Checks `text` as `IP:PORT` (IPv6 in brackets).
    pub fn parse(text: &str) -> Result<Self, String> {
        let addr: SocketAddr = text.parse().map_err(|_| {
            format!(
                "`{text}` is not IP:PORT; write e.g. \"192.168.33.3:80\" or \"[::1]:8080\" \
                 (host names are not accepted: the proxy binds one concrete address)"
            )
        })?;
        Self::new(addr)
    }

    /// Checks an address that is already parsed (e.g. an inherited socket).
    pub fn new(addr: SocketAddr) -> Result<Self, String> {
        let ip = addr.ip().to_canonical();
        if ip.is_unspecified() {
            return Err(format!(
                "`{addr}` listens on every interface; use the bridge address \
                 (e.g. 192.168.33.3:80) or loopback (127.0.0.1:80)"
            ));
        }
        if ip.is_multicast() {
            return Err(format!(
                "`{addr}` is a multicast address; use a unicast host address"
            ));
        }
        Ok(Self(addr))
    }

    /// The socket address.
    pub fn socket_addr(&self) -> SocketAddr {
        self.0
    }
}

/// The URL clients use for a listening address: `http://IP` on port 80,
/// else `http://IP:PORT`; IPv6 in brackets.
pub fn http_url(addr: SocketAddr) -> String {
    match (addr.ip(), addr.port()) {
        (IpAddr::V6(ip), 80) => format!("http://[{ip}]"),
        (ip, 80) => format!("http://{ip}"),
        _ => format!("http://{addr}"),
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A network whose peers may use the proxy. IPv4-mapped IPv6 networks are
/// stored as IPv4 so that one rule matches a peer however the kernel
/// reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientNet(IpNet);

impl ClientNet {
    /// Parses `a.b.c.d/n`, `x::y/n`, or a bare address (a single host).
    pub fn parse(text: &str) -> Result<Self, String> {
        let net = match text.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => match text.parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => {
                    return Err(format!(
                        "`{text}` is not a network; write CIDR such as \"192.168.33.0/24\" or an address"
                    ))
                }
            },
        };
        if net.addr() != net.network() {
            return Err(format!(
                "`{text}` has host bits set; did you mean \"{}\"?",
                net.trunc()
            ));
        }
        Ok(Self(canonical_net(net)))
    }

    /// Whether `ip` (mapped IPv6 compared as IPv4) is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

impl fmt::Display for ClientNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if let (Some(v4), true) = (v6.addr().to_ipv4_mapped(), v6.prefix_len() >= 96) {
            if let Ok(n) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96) {
                return IpNet::V4(n);
            }
        }
    }
    net
}

/// An allowed path prefix, kept as written: with a trailing `/` it admits
/// only paths under it, without one it admits itself and the paths under
/// it; never `/pulp/contentX` for `/pulp/content`. It is plain: no
/// percent-encoding, dot segments, empty segments or backslashes, so that
/// comparing it with a normalised request path is a byte comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPrefix(String);

impl PathPrefix {
    /// Checks one entry of `proxy.allowed_paths`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!(
                "`{text}` must start with `/`, e.g. \"/pulp/content/\""
            ));
        }
        // Only slashes (`/`, `//`, ...) is the root: the same whole-API prefix.
        if text.trim_end_matches('/').is_empty() {
            return Err("`/` would allow Pulp's whole REST API (including writes); \
                 list the content prefixes, e.g. \"/pulp/content/\""
                .to_string());
        }
        plain_path(text)?;
        let trimmed = text.trim_end_matches('/');
        // Kept as written (repeated trailing slashes count as one): a
        // trailing slash is part of what the operator allowed.
        if text.ends_with('/') {
            Ok(Self(format!("{trimmed}/")))
        } else {
            Ok(Self(trimmed.to_string()))
        }
    }

    /// The prefix as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a normalised path starts with this prefix, at a segment
    /// boundary. A prefix ending in `/` admits only paths under it, never
    /// the same path without the slash (`/a/b/` does not admit `/a/b`); one
    /// without admits itself and the paths under it (`/a/b` admits `/a/b`
    /// and `/a/b/c`, not `/a/bc`).
    pub fn matches(&self, path: &str) -> bool {
        match path.strip_prefix(self.0.as_str()) {
            None => false,
            Some(rest) => self.0.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        }
    }
}

/// The rule `proxy.allowed_paths` and `upstream.readiness_path` share, for
/// a text that starts with `/`: plain printable ASCII without `%`, `\`,
/// `?` or `#`, and no empty, `.` or `..` segment, so that it means one
/// path and compares as bytes.
fn plain_path(text: &str) -> Result<(), String> {
    let bad = |c: char| !(c.is_ascii_graphic()) || matches!(c, '%' | '\\' | '?' | '#');
    if text.chars().any(bad) {
        return Err(format!(
            "`{text}` may hold only plain printable ASCII without `%`, `\\`, `?` or `#`"
        ));
    }
    let trimmed = text.trim_end_matches('/');
    if trimmed.len() > 1
        && trimmed[1..]
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(format!(
            "`{text}` has an empty, `.` or `..` segment; write the plain path"
        ));
    }
    Ok(())
}

/// `upstream.readiness_path`: a path below the upstream's prefix that only
/// the proxy's credentials may read (under a guarded distribution), so
/// that `/readyz` proves them. Plain, as [`PathPrefix`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbePath(String);

impl ProbePath {
    /// Checks `upstream.readiness_path`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if !text.starts_with('/') || text.trim_end_matches('/').is_empty() {
            return Err(format!(
                "`{text}` must be a path under a guarded distribution, e.g. \"/pulp/content/<base_path>/\""
            ));
        }
        plain_path(text)?;
        Ok(Self(text.to_string()))
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PathPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The scheme of the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Verified TLS; the default and the only choice without an opt-in.
    Https,
    /// Plain text; needs `upstream.allow_plaintext = true`.
    Http,
}

impl Scheme {
    /// `https` or `http`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::Http => "http",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Https => 443,
            Scheme::Http => 80,
        }
    }
}

/// The one origin the credentials may ever be sent to, plus the path prefix
/// that every forwarded path is appended to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamOrigin {
    scheme: Scheme,
    host: String,
    port: u16,
    prefix: String,
}

impl UpstreamOrigin {
    /// Checks `upstream.url`. The URL is never echoed in an error: an
    /// operator may have pasted `https://user:pass@host` into it.
    pub fn parse(text: &str, allow_plaintext: bool) -> Result<Self, String> {
        let uri: http::Uri = text.parse().map_err(|_| {
            "is not a valid URL; write e.g. \"https://pulp.example.com\"".to_string()
        })?;
        let scheme = match uri.scheme_str() {
            Some("https") => Scheme::Https,
            Some("http") if allow_plaintext => Scheme::Http,
            Some("http") => {
                return Err("uses plain http://, which would send the credentials unencrypted; \
                     use https://, or set upstream.allow_plaintext = true for a trusted test network"
                    .to_string())
            }
            _ => return Err("must start with https://".to_string()),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| "has no host; write e.g. \"https://pulp.example.com\"".to_string())?;
        if authority.as_str().contains('@') {
            return Err(
                "contains user information (`user:pass@`); remove it and use \
                 upstream.username with a password file instead"
                    .to_string(),
            );
        }
        if uri.query().is_some() || text.contains('#') {
            return Err("must not have a query or fragment".to_string());
        }
        let host = authority.host().to_string();
        if host.is_empty() {
            return Err("has no host".to_string());
        }
        let port = authority.port_u16().unwrap_or(scheme.default_port());
        let path = uri.path().trim_end_matches('/');
        if path.contains('%')
            || path.contains('\\')
            || (!path.is_empty()
                && path[1..]
                    .split('/')
                    .any(|s| s.is_empty() || s == "." || s == ".."))
        {
            return Err(
                "has a path with empty, `.` or `..` segments or percent-encoding; write the plain prefix"
                    .to_string(),
            );
        }
        Ok(Self {
            scheme,
            host,
            port,
            prefix: path.to_string(),
        })
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host as written (IPv6 literals keep their brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port, explicit or the scheme's default.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path prefix without a trailing slash; empty for none.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The value of the `Host` header: the port only when it is not the
    /// scheme's default.
    pub fn host_header(&self) -> String {
        if self.port == self.scheme.default_port() {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `scheme://host:port`, for building request URIs and logs.
    pub fn origin(&self) -> String {
        format!("{}://{}:{}", self.scheme.as_str(), self.host, self.port)
    }
}

impl fmt::Display for UpstreamOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.origin(), self.prefix)
    }
}

/// A Linux network interface name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceName(String);

impl InterfaceName {
    /// Checks the kernel's rules: 1 to 15 bytes, no `/`, `:` or white space.
    pub fn parse(text: &str) -> Result<Self, String> {
        let ok = !text.is_empty()
            && text.len() <= 15
            && text != "."
            && text != ".."
            && text
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '/' && c != ':');
        if ok {
            Ok(Self(text.to_string()))
        } else {
            Err(format!(
                "`{text}` is not an interface name (1-15 printable characters, no `/` or `:`)"
            ))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One `upstream.redirect_hosts` entry: a host the proxy may follow a
/// redirect to. Exact host names and IP addresses match themselves;
/// `*.suffix` matches every name under `suffix` (not `suffix` itself).
/// Kept in lower case, as host names compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectHost(String);

impl RedirectHost {
    /// Checks one entry: a host name (letters, digits, `-` and `.`), an
    /// IPv4 or IPv6 address (without brackets), or `*.` and a host name.
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.to_ascii_lowercase();
        if lower.parse::<IpAddr>().is_ok() {
            return Ok(Self(lower));
        }
        let name = lower.strip_prefix("*.").unwrap_or(&lower);
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(format!(
                "`{text}` is not a host name, an IP address or `*.` and a host name; \
                 write e.g. \"objects.example.com\" or \"*.s3.example.com\" (no scheme, port or path)"
            ));
        }
        Ok(Self(lower))
    }

    /// Whether `host` (as in a URL, IPv6 without brackets) is this entry.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        match self.0.strip_prefix("*.") {
            Some(suffix) => host
                .strip_suffix(suffix)
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
            None => host == self.0,
        }
    }
}

impl fmt::Display for RedirectHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests;

/// Parses a size: a whole number of bytes, optionally followed by `KiB`,
/// `MiB`, `GiB` or `TiB` (powers of 1024; `K`, `M`, `G`, `T` mean the same).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        other => {
            return Err(format!(
                "unit `{other}` is not one of B, KiB, MiB, GiB, TiB; write e.g. \"10 GiB\""
            ))
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| {
            format!("`{text}` is not a size; write e.g. \"10 GiB\" or a number of bytes")
        })
}

/// `proxy.log_level`: the log filter when `RUST_LOG` is not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Failures only.
    Error,
    /// Failures and warnings.
    Warn,
    /// Plus the access log and start-up lines; the default.
    Info,
    /// Plus connection and cache details.
    Debug,
    /// Everything the libraries log too.
    Trace,
}

impl LogLevel {
    const ALL: [LogLevel; 5] = [
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
    ];

    /// Checks one of `error`, `warn`, `info`, `debug`, `trace`.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|l| l.as_str() == text)
            .ok_or_else(|| format!("`{text}` is not one of error, warn, info, debug, trace"))
    }

    /// The name, as a `tracing` filter directive takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// A base distribution Kolla builds images from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distro {
    /// Rocky Linux.
    Rocky,
    /// Ubuntu.
    Ubuntu,
    /// Debian.
    Debian,
}

impl Distro {
    /// Every distribution, in the order messages list them.
    pub const ALL: [Distro; 3] = [Distro::Rocky, Distro::Ubuntu, Distro::Debian];

    /// Checks `rocky`, `ubuntu` or `debian`.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|d| d.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|d| d.as_str()).collect();
                format!("`{text}` is not one of {}", names.join(", "))
            })
    }

    /// The name Kolla uses (`kolla_base_distro`).
    pub fn as_str(self) -> &'static str {
        match self {
            Distro::Rocky => "rocky",
            Distro::Ubuntu => "ubuntu",
            Distro::Debian => "debian",
        }
    }
}

impl fmt::Display for Distro {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
