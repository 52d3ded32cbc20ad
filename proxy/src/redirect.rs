//! Following the upstream's redirects to other origins, as a Pulp with
//! object storage sends for every content request (`302`, `no-store`,
//! `Location` a presigned URL). The proxy fetches the target itself and
//! streams its answer to the client as the upstream's, so builds never
//! need to reach the store and never see a presigned URL.
//!
//! The rules, each enforced here or in the storage client
//! (`upstream::GuardedResolver`):
//! - only 301/302/303/307/308 to GET or HEAD with an absolute `Location`
//!   on another origin; a same-origin redirect goes to the client,
//!   rewritten to the proxy's address, as before;
//! - the same method; no `Authorization` and no client header but
//!   `Range`, `If-Range`, `If-None-Match` and `If-Modified-Since`;
//! - https only (http only when the upstream itself is plain http by
//!   `upstream.allow_plaintext`), verified with the upstream's trust
//!   anchors;
//! - a host outside `upstream.redirect_hosts` (when set) is refused, and so
//!   is one with a loopback, link-local or private address unless it is
//!   listed: the proxy must not become a way into the build host's network;
//! - at most `upstream.max_redirects` hops, never the same URL twice;
//! - a 401 or 403 from the store (an expired signature) asks the upstream
//!   once more, since a fresh redirect carries a fresh signature.
//!
//! A presigned URL's query is a credential: it is never logged, counted,
//! put into an error or sent to the client; only the host is.

use crate::error::UpstreamError;
use crate::metrics::Metrics;
use crate::upstream::Upstream;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use pulp_auth_config::{RedirectHost, Scheme, UpstreamOrigin};
use std::net::IpAddr;
use std::time::Duration;

/// The client headers a storage hop carries: what selects the part and
/// the validity of the one file named by the URL.
const STORAGE_HEADERS: [header::HeaderName; 4] = [
    header::RANGE,
    header::IF_RANGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
];

/// The body of a redirect is read (and dropped) up to this much, so its
/// connection can go back to the pool; a larger one closes it.
const DRAIN_LIMIT: usize = 64 * 1024;

/// Which redirects are followed, from `[upstream]`.
#[derive(Debug)]
pub struct Rules {
    max: u32,
    hosts: Option<Vec<RedirectHost>>,
    plaintext: bool,
    origin: UpstreamOrigin,
}

/// Where a followed request ended.
#[derive(Debug, Clone)]
pub struct Followed {
    /// The last storage host.
    pub host: String,
    /// Requests sent to storage.
    pub hops: u32,
    /// The `ETag` and `Last-Modified` of the upstream's redirect: what
    /// the upstream compares a later revalidation against (Pulp's `ETag`
    /// there is the content's sha256, not the storage's).
    pub validators: HeaderMap,
}

impl Rules {
    /// The rules of `config`.
    pub fn new(config: &pulp_auth_config::Upstream) -> Self {
        Self {
            max: config.max_redirects,
            hosts: config.redirect_hosts.clone(),
            plaintext: config.origin.scheme() == Scheme::Http,
            origin: config.origin.clone(),
        }
    }

    /// Whether `host` is named in `upstream.redirect_hosts`, which also
    /// vouches for its addresses.
    pub fn listed(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.hosts
            .as_ref()
            .is_some_and(|hosts| hosts.iter().any(|h| h.matches(host)))
    }

    /// The off-origin target of a redirect the proxy follows, if `resp`
    /// is one. A `Location` on the upstream's own origin (absolute, an
    /// absolute path, or relative) is the client's to follow; one that is
    /// not a URL at all is refused rather than passed on, since nobody can
    /// tell where it points.
    fn target(&self, resp: &Response<Incoming>) -> Result<Option<Uri>, UpstreamError> {
        if !matches!(resp.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
            return Ok(None);
        }
        let Some(location) = resp.headers().get(header::LOCATION) else {
            return Ok(None);
        };
        let unusable = || UpstreamError::Redirects {
            host: self.origin.host().to_ascii_lowercase(),
            why: "the upstream's Location is not a URL",
        };
        let text = location.to_str().map_err(|_| unusable())?;
        // A scheme-relative reference keeps the upstream's scheme; any
        // other reference without a scheme is a path on the upstream.
        let text = match text.strip_prefix("//") {
            Some(rest) => format!("{}://{rest}", self.origin.scheme().as_str()),
            None if !has_scheme(text) => return Ok(None),
            None => text.to_string(),
        };
        let uri: Uri = text.parse().map_err(|_| unusable())?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(unusable());
        };
        let default = if scheme.eq_ignore_ascii_case("http") {
            80
        } else {
            443
        };
        let same = scheme.eq_ignore_ascii_case(self.origin.scheme().as_str())
            && !authority.as_str().contains('@')
            && authority.host().eq_ignore_ascii_case(self.origin.host())
            && authority.port_u16().unwrap_or(default) == self.origin.port();
        Ok((!same).then_some(uri))
    }

    /// Refuses a target the proxy may not fetch; the resolver checks the
    /// addresses of names.
    fn check(&self, uri: &Uri) -> Result<(), UpstreamError> {
        let host = host_of(uri);
        let refuse = |why| {
            Err(UpstreamError::StorageHost {
                host: host.clone(),
                why,
            })
        };
        match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => {}
            Some(s) if s.eq_ignore_ascii_case("http") && self.plaintext => {}
            Some(s) if s.eq_ignore_ascii_case("http") => {
                return refuse(
                    "plain http://; only https is followed unless upstream.allow_plaintext is set",
                )
            }
            _ => return refuse("not an https:// URL"),
        }
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return refuse("the URL carries user information");
        }
        if self.hosts.is_some() && !self.listed(&host) {
            return refuse("not in upstream.redirect_hosts");
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            if !public(ip) && !self.listed(&host) {
                return refuse("a loopback, link-local or private address; list it in upstream.redirect_hosts if the proxy should reach it");
            }
        }
        Ok(())
    }
}

/// Whether a URI reference starts with a scheme (RFC 3986 3.1).
fn has_scheme(text: &str) -> bool {
    let end = text.find([':', '/', '?', '#']).unwrap_or(text.len());
    let scheme = &text[..end];
    text[end..].starts_with(':')
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

/// Whether `ip` is on the public internet as far as this rule goes: not
/// loopback, link-local, private, shared (CGN), unspecified or multicast.
pub fn public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || (a == 100 && (64..128).contains(&b))
                || a == 0)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// The host of `uri`, for logs and metrics: never its path or query.
fn host_of(uri: &Uri) -> String {
    uri.host().unwrap_or("").to_ascii_lowercase()
}

/// What is needed to ask the upstream again and to build storage hops.
#[derive(Clone)]
pub struct Replay {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    // The conditionals for storage hops when they differ from the
    // upstream's: a cache revalidation asks each with its own validators.
    storage_conditionals: Option<HeaderMap>,
}

impl std::fmt::Debug for Replay {
    // The headers hold the proxy's credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Replay")
    }
}

impl Replay {
    /// Keeps a copy of an upstream request; storage hops carry
    /// `storage_conditionals` instead of its `If-None-Match` and
    /// `If-Modified-Since` when given.
    pub fn of(req: &Request<Empty<Bytes>>, storage_conditionals: Option<HeaderMap>) -> Self {
        Self {
            method: req.method().clone(),
            uri: req.uri().clone(),
            headers: req.headers().clone(),
            storage_conditionals,
        }
    }

    fn upstream_request(&self) -> Request<Empty<Bytes>> {
        let mut req = Request::new(Empty::new());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = self.headers.clone();
        req
    }

    /// A storage hop to `uri`: `Host` and the listed client headers only,
    /// so never the proxy's `Authorization`.
    fn storage_request(&self, uri: &Uri) -> Result<Request<Empty<Bytes>>, UpstreamError> {
        let mut headers = HeaderMap::new();
        for name in &STORAGE_HEADERS {
            let from = match &self.storage_conditionals {
                Some(c) if name == header::IF_NONE_MATCH || name == header::IF_MODIFIED_SINCE => c,
                _ => &self.headers,
            };
            for value in from.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let authority = uri.authority().ok_or_else(|| UpstreamError::Redirects {
            host: host_of(uri),
            why: "the Location has no host",
        })?;
        let host =
            HeaderValue::from_str(authority.as_str()).map_err(|_| UpstreamError::Redirects {
                host: host_of(uri),
                why: "the Location's host is not a valid Host header",
            })?;
        headers.insert(header::HOST, host);
        let mut req = Request::new(Empty::new());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = uri.clone();
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = headers;
        Ok(req)
    }
}

/// Follows `resp` when it is an off-origin redirect; otherwise returns it
/// as it is. On a refused signature the upstream is asked once more.
pub async fn follow(
    upstream: &Upstream,
    replay: &Replay,
    resp: Response<Incoming>,
    metrics: &Metrics,
) -> Result<(Response<Incoming>, Option<Followed>), UpstreamError> {
    let rules = &upstream.redirects;
    let Some(target) = rules.target(&resp)? else {
        return Ok((resp, None));
    };
    let validators = crate::cache::entry::validators(resp.headers());
    drain(resp, upstream.body_timeout).await;
    match chase(upstream, replay, target, metrics).await {
        Err(UpstreamError::StorageRefused { host, status }) => {
            tracing::info!(
                storage = %host,
                status = status.as_u16(),
                "the storage refused the presigned URL; asking the upstream for a fresh one"
            );
            let again = upstream.send(replay.upstream_request()).await?;
            match rules.target(&again)? {
                Some(target) => {
                    let validators = crate::cache::entry::validators(again.headers());
                    drain(again, upstream.body_timeout).await;
                    chase(upstream, replay, target, metrics)
                        .await
                        .map(|(r, f)| (r, Some(Followed { validators, ..f })))
                }
                None => Ok((again, None)),
            }
        }
        other => other.map(|(r, f)| (r, Some(Followed { validators, ..f }))),
    }
}

/// The hops from the first storage URL to an answer that is not a
/// followed redirect.
async fn chase(
    upstream: &Upstream,
    replay: &Replay,
    first: Uri,
    metrics: &Metrics,
) -> Result<(Response<Incoming>, Followed), UpstreamError> {
    let rules = &upstream.redirects;
    let mut seen: Vec<Uri> = Vec::new();
    let mut url = first;
    loop {
        let host = host_of(&url);
        if seen.len() as u32 >= rules.max {
            return Err(UpstreamError::Redirects {
                host,
                why: "more redirects than upstream.max_redirects",
            });
        }
        if seen.contains(&url) {
            return Err(UpstreamError::Redirects {
                host,
                why: "the redirects loop",
            });
        }
        rules.check(&url)?;
        seen.push(url.clone());
        metrics.redirect_followed(&host);
        let req = replay.storage_request(&url)?;
        let resp = upstream
            .send_storage(req)
            .await
            .map_err(|cause| match cause {
                UpstreamError::StorageHost { why, .. } => UpstreamError::StorageHost {
                    host: host.clone(),
                    why,
                },
                cause => UpstreamError::Storage {
                    host: host.clone(),
                    cause: Box::new(cause),
                },
            })?;
        if matches!(
            resp.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            return Err(UpstreamError::StorageRefused {
                host,
                status: resp.status(),
            });
        }
        let next = if matches!(resp.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
            resp.headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .map(|l| resolve(&url, l))
        } else {
            None
        };
        match next {
            None => {
                let hops = seen.len() as u32;
                let validators = HeaderMap::new();
                return Ok((
                    resp,
                    Followed {
                        host,
                        hops,
                        validators,
                    },
                ));
            }
            Some(next) => {
                drain(resp, upstream.body_timeout).await;
                url = next?;
            }
        }
    }
}

/// A storage `Location` against the URL that sent it: absolute, or an
/// absolute path on the same origin.
fn resolve(base: &Uri, location: &str) -> Result<Uri, UpstreamError> {
    let bad = || UpstreamError::Redirects {
        host: host_of(base),
        why: "the storage sent a Location that is neither an absolute URL nor an absolute path",
    };
    if location.starts_with('/') && !location.starts_with("//") {
        let (Some(scheme), Some(authority)) = (base.scheme_str(), base.authority()) else {
            return Err(bad());
        };
        return format!("{scheme}://{authority}{location}")
            .parse()
            .map_err(|_| bad());
    }
    let uri: Uri = location.parse().map_err(|_| bad())?;
    if uri.scheme().is_none() || uri.authority().is_none() {
        return Err(bad());
    }
    Ok(uri)
}

/// Reads a redirect's small body so its connection can be reused; a body
/// that is large or slow just closes it.
async fn drain(resp: Response<Incoming>, within: Duration) {
    let mut body = resp.into_body();
    let mut read = 0usize;
    let _ = tokio::time::timeout(within.min(Duration::from_secs(5)), async {
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, |d| d.len());
            if read > DRAIN_LIMIT {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses_only() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.33.3",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!public(private.parse().unwrap()), "{private}");
        }
        for open in ["192.0.2.1", "8.8.8.8", "2001:db8::1", "172.32.0.1"] {
            assert!(public(open.parse().unwrap()), "{open}");
        }
    }

    #[test]
    fn schemes_are_told_from_paths() {
        for absolute in ["https://s3/x", "HTTP://h", "s3+x.y-z:stuff"] {
            assert!(has_scheme(absolute), "{absolute}");
        }
        for relative in ["/pulp/x", "x/y:z", "?a=b:c", "", ":x", "1a:b"] {
            assert!(!has_scheme(relative), "{relative}");
        }
    }

    #[test]
    fn storage_locations_resolve_absolute_only() {
        let base: Uri = "https://s3.example.test/b/k?X-Amz-Signature=abc"
            .parse()
            .unwrap();
        assert_eq!(
            resolve(&base, "/b/other").unwrap().to_string(),
            "https://s3.example.test/b/other"
        );
        assert!(resolve(&base, "relative").is_err());
        assert!(resolve(&base, "//elsewhere/x").is_err());
        let err = resolve(&base, "relative").unwrap_err().to_string();
        assert!(!err.contains("Signature"), "{err}");
    }
}
