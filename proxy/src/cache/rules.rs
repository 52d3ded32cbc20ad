//! What the cache may answer and what it may keep. Freshness follows HTTP,
//! never a guess: a stored response is served without asking the upstream
//! only when its path is content-addressed (the name changes whenever the
//! content does); every other hit is revalidated with the upstream.
//!
//! Content-addressed paths (no query string):
//! - package files: the last segment ends in `.rpm`, `.drpm`, `.deb`,
//!   `.udeb` or `.ddeb` (a repository never rebuilds a name-version-arch
//!   in place);
//! - Debian `by-hash` indexes: `.../by-hash/{MD5Sum,SHA1,SHA256,SHA512}/HEX`
//!   with a digest of that algorithm's length;
//! - RPM `repodata/HEX-NAME`, where HEX is a 32, 40, 64 or 128 digit
//!   checksum (`createrepo` names every file but `repomd.xml` this way).
//!
//! Everything else (`repomd.xml`, `Release`, `InRelease`, `Packages`, ...)
//! is revalidated on every hit.

use http::header::{self, HeaderMap};
use http::{Method, StatusCode};

/// How a stored response may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Content-addressed: served from disk without a round-trip.
    Immutable,
    /// Served only after the upstream confirms it (304).
    Revalidate,
}

/// The freshness rule for a normalised path and its query.
pub fn freshness(path: &str, query: Option<&str>) -> Freshness {
    if query.is_none() && content_addressed(path) {
        Freshness::Immutable
    } else {
        Freshness::Revalidate
    }
}

const PACKAGE_SUFFIXES: [&str; 5] = [".rpm", ".drpm", ".deb", ".udeb", ".ddeb"];

fn content_addressed(path: &str) -> bool {
    let mut segments = path.rsplit('/');
    let name = segments.next().unwrap_or("");
    let parent = segments.next().unwrap_or("");
    let grandparent = segments.next().unwrap_or("");
    if PACKAGE_SUFFIXES
        .iter()
        .any(|s| name.len() > s.len() && name.ends_with(s))
    {
        return true;
    }
    if grandparent == "by-hash" {
        let digits = match parent {
            "MD5Sum" => 32,
            "SHA1" => 40,
            "SHA256" => 64,
            "SHA512" => 128,
            _ => return false,
        };
        return is_hex(name, digits);
    }
    if parent == "repodata" {
        if let Some((sum, rest)) = name.split_once('-') {
            return !rest.is_empty() && [32, 40, 64, 128].iter().any(|&n| is_hex(sum, n));
        }
    }
    false
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// How the cache takes part in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Not at all: forwarded as if there were no cache.
    Bypass,
    /// Served from a stored entry when there is one; on a miss, fetched
    /// and stored only if `fill` (a conditional or partial request cannot
    /// fetch the whole body the cache needs).
    Lookup {
        /// Whether a miss may fill the cache.
        fill: bool,
    },
}

/// Whether and how the cache answers a request.
pub fn request_use(method: &Method, headers: &HeaderMap) -> Use {
    if method != Method::GET
        || headers.contains_key(header::IF_MATCH)
        || headers.contains_key(header::IF_UNMODIFIED_SINCE)
        || headers.contains_key(header::IF_RANGE)
        || has_directive(headers, "no-store")
    {
        return Use::Bypass;
    }
    let fill = !(headers.contains_key(header::RANGE)
        || headers.contains_key(header::IF_NONE_MATCH)
        || headers.contains_key(header::IF_MODIFIED_SINCE));
    Use::Lookup { fill }
}

/// Why a response is not stored, for the debug log.
pub type NotStored = &'static str;

/// Checks an upstream response (headers already rewritten) for storing and
/// returns its body length, `None` for a chunked body (Pulp's on-demand
/// content streams its first fetch that way): `framing` has refused
/// bodies delimited by the connection's close, so one without
/// `Content-Length` ends with the last chunk, and a cut one fails its fill.
/// `max_size` is the whole cache's bound; the fill applies it to a chunked
/// body as it grows.
pub fn storable(
    status: StatusCode,
    headers: &HeaderMap,
    freshness: Freshness,
    max_size: u64,
) -> Result<Option<u64>, NotStored> {
    if status != StatusCode::OK {
        return Err("status is not 200");
    }
    let len = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or("a Content-Length that is not a number")?,
        ),
    };
    if len.is_some_and(|len| len > max_size) {
        return Err("larger than cache.max_size");
    }
    if has_directive(headers, "no-store") || has_directive(headers, "private") {
        return Err("Cache-Control forbids storing");
    }
    if headers.contains_key(header::SET_COOKIE) {
        return Err("carries Set-Cookie");
    }
    if headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        // Another client might not accept that encoding.
        return Err("has a Content-Encoding");
    }
    let varies = headers
        .get_all(header::VARY)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("*").split(','))
        .any(|name| !name.trim().eq_ignore_ascii_case("accept-encoding"));
    if varies {
        // Entries are keyed by URL alone.
        return Err("varies on request headers");
    }
    let validated =
        headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED);
    let must_revalidate = freshness == Freshness::Revalidate || has_directive(headers, "no-cache");
    if must_revalidate && !validated {
        return Err("no ETag or Last-Modified to revalidate with");
    }
    Ok(len)
}

/// Whether a response must be revalidated although its path is
/// content-addressed (the upstream said `no-cache`).
pub fn forces_revalidation(headers: &HeaderMap) -> bool {
    has_directive(headers, "no-cache")
}

fn has_directive(headers: &HeaderMap, directive: &str) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| {
            let name = d.split('=').next().unwrap_or("").trim();
            name.eq_ignore_ascii_case(directive)
        })
}

#[cfg(test)]
mod tests;
