//! The stand-in object store behind the stand-in upstream's redirects
//! (`Upstream::with_storage`): a second TLS origin, reached as
//! `https://localhost:PORT` (so it is another origin than the upstream's
//! `https://127.0.0.1:PORT`), that serves the upstream's files only at a
//! presigned-style URL. Like S3 it checks the signature (an HMAC over
//! method, path, date and lifetime, with a secret the upstream and the
//! storage share and the proxy never sees) and the expiry, refuses any
//! request carrying `Authorization` with 400, and honours Range and the
//! conditionals. It records every request, so a test can prove that no
//! credential ever reached it.

use crate::pki::ServerCert;
use crate::upstream::{Files, Recorded};
use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, std::io::Error>;

/// The shared signing secret; the proxy is never given it.
const SECRET: &[u8] = b"stand-in storage signing secret";

pub(crate) struct StorageShared {
    files: Files,
    requests: Mutex<Vec<Recorded>>,
    /// Seconds added to the real clock when checking expiry.
    clock_offset: AtomicI64,
    /// Signed requests still to be refused as expired, whatever their
    /// signature says.
    refuse_next: AtomicUsize,
    body_bytes: AtomicU64,
    /// Lifetime written into new signatures.
    pub(crate) expires_secs: AtomicU64,
    port: u16,
}

/// A running storage; stops when dropped.
pub struct Storage {
    /// Its address.
    pub addr: SocketAddr,
    pub(crate) shared: Arc<StorageShared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Storage {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Storage {
    /// Starts on `127.0.0.1:0` with `cert`, serving `files`.
    pub(crate) async fn start(cert: ServerCert, files: Files) -> Storage {
        let acceptor = crate::upstream::acceptor(cert, crate::upstream::Versions::Both);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(StorageShared {
            files,
            requests: Mutex::default(),
            clock_offset: AtomicI64::new(0),
            refuse_next: AtomicUsize::new(0),
            body_bytes: AtomicU64::new(0),
            expires_secs: AtomicU64::new(600),
            port: addr.port(),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, s) = (acceptor.clone(), s.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req| {
                        let s = s.clone();
                        async move {
                            let resp = serve(&s, req).await;
                            let counted = crate::upstream::counting(resp, move |n| {
                                s.body_bytes.fetch_add(n, Ordering::SeqCst);
                            });
                            Ok::<_, std::convert::Infallible>(counted)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Storage { addr, shared, task }
    }

    /// The host the upstream's redirects name (its `redirect_hosts` entry).
    pub const HOST: &'static str = "localhost";

    /// `https://localhost:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}:{}", Self::HOST, self.addr.port())
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Response body bytes sent so far.
    pub fn body_bytes(&self) -> u64 {
        self.shared.body_bytes.load(Ordering::SeqCst)
    }

    /// Moves the storage's clock `secs` ahead: URLs signed for less than
    /// that are expired from now on, with no test waiting for it.
    pub fn advance_clock(&self, secs: i64) {
        self.shared.clock_offset.fetch_add(secs, Ordering::SeqCst);
    }

    /// Refuses the next `n` signed requests as expired (403), as S3 does
    /// when a URL outlived its lifetime between redirect and fetch.
    pub fn expire_next(&self, n: usize) {
        self.shared.refuse_next.store(n, Ordering::SeqCst);
    }

    /// The lifetime the upstream writes into new signatures.
    pub fn set_expires(&self, secs: u64) {
        self.shared.expires_secs.store(secs, Ordering::SeqCst);
    }
}

/// The presigned query for `method` and `path`, signed now, in the shape
/// S3 uses (the parameters the proxy must never log).
pub(crate) fn presign(s: &StorageShared, method: &str, path: &str) -> String {
    let date = now();
    let expires = s.expires_secs.load(Ordering::SeqCst);
    let sig = signature(method, path, date, expires);
    format!(
        "response-content-disposition=attachment&X-Amz-Algorithm=AWS4-HMAC-SHA256\
         &X-Amz-Credential=STANDINKEY%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date={date}\
         &X-Amz-Expires={expires}&X-Amz-SignedHeaders=host&X-Amz-Signature={sig}"
    )
}

/// The `Location` for a presigned `path`.
pub(crate) fn location(s: &StorageShared, method: &str, path: &str) -> String {
    format!(
        "https://{}:{}{path}?{}",
        Storage::HOST,
        s.port,
        presign(s, method, path)
    )
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// HMAC-SHA256 (RFC 2104) of the signed fields, hex.
fn signature(method: &str, path: &str, date: i64, expires: u64) -> String {
    let message = format!("{method}\n{path}\n{date}\n{expires}");
    let mut key = [0u8; 64];
    key[..SECRET.len()].copy_from_slice(SECRET);
    let pad = |b: u8| key.iter().map(|k| k ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message.as_bytes())
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

fn answer(status: StatusCode, code: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/xml")
        .body(full(format!("<Error><Code>{code}</Code></Error>")))
        .unwrap()
}

async fn serve(s: &StorageShared, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    s.requests.lock().unwrap().push(Recorded {
        method: req.method().to_string(),
        target: req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect(),
    });
    // S3: "Only one auth mechanism allowed".
    if req.headers().contains_key(header::AUTHORIZATION) {
        return answer(StatusCode::BAD_REQUEST, "InvalidArgument");
    }
    let (Some(date), Some(expires), Some(sig)) = (
        param(&query, "X-Amz-Date").and_then(|d| d.parse::<i64>().ok()),
        param(&query, "X-Amz-Expires").and_then(|e| e.parse::<u64>().ok()),
        param(&query, "X-Amz-Signature"),
    ) else {
        return answer(StatusCode::FORBIDDEN, "AccessDenied");
    };
    if signature(req.method().as_str(), &path, date, expires) != sig {
        return answer(StatusCode::FORBIDDEN, "SignatureDoesNotMatch");
    }
    let clock = now() + s.clock_offset.load(Ordering::SeqCst);
    let refused = s
        .refuse_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if refused || clock > date + expires as i64 {
        return answer(StatusCode::FORBIDDEN, "AccessDenied");
    }
    let content = {
        let files = s.files.lock().unwrap();
        files
            .get(&path)
            .or_else(|| files.get(&crate::upstream::percent_decode(&path)))
            .cloned()
    };
    let Some((content, version)) = content else {
        return answer(StatusCode::NOT_FOUND, "NoSuchKey");
    };
    let data: Bytes = match content {
        crate::upstream::Content::Bytes(b) => b,
        crate::upstream::Content::File(p) => match tokio::fs::read(&p).await {
            Ok(d) => d.into(),
            Err(_) => return answer(StatusCode::NOT_FOUND, "NoSuchKey"),
        },
        _ => return answer(StatusCode::NOT_IMPLEMENTED, "NotImplemented"),
    };
    // The store's own validators: not the upstream's.
    let etag = format!("\"storage-{version}\"");
    let modified = crate::upstream::last_modified(version);
    let not_modified = match req.headers().get(header::IF_NONE_MATCH) {
        Some(v) => v.as_bytes() == etag.as_bytes(),
        None => req
            .headers()
            .get(header::IF_MODIFIED_SINCE)
            .is_some_and(|v| v.as_bytes() == modified.as_bytes()),
    };
    let builder = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::LAST_MODIFIED, &modified)
        .header("x-amz-request-id", "STANDIN");
    if not_modified {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(full(""))
            .unwrap();
    }
    let head = req.method() == http::Method::HEAD;
    let if_range_ok = req
        .headers()
        .get(header::IF_RANGE)
        .is_none_or(|v| v.as_bytes() == etag.as_bytes());
    if let Some((start, end)) = if_range_ok
        .then(|| crate::upstream::range_of(req.headers(), data.len() as u64))
        .flatten()
    {
        let part = data.slice(start as usize..=end as usize);
        return builder
            .status(StatusCode::PARTIAL_CONTENT)
            .header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{end}/{}", data.len()),
            )
            .header(header::CONTENT_LENGTH, part.len())
            .body(if head { full("") } else { full(part) })
            .unwrap();
    }
    builder
        .header(header::CONTENT_LENGTH, data.len())
        .body(if head { full("") } else { full(data) })
        .unwrap()
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}
