//! The cache's one entry point for a request: answer from disk when stored
//! and fresh, after a 304 when stored and not content-addressed, from
//! another request's fill while it runs, else fetch (one request per key
//! at a time) and store while streaming.

use super::entry::{self, Meta, Ranged};
use super::rules::{self, Freshness, Use};
use super::{Cache, FetchGuard, Fill, Lookup, Outcome};
use crate::body::{ProxyBody, Source};
use crate::forward::{Exchange, UpstreamBody, UpstreamRequest};
use crate::policy::Decision;
use http::{header, request, HeaderMap, HeaderValue, Response, StatusCode};
use std::sync::Arc;

/// Answers a request the policy accepted, through the cache.
pub async fn answer(
    cache: &Arc<Cache>,
    mut ex: Exchange<'_>,
    parts: &request::Parts,
    decision: &Decision,
    req: UpstreamRequest,
) -> Response<ProxyBody> {
    let fill = match rules::request_use(&parts.method, &parts.headers) {
        Use::Bypass => {
            ex.note(Outcome::Bypass);
            return ex.forward(req).await;
        }
        Use::Lookup { fill } => fill,
    };
    let freshness = rules::freshness(&decision.path, decision.query.as_deref());
    let mut req = match req {
        Ok(r) => r,
        Err(e) => return ex.fail(e),
    };
    let key = cache.key(&req.uri().to_string());
    match cache.lookup(&key, fill).await {
        Lookup::Pass => {
            ex.note(Outcome::Bypass);
            ex.forward(Ok(req)).await
        }
        // Fetched for another request just now: as fresh as a miss.
        Lookup::Follow(follower) => {
            ex.note(Outcome::Hit);
            serve_stored(cache, ex, parts, Source::Filling(follower))
        }
        Lookup::Miss(guard) => {
            cache.metrics().cache_miss();
            ex.note(Outcome::Miss);
            match ex.send(Ok(req)).await {
                Ok(resp) => {
                    let fill = store(cache, key, freshness, &resp, &ex, Some(guard));
                    ex.stream(resp, fill)
                }
                Err(e) => ex.fail(e),
            }
        }
        Lookup::Hit {
            entry,
            fetched_meanwhile,
        } if fetched_meanwhile || entry.meta.freshness == Freshness::Immutable => {
            let age = HeaderValue::from(entry.meta.age());
            ex.note(Outcome::Hit);
            let mut resp = serve_stored(cache, ex, parts, Source::Stored(*entry));
            // Served without asking the upstream (RFC 9111 5.1).
            resp.headers_mut().insert(header::AGE, age);
            resp
        }
        Lookup::Hit { entry, .. } => {
            revalidating(req.headers_mut(), &entry.meta);
            if !entry.meta.upstream.is_empty() {
                ex.storage_conditionals(conditionals(&entry.meta.headers));
            }
            let resp = match ex.send(Ok(req)).await {
                Ok(resp) => resp,
                Err(e) => {
                    cache.metrics().cache_revalidation(Outcome::Failed);
                    return ex.fail(e);
                }
            };
            let outcome = match resp.status() {
                StatusCode::NOT_MODIFIED => Outcome::Revalidated,
                StatusCode::OK => Outcome::Changed,
                StatusCode::NOT_FOUND | StatusCode::GONE => Outcome::Gone,
                _ => Outcome::Failed,
            };
            cache.metrics().cache_revalidation(outcome);
            ex.note(outcome);
            if outcome == Outcome::Revalidated {
                return serve_stored(cache, ex, parts, Source::Stored(*entry));
            }
            let fill = store(cache, key.clone(), freshness, &resp, &ex, None);
            if fill.is_none() && outcome != Outcome::Failed {
                cache.forget(&key);
            }
            ex.stream(resp, fill)
        }
    }
}

/// Answers from a stored entry or a fill: 304 when the client's own
/// validators match, the requested range, or the whole body.
fn serve_stored(
    cache: &Cache,
    ex: Exchange<'_>,
    parts: &request::Parts,
    source: Source,
) -> Response<ProxyBody> {
    cache.metrics().cache_hit();
    let (meta, len) = match &source {
        Source::Stored(entry) => (&entry.meta, Some(entry.meta.body_len)),
        Source::Filling(follower) => (follower.meta(), follower.body_len()),
    };
    let (mut head, ()) = Response::new(()).into_parts();
    for (name, value) in &meta.headers {
        head.headers.append(name, value.clone());
    }
    let headers = &mut head.headers;
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let (status, start, end) = if entry::not_modified(&parts.headers, &meta.headers) {
        headers.remove(header::CONTENT_TYPE);
        headers.remove(header::CONTENT_DISPOSITION);
        (StatusCode::NOT_MODIFIED, 0, Some(0))
    } else if let Some(len) = len {
        match entry::range(parts.headers.get(header::RANGE), len) {
            Ranged::Whole => (StatusCode::OK, 0, Some(len)),
            Ranged::Part(a, b) => {
                headers.insert(
                    header::CONTENT_RANGE,
                    content_range(format!("{a}-{b}/{len}")),
                );
                (StatusCode::PARTIAL_CONTENT, a, Some(b + 1))
            }
            Ranged::Unsatisfiable => {
                headers.insert(header::CONTENT_RANGE, content_range(format!("*/{len}")));
                (StatusCode::RANGE_NOT_SATISFIABLE, 0, Some(0))
            }
        }
    } else {
        // A chunked fill still running: its length is not known yet, so
        // the whole of it, chunked (a server may ignore `Range`).
        headers.remove(header::ACCEPT_RANGES);
        (StatusCode::OK, 0, None)
    };
    if let (Some(end), false) = (end, status == StatusCode::NOT_MODIFIED) {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    }
    head.status = status;
    ex.stored(head, source, (start, end))
}

fn content_range(range: String) -> HeaderValue {
    // Digits, `-`, `*` and `/` only: always a valid header value.
    HeaderValue::try_from(format!("bytes {range}")).expect("a valid header value")
}

/// Turns a client's request into a revalidation of `stored`: the client's
/// own validators and `Range` go (the cache answers those itself), the
/// stored validators are sent: the upstream's own when the body came
/// through a redirect (so the upstream can answer 304 itself), else the
/// response's.
fn revalidating(headers: &mut HeaderMap, stored: &Meta) {
    for name in [
        header::RANGE,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
    ] {
        headers.remove(name);
    }
    let validators = if stored.upstream.is_empty() {
        &stored.headers
    } else {
        &stored.upstream
    };
    headers.extend(conditionals(validators));
}

/// `If-None-Match` and `If-Modified-Since` for the `ETag` and
/// `Last-Modified` in `validators`.
fn conditionals(validators: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    if let Some(etag) = validators.get(header::ETAG) {
        out.insert(header::IF_NONE_MATCH, etag.clone());
    }
    if let Some(modified) = validators.get(header::LAST_MODIFIED) {
        out.insert(header::IF_MODIFIED_SINCE, modified.clone());
    }
    out
}

/// A fill for the response when the rules allow storing it; otherwise the
/// guard is dropped here, so requests waiting for this fetch go on at once.
fn store(
    cache: &Arc<Cache>,
    key: String,
    freshness: Freshness,
    resp: &Response<UpstreamBody>,
    ex: &Exchange<'_>,
    guard: Option<FetchGuard>,
) -> Option<Fill> {
    match rules::storable(resp.status(), resp.headers(), freshness, cache.max_size()) {
        Ok(len) => {
            let freshness = if rules::forces_revalidation(resp.headers()) {
                Freshness::Revalidate
            } else {
                freshness
            };
            let mut meta = Meta::new(key, freshness, len.unwrap_or(0), resp.headers());
            if let Some(followed) = ex.followed() {
                meta.upstream = followed.validators.clone();
            }
            cache.begin(meta, len, guard)
        }
        Err(why) => {
            tracing::debug!(target: "cache", status = resp.status().as_u16(), "not stored: {why}");
            None
        }
    }
}
