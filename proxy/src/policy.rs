//! The request policy: the one place that decides whether a request may be
//! forwarded. It runs before anything is sent upstream, and what it returns
//! (the normalised path and the untouched query) is exactly what is
//! forwarded: nothing downstream re-reads the client's raw target.
//!
//! Rules, in order:
//! 0. the request target is at most `proxy.max_url_bytes` long;
//! 1. origin-form target only (no absolute-form, authority-form or `*`):
//!    the proxy is never a forward proxy;
//! 2. `GET` and `HEAD` only;
//! 3. exactly one `Host` header (none is allowed only for HTTP/1.0);
//! 4. no request body (`Content-Length` other than 0, or any
//!    `Transfer-Encoding`);
//! 5. the path normalises cleanly (see [`normalise_path`]);
//! 6. the normalised path lies under one of `proxy.allowed_paths`.

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

/// Applies every rule to a request head.
pub fn check(
    req: &request::Parts,
    allowed: &[PathPrefix],
    max_url_bytes: usize,
) -> Result<Decision, Refusal> {
    let uri = &req.uri;
    if uri.path().len() + uri.query().map_or(0, |q| q.len() + 1) > max_url_bytes {
        return Err(Refusal::UriTooLong);
    }
    if uri.scheme().is_some() || uri.authority().is_some() || !uri.path().starts_with('/') {
        return Err(Refusal::TargetForm);
    }
    if req.method != Method::GET && req.method != Method::HEAD {
        return Err(Refusal::Method);
    }
    match req.headers.get_all(header::HOST).iter().count() {
        1 => {}
        0 if req.version <= Version::HTTP_10 => {}
        0 => return Err(Refusal::Host("missing")),
        _ => return Err(Refusal::Host("more than one")),
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
    let path = normalise_path(uri.path()).map_err(Refusal::BadPath)?;
    if !allowed.iter().any(|p| p.matches(&path)) {
        return Err(Refusal::PathNotAllowed);
    }
    Ok(Decision {
        path,
        query: uri.query().map(str::to_string),
    })
}

/// Normalises an origin-form path so that it can be compared with a plain
/// prefix, or says why it cannot be:
/// - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are
///   decoded; every other escape is kept exactly as sent;
/// - an encoded `/` or `\`, an encoded control character, an invalid escape,
///   or a segment that is `.` or `..` only after decoding is refused;
/// - a raw `\` is refused (some servers treat it as a separator);
/// - empty segments (repeated slashes) are dropped and `.`/`..` resolved;
///   `..` above the root is refused.
///
/// A trailing slash is kept, because `dir/` and `dir` may differ upstream.
pub fn normalise_path(raw: &str) -> Result<String, &'static str> {
    let Some(rest) = raw.strip_prefix('/') else {
        return Err("does not start with /");
    };
    if raw.contains('\\') {
        return Err("contains a backslash");
    }
    let mut out: Vec<String> = Vec::new();
    let mut trailing_slash = raw.ends_with('/');
    for seg in rest.split('/') {
        let (decoded, had_escape) = decode_segment(seg)?;
        match decoded.as_str() {
            "." | ".." if had_escape => return Err("percent-encoded dot segment"),
            "" => continue,
            "." => trailing_slash = true,
            ".." => {
                if out.pop().is_none() {
                    return Err("`..` above the root");
                }
                trailing_slash = true;
            }
            _ => {
                out.push(decoded);
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

/// Decodes the unreserved escapes of one segment; returns whether any
/// escape was present.
fn decode_segment(seg: &str) -> Result<(String, bool), &'static str> {
    if !seg.contains('%') {
        return Ok((seg.to_string(), false));
    }
    let bytes = seg.as_bytes();
    let mut out = String::with_capacity(seg.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            // Safe to push byte-wise: hyper only accepts ASCII targets.
            out.push(bytes[i] as char);
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
            b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => {
                out.push(b as char)
            }
            _ => out.push_str(&seg[i..i + 3]),
        }
        i += 3;
    }
    Ok((out, true))
}

#[cfg(test)]
mod tests;
