//! The one place where outcomes become responses. Each outcome has one
//! [`Answer`]: its status, the client's fixed short reason, and whether
//! the connection closes. The cause goes to the log, in the one line per
//! request written here, so nothing the upstream or the TLS stack says can
//! reach the client.

use crate::access::{Access, Field};
use crate::body::ProxyBody;
use crate::error::{ProxyError, Refusal, UpstreamError};
use crate::metrics::Metrics;
use bytes::Bytes;
use http::{header, request, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use std::net::SocketAddr;

/// What the client is told about an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The status sent.
    pub status: StatusCode,
    /// The body's one line: names the rule, never a value.
    pub reason: &'static str,
    /// `Connection: close`: a malformed or unwelcome client gets no second
    /// request on this connection.
    pub close: bool,
}

impl Answer {
    const fn new(status: StatusCode, reason: &'static str, close: bool) -> Self {
        Self {
            status,
            reason,
            close,
        }
    }
}

/// The answer for an outcome.
pub fn answer(err: &ProxyError) -> Answer {
    use StatusCode as S;
    match err {
        ProxyError::Refused(r) => match r {
            Refusal::Method => Answer::new(
                S::METHOD_NOT_ALLOWED,
                "only GET and HEAD are allowed",
                false,
            ),
            Refusal::TargetForm => Answer::new(
                S::BAD_REQUEST,
                "only origin-form request targets are accepted",
                true,
            ),
            Refusal::BadPath(_) => {
                Answer::new(S::BAD_REQUEST, "the request path is not acceptable", true)
            }
            Refusal::PathNotAllowed => {
                Answer::new(S::FORBIDDEN, "this path is not served by this proxy", false)
            }
            Refusal::Host(_) => Answer::new(
                S::BAD_REQUEST,
                "exactly one valid Host header is required",
                true,
            ),
            Refusal::Body => Answer::new(
                S::BAD_REQUEST,
                "GET and HEAD requests must not have a body",
                true,
            ),
            Refusal::Client => Answer::new(S::FORBIDDEN, "this client is not allowed", true),
            Refusal::UriTooLong => {
                Answer::new(S::URI_TOO_LONG, "the request target is too long", true)
            }
        },
        ProxyError::Upstream(UpstreamError::Storage { cause, .. }) => {
            answer(&ProxyError::Upstream((**cause).clone()))
        }
        ProxyError::Upstream(u) => match u {
            UpstreamError::ConnectTimeout | UpstreamError::ResponseTimeout => Answer::new(
                S::GATEWAY_TIMEOUT,
                "the upstream did not answer in time",
                false,
            ),
            UpstreamError::CredentialsRefused(_) => Answer::new(
                S::BAD_GATEWAY,
                "the upstream refused the proxy's credentials",
                false,
            ),
            // The upstream's own verdict on the path, as a path rule's is:
            // the client asked for something it may not have.
            UpstreamError::Forbidden => Answer::new(
                S::FORBIDDEN,
                "the upstream does not let the proxy's user read this path",
                false,
            ),
            UpstreamError::Framing(_) => Answer::new(
                S::BAD_GATEWAY,
                "the upstream's response could not be forwarded faithfully",
                false,
            ),
            UpstreamError::StorageRefused { .. } => Answer::new(
                S::BAD_GATEWAY,
                "the object storage refused the upstream's redirect",
                false,
            ),
            UpstreamError::StorageHost { .. } | UpstreamError::Redirects { .. } => Answer::new(
                S::BAD_GATEWAY,
                "the upstream's redirect was not followed",
                false,
            ),
            UpstreamError::Certificate(_)
            | UpstreamError::Storage { .. }
            | UpstreamError::Tls(_)
            | UpstreamError::Refused(_)
            | UpstreamError::Dns(_)
            | UpstreamError::Other(_) => {
                Answer::new(S::BAD_GATEWAY, "the upstream could not be reached", false)
            }
        },
    }
}

/// The response for an outcome that has no upstream body.
pub fn error_response(err: &ProxyError) -> Response<Full<Bytes>> {
    let Answer {
        status,
        reason,
        close,
    } = answer(err);
    let body = format!(
        "{} {}: {reason}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
    );
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        h.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    if close {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// A request refused by policy: logged at info, nothing sent upstream.
pub fn refused(
    metrics: &Metrics,
    peer: SocketAddr,
    parts: &request::Parts,
    refusal: Refusal,
) -> Response<ProxyBody> {
    let resp = error_response(&ProxyError::Refused(refusal.clone()));
    let status = resp.status().as_u16();
    metrics.refusal(refusal.rule());
    metrics.request(&parts.method, status, 0);
    tracing::info!(
        target: "access",
        peer = %peer,
        method = %Field(parts.method.as_str()),
        target = %Field(shorten(&parts.uri.to_string())),
        status,
        rule = %refusal.rule(),
        reason = %refusal,
        "refused"
    );
    resp.map(ProxyBody::Local)
}

/// An upstream failure: one line that names the cause for the operator.
pub fn failed(access: Access, cause: &UpstreamError) -> Response<ProxyBody> {
    let resp = error_response(&ProxyError::Upstream(cause.clone()));
    let status = resp.status().as_u16();
    access.metrics.upstream_error(cause.kind());
    if cause.kind().starts_with("storage") || cause.kind() == "redirects" {
        access.metrics.storage_error(cause.kind());
    }
    access.metrics.request(&access.method, status, 0);
    tracing::error!(
        target: "access",
        peer = %access.peer,
        method = %Field(access.method.as_str()),
        path = %Field(&access.path),
        status,
        kind = %cause.kind(),
        duration_ms = access.started.elapsed().as_millis() as u64,
        "upstream failed: {cause}"
    );
    resp.map(ProxyBody::Local)
}

/// Keeps refused targets readable in the log; the rule says why anyway.
fn shorten(target: &str) -> &str {
    match target.char_indices().nth(256) {
        Some((i, _)) => &target[..i],
        None => target,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFUSALS: [Refusal; 8] = [
        Refusal::Method,
        Refusal::TargetForm,
        Refusal::BadPath("x"),
        Refusal::PathNotAllowed,
        Refusal::Host("x"),
        Refusal::Body,
        Refusal::Client,
        Refusal::UriTooLong,
    ];

    #[test]
    fn refusals_are_client_errors_and_bad_requests_close() {
        for r in REFUSALS {
            let a = answer(&ProxyError::Refused(r.clone()));
            assert!(a.status.is_client_error(), "{r:?}: {}", a.status);
            if a.status == StatusCode::BAD_REQUEST {
                assert!(a.close, "{r:?} keeps the connection");
            }
            let resp = error_response(&ProxyError::Refused(r.clone()));
            assert_eq!(resp.status(), a.status);
            assert_eq!(resp.headers().contains_key(header::CONNECTION), a.close);
            assert_eq!(
                resp.headers().contains_key(header::ALLOW),
                r == Refusal::Method
            );
        }
    }

    #[test]
    fn upstream_failures_are_gateway_errors_with_fixed_reasons() {
        let secret = "fake pass:@/%+ word";
        for (e, status) in [
            (UpstreamError::ConnectTimeout, StatusCode::GATEWAY_TIMEOUT),
            (UpstreamError::ResponseTimeout, StatusCode::GATEWAY_TIMEOUT),
            (
                UpstreamError::Certificate(secret.into()),
                StatusCode::BAD_GATEWAY,
            ),
            (UpstreamError::Other(secret.into()), StatusCode::BAD_GATEWAY),
            (
                UpstreamError::CredentialsRefused(StatusCode::FORBIDDEN),
                StatusCode::BAD_GATEWAY,
            ),
            (
                UpstreamError::Framing(crate::error::Framing::TransferCoding),
                StatusCode::BAD_GATEWAY,
            ),
        ] {
            let a = answer(&ProxyError::Upstream(e.clone()));
            assert_eq!(a.status, status, "{e:?}");
            assert!(!a.close);
            assert!(
                !a.reason.contains("fake"),
                "{e:?}: the cause reached the client"
            );
        }
    }
}
