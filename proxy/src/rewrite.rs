//! Header rewriting in both directions.
//!
//! Towards the upstream: only the client headers in [`FORWARDED`] pass
//! (range and conditional requests, and `Cache-Control`); everything else
//! the client sent is dropped: its own credentials and cookies, hop-by-hop
//! headers, method and URL overrides, forwarding headers, and whatever
//! else could vary or poison a response the cache keeps under a key of
//! user name and URL alone. Then `Host` is set to the upstream's
//! authority; then the proxy's `Authorization` is added. The order
//! matters: strip before inject, so nothing the client sends can replace
//! or accompany the proxy's credentials. No `X-Forwarded-For` or
//! `Forwarded` is sent: the peer is a build container, which Pulp has no
//! use for, and the client's own claims are not passed on.

use crate::credentials::BasicAuth;
use crate::error::UpstreamError;
use crate::policy::Decision;
use crate::upstream::Upstream;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::{request, HeaderValue, Method, Request, Uri, Version};
use http_body_util::Empty;
use pulp_auth_config::UpstreamOrigin;

/// Hop-by-hop headers (RFC 9110 7.6.1) plus the legacy `Proxy-Connection`
/// and `Keep-Alive`; never forwarded in either direction.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// The client headers that reach the upstream; every other one is
/// dropped. Each is one the cache answers or bypasses on itself
/// (`cache::rules::request_use`, `cache::serve::revalidating`) or one that
/// selects no representation (`Cache-Control` says how fresh, not what):
/// none can make the upstream send a body that a cache entry, keyed by
/// user name and URL, would then hand to another client. `Accept`,
/// `Accept-Encoding`, `User-Agent` and the like are dropped because they
/// can (the cache stores only identity-encoded, non-varying responses
/// anyway).
const FORWARDED: [HeaderName; 7] = [
    header::RANGE,
    header::IF_RANGE,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
    header::CACHE_CONTROL,
];

/// Builds the upstream request from a checked request head.
pub fn to_upstream(
    parts: &request::Parts,
    decision: &Decision,
    upstream: &Upstream,
    auth: &BasicAuth,
) -> Result<Request<Empty<Bytes>>, UpstreamError> {
    let mut headers = HeaderMap::with_capacity(FORWARDED.len() + 2);
    // A listed name stays hop-by-hop even when it is on the allow-list.
    let listed = connection_listed(&parts.headers);
    for (name, value) in &parts.headers {
        if FORWARDED.contains(name) && !listed.contains(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    // Strip (above) before inject (in `authorized`).
    authorized(
        parts.method.clone(),
        &decision.path_and_query(),
        headers,
        upstream,
        auth,
    )
}

/// The readiness probe, with the proxy's credentials: `HEAD` of
/// `upstream.readiness_path` when set, else `GET` of the upstream's status
/// endpoint. Pulp's status endpoint answers 200 without credentials, so
/// only a guarded path proves the content app accepts them.
pub fn readiness_probe(
    upstream: &Upstream,
    auth: &BasicAuth,
) -> Result<Request<Empty<Bytes>>, UpstreamError> {
    let (method, path) = match &upstream.readiness_path {
        Some(path) => (Method::HEAD, path.as_str()),
        None => (Method::GET, STATUS_PATH),
    };
    authorized(method, path, HeaderMap::new(), upstream, auth)
}

/// Where the upstream's status endpoint is, below its prefix.
pub const STATUS_PATH: &str = "/pulp/api/v3/status/";

/// The one place the credential is injected: `headers` (already stripped
/// of anything the client may not send) plus `Host` and the proxy's
/// `Authorization`, to the upstream's URL for `path_and_query`.
fn authorized(
    method: Method,
    path_and_query: &str,
    mut headers: HeaderMap,
    upstream: &Upstream,
    auth: &BasicAuth,
) -> Result<Request<Empty<Bytes>>, UpstreamError> {
    headers.insert(header::HOST, upstream.host_header());
    headers.insert(header::AUTHORIZATION, auth.header_value());
    let mut req = Request::new(Empty::new());
    *req.method_mut() = method;
    *req.uri_mut() = upstream.uri_for(path_and_query)?;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Ok(req)
}

/// Drops hop-by-hop headers and cookies from the upstream's response.
///
/// `Content-Length` stays so the client can tell a complete body from a
/// truncated one, except beside a `Transfer-Encoding` (RFC 9112 6.3): hyper
/// then reads the body as chunked and ignores the length, so the length
/// may be anything, and forwarding it would let a client stop early at a
/// complete-looking short file. `Transfer-Encoding` itself describes the
/// upstream hop; the server side frames the body anew.
///
/// `Set-Cookie` goes because every client shares the proxy's one
/// credential: no session may bind to it, and no client may receive a
/// cookie another client's request earned.
pub fn from_upstream(headers: &mut HeaderMap) {
    let listed = connection_listed(headers);
    for name in HOP_BY_HOP.iter().chain(listed.iter()) {
        headers.remove(name);
    }
    if headers.remove(header::TRANSFER_ENCODING).is_some() {
        headers.remove(header::CONTENT_LENGTH);
    }
    headers.remove(header::SET_COOKIE);
    headers.remove(HeaderName::from_static("set-cookie2"));
}

/// Maps a redirect that points back into the upstream (absolute URL on the
/// upstream origin, or an absolute path) to the same place behind the
/// proxy, so the client keeps going through the proxy. Any other `Location`
/// is left alone: the client follows it without credentials, because it
/// never had any. `None` means "leave the header as it is".
pub fn redirect(
    location: &HeaderValue,
    upstream: &UpstreamOrigin,
    public_base: &str,
) -> Option<HeaderValue> {
    let text = location.to_str().ok()?;
    let uri: Uri = text.parse().ok()?;
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => {
            let default_port = if scheme.eq_ignore_ascii_case("https") {
                443
            } else {
                80
            };
            let same_origin = scheme.eq_ignore_ascii_case(upstream.scheme().as_str())
                && !authority.as_str().contains('@')
                && authority.host().eq_ignore_ascii_case(upstream.host())
                && authority.port_u16().unwrap_or(default_port) == upstream.port();
            if !same_origin {
                return None;
            }
        }
        // An absolute-path reference, resolved against the upstream origin.
        (None, None) if text.starts_with('/') && !text.starts_with("//") => {}
        _ => return None,
    }
    let rest = uri
        .path_and_query()?
        .as_str()
        .strip_prefix(upstream.prefix())?;
    if !(rest.starts_with('/') || rest.starts_with('?') || rest.is_empty()) {
        return None;
    }
    HeaderValue::from_str(&format!("{public_base}{rest}")).ok()
}

/// The header names a `Connection` header declares hop-by-hop.
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

#[cfg(test)]
mod tests;
