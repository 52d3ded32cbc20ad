//! The one place where outcomes become responses. The client gets a status
//! and a fixed short reason; the cause goes to the log (see `service`), so
//! nothing the upstream or the TLS stack says can reach the client.

use crate::error::{ProxyError, Refusal, UpstreamError};
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// The status for an outcome.
pub fn status(err: &ProxyError) -> StatusCode {
    match err {
        ProxyError::Refused(r) => match r {
            Refusal::Method => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::UriTooLong => StatusCode::URI_TOO_LONG,
            Refusal::PathNotAllowed | Refusal::Client => StatusCode::FORBIDDEN,
            Refusal::TargetForm | Refusal::BadPath(_) | Refusal::Host(_) | Refusal::Body => {
                StatusCode::BAD_REQUEST
            }
        },
        ProxyError::Upstream(u) => match u {
            UpstreamError::ConnectTimeout | UpstreamError::ResponseTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
            _ => StatusCode::BAD_GATEWAY,
        },
    }
}

/// The client's short reason: names the rule, never a value.
fn reason(err: &ProxyError) -> &'static str {
    match err {
        ProxyError::Refused(r) => match r {
            Refusal::Method => "only GET and HEAD are allowed",
            Refusal::TargetForm => "only origin-form request targets are accepted",
            Refusal::BadPath(_) => "the request path is not acceptable",
            Refusal::PathNotAllowed => "this path is not served by this proxy",
            Refusal::Host(_) => "exactly one Host header is required",
            Refusal::Body => "GET and HEAD requests must not have a body",
            Refusal::Client => "this client is not allowed",
            Refusal::UriTooLong => "the request target is too long",
        },
        ProxyError::Upstream(u) => match u {
            UpstreamError::ConnectTimeout | UpstreamError::ResponseTimeout => {
                "the upstream did not answer in time"
            }
            UpstreamError::CredentialsRefused(_) => "the upstream refused the proxy's credentials",
            _ => "the upstream could not be reached",
        },
    }
}

/// Builds the response for an outcome that has no upstream body.
pub fn error_response(err: &ProxyError) -> Response<Full<Bytes>> {
    let status = status(err);
    let body = format!(
        "{} {}: {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        reason(err)
    );
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if matches!(err, ProxyError::Refused(Refusal::Method)) {
        h.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    if matches!(err, ProxyError::Refused(r) if status == StatusCode::BAD_REQUEST
        || matches!(r, Refusal::Client | Refusal::UriTooLong))
    {
        // A malformed or unwelcome client gets no second request on this
        // connection.
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
