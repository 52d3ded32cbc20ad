//! The request policy: the one place that decides whether a request may be
//! forwarded. It runs before anything is sent upstream, and what it returns
//! (the normalised path and the untouched query) is exactly what is
//! forwarded: nothing downstream re-reads the client's raw target.
//!
//! It comes in two parts, because the proxy's own endpoints (`health`) sit
//! between them: [`shape`] holds for every request, local or forwarded;
//! [`path`] decides what may be forwarded.
//!
//! Shape rules, in order:
//! 0. the request target is at most `proxy.max_url_bytes` long;
//! 1. origin-form target only (no absolute-form, authority-form or `*`):
//!    the proxy is never a forward proxy;
//! 2. the target is ASCII (hyper lets UTF-8 through; an upstream would be
//!    asked for a name the policy never saw in that form);
//! 3. `GET` and `HEAD` only;
//! 4. exactly one `Host` header (none is allowed only for HTTP/1.0), whose
//!    value is a valid `host[:port]`;
//! 5. no request body (`Content-Length` other than 0, or any
//!    `Transfer-Encoding`).
//!
//! Path rules:
//! 6. the path normalises cleanly (see [`normalise_path`]);
//! 7. the normalised path lies under one of `proxy.allowed_paths`.

use crate::error::Refusal;
use http::{header, request, Method, Version};
use pulp_auth_config::PathPrefix;

/// What may be forwarded: the checked path and the query as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The normalised path, which is what was checked.
    pub path: String,
    /// The query string without `?`, byte for byte as the client sent it.
    pub query: Option<String>,
}

impl Decision {
    /// `path?query`, as sent upstream after the upstream's own prefix.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

/// Applies every rule: [`shape`], then [`path`].
pub fn check(
    req: &request::Parts,
    allowed: &[PathPrefix],
    max_url_bytes: usize,
) -> Result<Decision, Refusal> {
    shape(req, max_url_bytes)?;
    path(req, allowed)
}

/// The rules every request obeys, the proxy's own endpoints included.
pub fn shape(req: &request::Parts, max_url_bytes: usize) -> Result<(), Refusal> {
    let uri = &req.uri;
    if uri.path().len() + uri.query().map_or(0, |q| q.len() + 1) > max_url_bytes {
        return Err(Refusal::UriTooLong);
    }
    if uri.scheme().is_some() || uri.authority().is_some() || !uri.path().starts_with('/') {
        return Err(Refusal::TargetForm);
    }
    if !uri.path().is_ascii() || !uri.query().unwrap_or("").is_ascii() {
        return Err(Refusal::BadPath("raw byte outside ASCII in the target"));
    }
    if req.method != Method::GET && req.method != Method::HEAD {
        return Err(Refusal::Method);
    }
    let mut hosts = req.headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(host), None) => {
            if !valid_host(host.as_bytes()) {
                return Err(Refusal::Host("not a valid host[:port]"));
            }
        }
        (None, _) if req.version <= Version::HTTP_10 => {}
        (None, _) => return Err(Refusal::Host("missing")),
        (Some(_), Some(_)) => return Err(Refusal::Host("more than one")),
    }
    let has_body = req.headers.contains_key(header::TRANSFER_ENCODING)
        || req
            .headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.as_bytes() != b"0");
    if has_body {
        return Err(Refusal::Body);
    }
    Ok(())
}

/// The rules that decide what is forwarded; for a request that passed
/// [`shape`].
pub fn path(req: &request::Parts, allowed: &[PathPrefix]) -> Result<Decision, Refusal> {
    let uri = &req.uri;
    let path = normalise_path(uri.path()).map_err(Refusal::BadPath)?;
    if !allowed.iter().any(|p| p.matches(&path)) {
        return Err(Refusal::PathNotAllowed);
    }
    Ok(Decision {
        path,
        query: uri.query().map(str::to_string),
    })
}

/// `Host = uri-host [ ":" port ]` (RFC 9112 section 3.2), with `uri-host`
/// as RFC 3986 section 3.2.2 has it: a bracketed IPv6 address (or
/// IPvFuture), or a reg-name (which covers IPv4 addresses), possibly empty
/// as the RFC allows. A port, when there is a colon, is 1 to 5 digits.
fn valid_host(value: &[u8]) -> bool {
    let (host, port) = if value.first() == Some(&b'[') {
        let Some(end) = value.iter().position(|&b| b == b']') else {
            return false;
        };
        if !ip_literal(&value[1..end]) {
            return false;
        }
        match &value[end + 1..] {
            [] => return true,
            [b':', port @ ..] => (&[][..], Some(port)),
            _ => return false,
        }
    } else {
        match value.iter().position(|&b| b == b':') {
            Some(i) => (&value[..i], Some(&value[i + 1..])),
            None => (value, None),
        }
    };
    let port_ok = match port {
        None => true,
        Some(p) => (1..=5).contains(&p.len()) && p.iter().all(u8::is_ascii_digit),
    };
    port_ok && reg_name(host)
}

/// `reg-name = *( unreserved / pct-encoded / sub-delims )`.
fn reg_name(host: &[u8]) -> bool {
    let mut i = 0;
    while i < host.len() {
        match host[i] {
            b'%' => {
                let hex = host.get(i + 1..i + 3);
                if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return false;
                }
                i += 3;
                continue;
            }
            b if unreserved(b) || sub_delim(b) => {}
            _ => return false,
        }
        i += 1;
    }
    true
}

/// The inside of `[...]`: an IPv6 address, or
/// `IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )`.
fn ip_literal(inner: &[u8]) -> bool {
    if let Some(rest) = inner
        .strip_prefix(b"v")
        .or_else(|| inner.strip_prefix(b"V"))
    {
        let Some(dot) = rest.iter().position(|&b| b == b'.') else {
            return false;
        };
        let (version, tail) = (&rest[..dot], &rest[dot + 1..]);
        return !version.is_empty()
            && version.iter().all(u8::is_ascii_hexdigit)
            && !tail.is_empty()
            && tail
                .iter()
                .all(|&b| unreserved(b) || sub_delim(b) || b == b':');
    }
    std::str::from_utf8(inner).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok())
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// Normalises an origin-form path so that it can be compared with a plain
/// prefix, or says why it cannot be:
/// - the path is ASCII; percent-encoded bytes decode, segment by segment,
///   to valid UTF-8 (no overlong forms, lone continuation bytes or
///   surrogates);
/// - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are
///   decoded; every other escape is kept exactly as sent;
/// - an encoded `/` or `\`, an encoded control character, an invalid escape,
///   or a segment that is `.` or `..` only after decoding is refused;
/// - a segment that a lenient server reads as `.` or `..` is refused: one
///   with a `;` parameter, padded with white space, or written with a
///   look-alike of `.` (see [`reads_as_dot_segment`]);
/// - a raw `\` is refused (some servers treat it as a separator);
/// - empty segments (repeated slashes) are dropped and `.`/`..` resolved;
///   `..` above the root is refused.
///
/// A trailing slash is kept, because `dir/` and `dir` may differ upstream.
pub fn normalise_path(raw: &str) -> Result<String, &'static str> {
    let Some(rest) = raw.strip_prefix('/') else {
        return Err("does not start with /");
    };
    if !raw.is_ascii() {
        return Err("raw byte outside ASCII");
    }
    if raw.contains('\\') {
        return Err("contains a backslash");
    }
    let mut out: Vec<String> = Vec::new();
    let mut trailing_slash = raw.ends_with('/');
    for seg in rest.split('/') {
        let Segment {
            kept,
            decoded,
            had_escape,
        } = decode_segment(seg)?;
        match kept.as_str() {
            "." | ".." if had_escape => return Err("percent-encoded dot segment"),
            "" => continue,
            "." => trailing_slash = true,
            ".." => {
                if out.pop().is_none() {
                    return Err("`..` above the root");
                }
                trailing_slash = true;
            }
            _ if reads_as_dot_segment(&decoded) => {
                return Err("segment that a server may read as `.` or `..`")
            }
            _ => {
                out.push(kept);
                trailing_slash = raw.ends_with('/');
            }
        }
    }
    let mut path = String::with_capacity(raw.len());
    for seg in &out {
        path.push('/');
        path.push_str(seg);
    }
    if trailing_slash || out.is_empty() {
        path.push('/');
    }
    Ok(path)
}

/// One path segment after decoding.
struct Segment {
    /// What is forwarded: unreserved escapes decoded, others as sent.
    kept: String,
    /// Every escape decoded: what an upstream that decodes sees.
    decoded: String,
    /// Whether any escape was present.
    had_escape: bool,
}

/// Decodes one (ASCII) segment.
fn decode_segment(seg: &str) -> Result<Segment, &'static str> {
    if !seg.contains('%') {
        return Ok(Segment {
            kept: seg.to_string(),
            decoded: seg.to_string(),
            had_escape: false,
        });
    }
    let bytes = seg.as_bytes();
    let mut kept = String::with_capacity(seg.len());
    let mut decoded = Vec::with_capacity(seg.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            // ASCII, checked by the caller, so one byte is one char.
            kept.push(bytes[i] as char);
            decoded.push(bytes[i]);
            i += 1;
            continue;
        }
        let hex = bytes.get(i + 1..i + 3).ok_or("truncated percent escape")?;
        let value = std::str::from_utf8(hex)
            .ok()
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or("invalid percent escape")?;
        match value {
            b'/' => return Err("percent-encoded slash"),
            b'\\' => return Err("percent-encoded backslash"),
            0..=0x1f | 0x7f => return Err("percent-encoded control character"),
            b if unreserved(b) => kept.push(b as char),
            _ => kept.push_str(&seg[i..i + 3]),
        }
        decoded.push(value);
        i += 3;
    }
    let decoded =
        String::from_utf8(decoded).map_err(|_| "percent-encoded bytes are not valid UTF-8")?;
    Ok(Segment {
        kept,
        decoded,
        had_escape: true,
    })
}

/// Whether a lenient server could read a (fully decoded) segment as `.`
/// or `..`: after cutting a `;` parameter (Tomcat and others drop it),
/// trimming white space and invisible characters from both ends, and
/// folding the characters that NFKC maps to dots.
///
/// The tables are short and complete for their purpose: every code point
/// whose NFKC form is `.` or `..` (checked against Python's `unicodedata`),
/// and Unicode `White_Space` (`char::is_whitespace`) plus the zero-width
/// characters that some stacks strip.
pub fn reads_as_dot_segment(decoded: &str) -> bool {
    let before_parameter = decoded.split(';').next().unwrap_or("");
    let core = before_parameter.trim_matches(|c: char| c.is_whitespace() || INVISIBLE.contains(&c));
    let mut dots = 0;
    for c in core.chars() {
        dots += match c {
            '.' | '\u{2024}' | '\u{FE52}' | '\u{FF0E}' => 1,
            '\u{2025}' | '\u{FE30}' => 2,
            _ => return false,
        };
        if dots > 2 {
            return false;
        }
    }
    dots > 0
}

/// Zero-width characters that are not `White_Space` but that some
/// normalisers drop: zero-width space, non-joiner, joiner, word joiner,
/// byte order mark, Mongolian vowel separator.
const INVISIBLE: [char; 6] = [
    '\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}', '\u{180E}',
];

#[cfg(test)]
mod tests;
