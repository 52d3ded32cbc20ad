//! One stored response on disk: a small binary head (magic, the head's own
//! length, the key it was stored under, the freshness rule, when it was
//! stored, the body length, a few representation headers and, for a
//! response that came through a redirect to object storage, the
//! upstream's own validators), then the body. The key is checked on every open, so a file
//! can never answer for another URL, and the file's size must equal head
//! plus body, so a file cut short by a crash is never served.
//!
//! Only representation headers are kept; nothing of the request (in
//! particular not the proxy's `Authorization`) is ever written.

use super::rules::Freshness;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::fs::File;
use std::os::unix::fs::FileExt;

const MAGIC: &[u8; 8] = b"PAPC\x00\x00\x00\x01";
/// Heads larger than this are refused (they are a few hundred bytes).
const MAX_HEAD: usize = 64 * 1024;
/// Read first when opening; holds any ordinary head, so opening costs one
/// small read.
const FIRST_READ: usize = 4096;

/// Response headers worth keeping: they describe the body, not the
/// exchange.
pub const KEPT: [HeaderName; 6] = [
    header::CONTENT_TYPE,
    header::ETAG,
    header::LAST_MODIFIED,
    header::CACHE_CONTROL,
    header::EXPIRES,
    header::CONTENT_DISPOSITION,
];

/// The head of a stored response.
#[derive(Debug, Clone)]
pub struct Meta {
    /// The key it was stored under.
    pub key: String,
    /// How it may be served.
    pub freshness: Freshness,
    /// When it was stored, seconds since the Unix epoch (for `Age`).
    pub stored_at: u64,
    /// Body length in bytes.
    pub body_len: u64,
    /// The kept headers.
    pub headers: HeaderMap,
    /// The upstream's `ETag` and `Last-Modified` when the body came from
    /// object storage after a redirect: those of the redirect, which the
    /// upstream compares a revalidation against (`headers` hold the
    /// storage's, for the storage hop). Empty otherwise.
    pub upstream: HeaderMap,
}

impl Meta {
    /// Keeps the [`KEPT`] headers of `headers`.
    pub fn new(key: String, freshness: Freshness, body_len: u64, headers: &HeaderMap) -> Self {
        let mut kept = HeaderMap::new();
        for name in &KEPT {
            for v in headers.get_all(name) {
                kept.append(name.clone(), v.clone());
            }
        }
        Self {
            key,
            freshness,
            stored_at: now_secs(),
            body_len,
            headers: kept,
            upstream: HeaderMap::new(),
        }
    }

    /// Seconds since it was stored: the `Age` of a response served from it
    /// without revalidation (RFC 9111 5.1).
    pub fn age(&self) -> u64 {
        now_secs().saturating_sub(self.stored_at)
    }

    /// The serialised head; the body follows it in the file.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(256);
        b.put_slice(MAGIC);
        b.put_u32(0); // the head's length, filled in below
        b.put_u32(self.key.len() as u32);
        b.put_slice(self.key.as_bytes());
        b.put_u8(match self.freshness {
            Freshness::Immutable => 1,
            Freshness::Revalidate => 0,
        });
        b.put_u64(self.stored_at);
        b.put_u64(self.body_len);
        put_headers(&mut b, &self.headers);
        // Last and only when present, so entries written before it existed
        // read as they are.
        if !self.upstream.is_empty() {
            put_headers(&mut b, &self.upstream);
        }
        let len = b.len() as u32;
        b[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&len.to_be_bytes());
        b
    }

    /// The head's length as its first bytes declare it.
    fn declared_len(b: &[u8]) -> Option<usize> {
        let len = b.get(MAGIC.len()..MAGIC.len() + 4)?;
        Some(u32::from_be_bytes(len.try_into().ok()?) as usize)
    }

    /// Parses a head from the start of a file; returns it and its length.
    pub fn decode(b: &[u8]) -> Option<(Meta, u64)> {
        if b.len() < MAGIC.len() || &b[..MAGIC.len()] != MAGIC {
            return None;
        }
        let total = Self::declared_len(b)?;
        let mut b = b.get(MAGIC.len() + 4..total)?;
        let n = get_u32(&mut b)? as usize;
        let key = take(&mut b, n)?;
        let key = String::from_utf8(key.to_vec()).ok()?;
        let freshness = match get_u8(&mut b)? {
            1 => Freshness::Immutable,
            0 => Freshness::Revalidate,
            _ => return None,
        };
        let stored_at = get_u64(&mut b)?;
        let body_len = get_u64(&mut b)?;
        let headers = get_headers(&mut b)?;
        let upstream = if b.is_empty() {
            HeaderMap::new()
        } else {
            get_headers(&mut b)?
        };
        if !b.is_empty() {
            return None;
        }
        Some((
            Meta {
                key,
                freshness,
                stored_at,
                body_len,
                headers,
                upstream,
            },
            total as u64,
        ))
    }
}

fn put_headers(b: &mut Vec<u8>, headers: &HeaderMap) {
    b.put_u16(headers.len() as u16);
    for (name, value) in headers {
        b.put_u16(name.as_str().len() as u16);
        b.put_slice(name.as_str().as_bytes());
        b.put_u16(value.len() as u16);
        b.put_slice(value.as_bytes());
    }
}

fn get_headers(b: &mut &[u8]) -> Option<HeaderMap> {
    let count = get_u16(b)?;
    let mut headers = HeaderMap::new();
    for _ in 0..count {
        let n = get_u16(b)? as usize;
        let name = HeaderName::from_bytes(take(b, n)?).ok()?;
        let n = get_u16(b)? as usize;
        headers.append(name, HeaderValue::from_bytes(take(b, n)?).ok()?);
    }
    Some(headers)
}

/// The `ETag` and `Last-Modified` of `headers`.
pub fn validators(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in [header::ETAG, header::LAST_MODIFIED] {
        if let Some(v) = headers.get(&name) {
            out.insert(name, v.clone());
        }
    }
    out
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Some(head)
}

fn get_u8(b: &mut &[u8]) -> Option<u8> {
    (b.remaining() >= 1).then(|| b.get_u8())
}
fn get_u16(b: &mut &[u8]) -> Option<u16> {
    (b.remaining() >= 2).then(|| b.get_u16())
}
fn get_u32(b: &mut &[u8]) -> Option<u32> {
    (b.remaining() >= 4).then(|| b.get_u32())
}
fn get_u64(b: &mut &[u8]) -> Option<u64> {
    (b.remaining() >= 8).then(|| b.get_u64())
}

/// An open, checked entry. The open file keeps its content readable even
/// if the entry is replaced or evicted meanwhile.
#[derive(Debug)]
pub struct Entry {
    /// The file.
    pub file: File,
    /// Its head.
    pub meta: Meta,
    /// Where the body starts in the file.
    pub body_at: u64,
}

impl Entry {
    /// Opens and checks a stored file: the magic, the whole head, the
    /// size, and (when given) the key.
    pub fn open(path: &std::path::Path, key: Option<&str>) -> std::io::Result<Entry> {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        let corrupt = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
        let mut head = vec![0; (size as usize).min(FIRST_READ)];
        file.read_exact_at(&mut head, 0)?;
        match Meta::declared_len(&head) {
            Some(n) if n > head.len() && n <= MAX_HEAD && n as u64 <= size => {
                head.resize(n, 0);
                file.read_exact_at(&mut head, 0)?;
            }
            _ => {}
        }
        let (meta, body_at) = Meta::decode(&head).ok_or_else(|| corrupt("unreadable head"))?;
        if body_at + meta.body_len != size {
            return Err(corrupt("size does not match the head"));
        }
        if key.is_some_and(|k| k != meta.key) {
            return Err(corrupt("stored under another key"));
        }
        Ok(Entry {
            file,
            meta,
            body_at,
        })
    }

    /// Reads up to `max` body bytes from body offset `at`.
    pub fn read(&self, at: u64, max: usize) -> std::io::Result<Bytes> {
        let mut buf = BytesMut::zeroed(max);
        let n = self.file.read_at(&mut buf, self.body_at + at)?;
        buf.truncate(n);
        Ok(buf.freeze())
    }
}

/// A single byte range of a body of length `len`, as `Range` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ranged {
    /// No usable `Range`: the whole body (multi-range and malformed
    /// requests get the whole body too, which RFC 9110 allows).
    Whole,
    /// Bytes `start..=end`.
    Part(u64, u64),
    /// Nothing satisfiable: 416.
    Unsatisfiable,
}

/// Interprets a `Range` header against a body of `len` bytes.
pub fn range(value: Option<&HeaderValue>, len: u64) -> Ranged {
    let Some(spec) = value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Ranged::Whole;
    };
    if spec.contains(',') {
        return Ranged::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ranged::Whole;
    };
    // `Some(None)` for an empty side, `None` for anything but digits;
    // numbers too large for u64 saturate, which is still unsatisfiable.
    let number = |s: &str| match s.trim() {
        "" => Some(None),
        t if t.bytes().all(|c| c.is_ascii_digit()) => Some(Some(t.parse().unwrap_or(u64::MAX))),
        _ => None,
    };
    match (number(a), number(b)) {
        (Some(Some(start)), Some(end)) => {
            let end = end.unwrap_or(u64::MAX);
            if end < start {
                Ranged::Whole
            } else if start >= len {
                Ranged::Unsatisfiable
            } else {
                Ranged::Part(start, end.min(len - 1))
            }
        }
        (Some(None), Some(Some(suffix))) if suffix == 0 || len == 0 => Ranged::Unsatisfiable,
        (Some(None), Some(Some(suffix))) => Ranged::Part(len.saturating_sub(suffix), len - 1),
        _ => Ranged::Whole,
    }
}

/// Whether the client's `If-None-Match` or `If-Modified-Since` already
/// matches the stored response, so a 304 answers it (RFC 9110 13.1.2,
/// 13.1.3: `If-None-Match` wins when both are present).
pub fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    if let Some(inm) = request.get(header::IF_NONE_MATCH) {
        let Some(etag) = stored.get(header::ETAG).and_then(|e| e.to_str().ok()) else {
            return false;
        };
        let Ok(list) = inm.to_str() else {
            return false;
        };
        let weak = |t: &str| t.trim().trim_start_matches("W/").to_string();
        return list.trim() == "*" || list.split(',').any(|t| weak(t) == weak(etag));
    }
    let date = |h: Option<&HeaderValue>| {
        h.and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
    };
    match (
        date(request.get(header::IF_MODIFIED_SINCE)),
        date(stored.get(header::LAST_MODIFIED)),
    ) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
