//! A recording HTTPS stand-in for Pulp. It requires the exact Basic header,
//! stores every request it receives (method, target as received, headers)
//! and counts TLS handshakes, so a test can prove what did and did not
//! reach the upstream.

use crate::pki::ServerCert;
use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

type Body = BoxBody<Bytes, std::io::Error>;

/// What a path serves.
#[derive(Clone)]
pub enum Content {
    /// These bytes (Range and conditional requests supported).
    Bytes(Bytes),
    /// `len` bytes of [`pattern`], streamed in 64 KiB chunks.
    Pattern(u64),
    /// Announces `len` bytes, sends `sent`, then stalls forever.
    Stall {
        /// Announced length.
        len: u64,
        /// Bytes sent before the stall.
        sent: u64,
    },
    /// Announces `len` bytes, sends `sent`, then drops the connection.
    Truncate {
        /// Announced length.
        len: u64,
        /// Bytes sent before the drop.
        sent: u64,
    },
    /// `len` bytes sent in `chunks` pieces with `delay` between them.
    Slow {
        /// Total length.
        len: u64,
        /// Number of pieces.
        chunks: u64,
        /// Pause between pieces.
        delay: Duration,
    },
    /// `len` bytes of [`pattern`]: the first 64 KiB at once, the rest once
    /// the test sends `true` on the gate's channel.
    Gated {
        /// Total length.
        len: u64,
        /// Opens the gate.
        gate: tokio::sync::watch::Receiver<bool>,
    },
    /// Like [`Content::Gated`], but once the gate opens the connection
    /// drops instead of sending the rest.
    GatedCut {
        /// Announced length.
        len: u64,
        /// Opens the gate.
        gate: tokio::sync::watch::Receiver<bool>,
    },
    /// `len` bytes of [`pattern`], chunked (no `Content-Length`), as Pulp
    /// streams on-demand content: the first 64 KiB at once, the rest once
    /// the gate (if any) opens; `cut` drops the connection there instead.
    Chunked {
        /// Total length.
        len: u64,
        /// Whether the body breaks off after the first 64 KiB.
        cut: bool,
        /// Holds the rest back until the test sends `true`.
        gate: Option<tokio::sync::watch::Receiver<bool>>,
    },
    /// A response with this status and `Location`.
    Redirect(StatusCode, String),
    /// Waits this long before the response head.
    Delay(Duration),
    /// A file on disk, streamed.
    File(std::path::PathBuf),
    /// What Pulp answers for a path whose content guard does not let the
    /// (authenticated) user download: 403 with the reason in the status
    /// line and the body.
    Forbidden,
}

/// Pulp's reasons, in the status line of its 403s (aiohttp's
/// `HTTPForbidden(reason=...)`), from Django REST framework's messages.
pub const PULP_NOT_AUTHENTICATED: &str = "Authentication credentials were not provided.";
/// See [`PULP_NOT_AUTHENTICATED`].
pub const PULP_NO_PERMISSION: &str = "You do not have permission to perform this action.";

fn pulp_forbidden(reason: &'static str) -> Response<Body> {
    let mut resp = Response::builder()
        .status(StatusCode::FORBIDDEN)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(format!("403: {reason}")))
        .unwrap();
    resp.extensions_mut()
        .insert(hyper::ext::ReasonPhrase::from_static(reason.as_bytes()));
    resp
}

/// The byte at offset `i` of a pattern body.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The method.
    pub method: String,
    /// The request target (path and query) byte for byte.
    pub target: String,
    /// Every header, in order, repeated names kept.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Recorded {
    /// The values of one header.
    pub fn header(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }
}

/// TLS versions the upstream offers.
#[derive(Clone, Copy, Default)]
pub enum Versions {
    /// 1.2 and 1.3.
    #[default]
    Both,
    /// 1.3 only.
    Tls13,
    /// 1.2 only.
    Tls12,
}

/// Path -> content and its version (1 for the first `put`, then +1);
/// shared with the storage in redirect mode.
pub(crate) type Files = Arc<Mutex<HashMap<String, (Content, u64)>>>;

#[derive(Default)]
struct Shared {
    body_bytes: std::sync::atomic::AtomicU64,
    files: Files,
    /// Set in redirect mode: every content request is a 302 to it.
    storage: Mutex<Option<Arc<crate::storage::StorageShared>>>,
    requests: Mutex<Vec<Recorded>>,
    handshakes_ok: AtomicUsize,
    handshakes_failed: AtomicUsize,
    open_connections: AtomicUsize,
    refuse_credentials: AtomicBool,
    /// Refusals look like Pulp's (403, no challenge) instead of 401.
    refuse_like_pulp: AtomicBool,
    expected_auth: Mutex<String>,
    /// Added before every response head (see [`Upstream::set_link`]).
    latency: Mutex<Duration>,
    /// Bytes per second for served files; 0 is unlimited.
    rate: std::sync::atomic::AtomicU64,
}

/// The TLS side of both stand-ins: `cert`, `versions`, HTTP/1.1 by ALPN.
pub(crate) fn acceptor(cert: ServerCert, versions: Versions) -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = match versions {
        Versions::Both => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Versions::Tls13 => &[&rustls::version::TLS13],
        Versions::Tls12 => &[&rustls::version::TLS12],
    };
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(cert.chain, cert.key)
        .unwrap();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(tls))
}

/// A running upstream; stops when dropped.
pub struct Upstream {
    /// Its address.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Starts on `127.0.0.1:0` with `cert`, offering `versions`.
    pub async fn start(cert: ServerCert, versions: Versions) -> Upstream {
        Self::start_on("127.0.0.1:0".parse().unwrap(), cert, versions).await
    }

    /// Starts on `addr` with `cert`, offering `versions`.
    pub async fn start_on(addr: SocketAddr, cert: ServerCert, versions: Versions) -> Upstream {
        let listener = TcpListener::bind(addr).await.unwrap();
        Self::serve_on(listener, cert, versions)
    }

    /// Serves on `listener`, made elsewhere (in another network namespace).
    pub fn start_on_listener(
        listener: std::net::TcpListener,
        cert: ServerCert,
        versions: Versions,
    ) -> Upstream {
        listener.set_nonblocking(true).unwrap();
        Self::serve_on(TcpListener::from_std(listener).unwrap(), cert, versions)
    }

    fn serve_on(listener: TcpListener, cert: ServerCert, versions: Versions) -> Upstream {
        let acceptor = acceptor(cert, versions);
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        *shared.expected_auth.lock().unwrap() = crate::basic_header();
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let s = s.clone();
                s.open_connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let _open = OpenConnection(s.clone());
                    let tls = match acceptor.accept(tcp).await {
                        Ok(t) => t,
                        Err(_) => {
                            s.handshakes_failed.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    };
                    s.handshakes_ok.fetch_add(1, Ordering::SeqCst);
                    let svc = service_fn(move |req| {
                        let s = s.clone();
                        async move {
                            let resp = serve(&s, req).await;
                            let counted = counting(resp, move |n| {
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
        Upstream { addr, shared, task }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// Serves `content` at `path` (the path as the upstream receives it).
    /// Each `put` to a path gives it a new `ETag` (`"v1"`, `"v2"`, ...) and
    /// `Last-Modified`.
    pub fn put(&self, path: &str, content: Content) {
        let mut files = self.shared.files.lock().unwrap();
        let version = files.get(path).map_or(1, |(_, v)| v + 1);
        files.insert(path.to_string(), (content, version));
    }

    /// Switches to object-storage mode, as a Pulp with
    /// `REDIRECT_TO_OBJECT_STORAGE`: from now on every content request the
    /// credentials pass is answered `302`, `Cache-Control: no-store`, the
    /// upstream's `ETag`, and a `Location` presigned for its method on the
    /// returned storage, which serves the same files. A matching
    /// `If-None-Match` still gets the upstream's own 304.
    pub async fn with_storage(&self, cert: ServerCert) -> crate::storage::Storage {
        let storage = crate::storage::Storage::start(cert, self.shared.files.clone()).await;
        *self.shared.storage.lock().unwrap() = Some(storage.shared.clone());
        storage
    }

    /// Emulates a remote link: `latency` before every response head, and
    /// files (see [`Content::File`]) sent at `bytes_per_sec` (0: as fast as
    /// loopback goes).
    pub fn set_link(&self, latency: Duration, bytes_per_sec: u64) {
        *self.shared.latency.lock().unwrap() = latency;
        self.shared.rate.store(bytes_per_sec, Ordering::SeqCst);
    }

    /// Stops serving `path` (404 from now on).
    pub fn remove(&self, path: &str) {
        self.shared.files.lock().unwrap().remove(path);
    }

    /// Requests received for `path` (exact target) so far.
    pub fn count(&self, target: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.target == target)
            .count()
    }

    /// Serves every file under `dir` at `url_prefix` + its relative path.
    pub fn serve_dir(&self, url_prefix: &str, dir: &std::path::Path) {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let rel = path
                        .strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    self.put(
                        &format!("{}/{rel}", url_prefix.trim_end_matches('/')),
                        Content::File(path),
                    );
                }
            }
        }
    }

    /// Response body bytes sent so far, over every connection.
    pub fn body_bytes(&self) -> u64 {
        self.shared.body_bytes.load(Ordering::SeqCst)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Completed TLS handshakes.
    pub fn handshakes(&self) -> usize {
        self.shared.handshakes_ok.load(Ordering::SeqCst)
    }

    /// Connections open now (from accept until the connection ends).
    pub fn open_connections(&self) -> usize {
        self.shared.open_connections.load(Ordering::SeqCst)
    }

    /// Failed TLS handshakes.
    pub fn failed_handshakes(&self) -> usize {
        self.shared.handshakes_failed.load(Ordering::SeqCst)
    }

    /// Answer 401 to everything (credentials revoked) while set.
    pub fn refuse_credentials(&self, on: bool) {
        self.shared.refuse_credentials.store(on, Ordering::SeqCst);
    }

    /// Refuse credentials as Pulp does, from now on: 403 with
    /// [`PULP_NOT_AUTHENTICATED`] and no `WWW-Authenticate`, instead of 401.
    pub fn refuse_like_pulp(&self) {
        self.shared.refuse_like_pulp.store(true, Ordering::SeqCst);
    }

    /// Accept only this password from now on (rotation).
    pub fn expect_password(&self, password: &str) {
        *self.shared.expected_auth.lock().unwrap() = crate::basic_header_of(password);
    }
}

async fn serve(s: &Shared, req: Request<Incoming>) -> Response<Body> {
    let latency = *s.latency.lock().unwrap();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    s.requests.lock().unwrap().push(Recorded {
        method: req.method().to_string(),
        target: target.clone(),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect(),
    });
    let auth_ok = !s.refuse_credentials.load(Ordering::SeqCst)
        && req.headers().get_all(header::AUTHORIZATION).iter().count() == 1
        && req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            == Some(s.expected_auth.lock().unwrap().as_bytes());
    if !auth_ok && s.refuse_like_pulp.load(Ordering::SeqCst) {
        return pulp_forbidden(PULP_NOT_AUTHENTICATED);
    }
    if !auth_ok {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::WWW_AUTHENTICATE, "Basic realm=\"pulp\"")
            .body(full("unauthorized\n"))
            .unwrap();
    }
    let path = req.uri().path().to_string();
    if path == "/pulp/api/v3/status/" || path.ends_with("/pulp/api/v3/status/") {
        return Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(full("{\"versions\":[]}"))
            .unwrap();
    }
    // Like any web server, look files up by the decoded path (apt sends
    // `+` as `%2B`).
    let content = {
        let files = s.files.lock().unwrap();
        files
            .get(&path)
            .or_else(|| files.get(&percent_decode(&path)))
            .cloned()
    };
    let Some((content, version)) = content else {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(full("not found\n"))
            .unwrap();
    };
    if matches!(content, Content::Forbidden) {
        return pulp_forbidden(PULP_NO_PERMISSION);
    }
    let etag = format!("\"v{version}\"");
    let modified = last_modified(version);
    if req
        .headers()
        .get(header::IF_NONE_MATCH)
        .map(|v| v.as_bytes())
        == Some(etag.as_bytes())
    {
        return Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .header(header::ETAG, etag)
            .header(header::LAST_MODIFIED, modified)
            .body(full(""))
            .unwrap();
    }
    let storage = s.storage.lock().unwrap().clone();
    if let Some(storage) = storage {
        // Pulp redirects to the stored object by its own path.
        let location = crate::storage::location(&storage, req.method().as_str(), &path);
        return Response::builder()
            .status(StatusCode::FOUND)
            .header(header::CACHE_CONTROL, "no-store")
            .header(header::ETAG, etag)
            .header(header::LOCATION, location)
            .header(header::CONTENT_LENGTH, 0)
            .body(full(""))
            .unwrap();
    }
    let head = req.method() == http::Method::HEAD;
    let builder = Response::builder()
        .header(header::ETAG, etag)
        .header(header::LAST_MODIFIED, modified);
    match content {
        Content::Bytes(b) => {
            if let Some((start, end)) = range(&req, b.len() as u64) {
                let part = b.slice(start as usize..=end as usize);
                return builder
                    .status(StatusCode::PARTIAL_CONTENT)
                    .header(
                        header::CONTENT_RANGE,
                        format!("bytes {start}-{end}/{}", b.len()),
                    )
                    .header(header::CONTENT_LENGTH, part.len())
                    .body(if head { full("") } else { full(part) })
                    .unwrap();
            }
            builder
                .header(header::CONTENT_LENGTH, b.len())
                .body(if head { full("") } else { full(b) })
                .unwrap()
        }
        Content::Pattern(len) => streamed(builder, Some(len), head, move |tx| async move {
            send_pattern(&tx, 0, len, Duration::ZERO, 64 * 1024).await;
        }),
        Content::Slow { len, chunks, delay } => {
            streamed(builder, Some(len), head, move |tx| async move {
                send_pattern(&tx, 0, len, delay, len.div_ceil(chunks.max(1)) as usize).await;
            })
        }
        Content::Gated { len, mut gate } => {
            streamed(builder, Some(len), head, move |tx| async move {
                let first = len.min(64 * 1024);
                send_pattern(&tx, 0, first, Duration::ZERO, 64 * 1024).await;
                if gate.wait_for(|open| *open).await.is_ok() {
                    send_pattern(&tx, first, len, Duration::ZERO, 64 * 1024).await;
                }
            })
        }
        Content::GatedCut { len, mut gate } => {
            streamed(builder, Some(len), head, move |tx| async move {
                send_pattern(&tx, 0, len.min(64 * 1024), Duration::ZERO, 64 * 1024).await;
                let _ = gate.wait_for(|open| *open).await;
                let _ = tx
                    .send(Err(std::io::Error::other("upstream dies mid-body")))
                    .await;
            })
        }
        Content::Stall { len, sent } => streamed(builder, Some(len), head, move |tx| async move {
            send_pattern(&tx, 0, sent, Duration::ZERO, 64 * 1024).await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        }),
        Content::Truncate { len, sent } => {
            streamed(builder, Some(len), head, move |tx| async move {
                send_pattern(&tx, 0, sent, Duration::ZERO, 64 * 1024).await;
                let _ = tx
                    .send(Err(std::io::Error::other("upstream dies mid-body")))
                    .await;
            })
        }
        Content::Chunked { len, cut, gate } => {
            streamed(builder, None, head, move |tx| async move {
                let first = len.min(64 * 1024);
                send_pattern(&tx, 0, first, Duration::ZERO, 64 * 1024).await;
                if let Some(mut gate) = gate {
                    let _ = gate.wait_for(|open| *open).await;
                }
                if cut {
                    let _ = tx
                        .send(Err(std::io::Error::other("upstream dies mid-body")))
                        .await;
                } else {
                    send_pattern(&tx, first, len, Duration::ZERO, 64 * 1024).await;
                }
            })
        }
        Content::Redirect(status, location) => builder
            .status(status)
            .header(header::LOCATION, location)
            .body(full(""))
            .unwrap(),
        Content::Delay(d) => {
            tokio::time::sleep(d).await;
            builder.body(full("late\n")).unwrap()
        }
        Content::File(path) => {
            let Ok(data) = tokio::fs::read(&path).await else {
                return Response::builder()
                    .status(StatusCode::NOT_FOUND)
                    .body(full("gone\n"))
                    .unwrap();
            };
            let rate = s.rate.load(Ordering::SeqCst);
            if rate > 0 {
                let data = Bytes::from(data);
                return streamed(
                    builder,
                    Some(data.len() as u64),
                    head,
                    move |tx| async move {
                        const PIECE: usize = 16 * 1024;
                        let pause = Duration::from_secs_f64(PIECE as f64 / rate as f64);
                        for at in (0..data.len()).step_by(PIECE) {
                            tokio::time::sleep(pause).await;
                            let piece = data.slice(at..(at + PIECE).min(data.len()));
                            if tx.send(Ok(piece)).await.is_err() {
                                return;
                            }
                        }
                    },
                );
            }
            builder
                .header(header::CONTENT_LENGTH, data.len())
                .body(if head { full("") } else { full(data) })
                .unwrap()
        }
        Content::Forbidden => unreachable!("answered before the validators"),
    }
}

struct OpenConnection(Arc<Shared>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `resp` with every body byte that leaves reported to `count`, whatever
/// the content.
pub(crate) fn counting(
    resp: Response<Body>,
    count: impl Fn(u64) + Send + Sync + 'static,
) -> Response<Body> {
    resp.map(|b| {
        b.map_frame(move |f| {
            if let Some(d) = f.data_ref() {
                count(d.len() as u64);
            }
            f
        })
        .boxed()
    })
}

/// A distinct, valid HTTP date per version.
pub(crate) fn last_modified(version: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    // Day `version` of January 1970 (the 1st was a Thursday).
    let day = version.clamp(1, 31);
    format!(
        "{}, {day:02} Jan 1970 00:00:00 GMT",
        DAYS[((day - 1) % 7) as usize]
    )
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

fn range(req: &Request<Incoming>, len: u64) -> Option<(u64, u64)> {
    range_of(req.headers(), len)
}

/// The one `bytes=a-b` or `bytes=a-` range in `headers`, if satisfiable.
pub(crate) fn range_of(headers: &http::HeaderMap, len: u64) -> Option<(u64, u64)> {
    let v = headers.get(header::RANGE)?.to_str().ok()?;
    let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
    let start: u64 = a.parse().ok()?;
    let end: u64 = if b.is_empty() {
        len - 1
    } else {
        b.parse().ok()?
    };
    (start <= end && end < len).then_some((start, end))
}

type Tx = mpsc::Sender<Result<Bytes, std::io::Error>>;

/// A body sent by `produce`, with `Content-Length` `len`, or chunked.
fn streamed<F, Fut>(
    builder: http::response::Builder,
    len: Option<u64>,
    head: bool,
    produce: F,
) -> Response<Body>
where
    F: FnOnce(Tx) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(4);
    if !head {
        tokio::spawn(produce(tx));
    }
    let builder = match len {
        Some(len) => builder.header(header::CONTENT_LENGTH, len),
        None => builder,
    };
    builder
        .body(if head {
            full("")
        } else {
            ChannelBody(rx).boxed()
        })
        .unwrap()
}

async fn send_pattern(tx: &Tx, from: u64, to: u64, delay: Duration, chunk: usize) {
    let mut at = from;
    while at < to {
        let n = (to - at).min(chunk as u64);
        let buf: Vec<u8> = (at..at + n).map(pattern_byte).collect();
        if tx.send(Ok(Bytes::from(buf))).await.is_err() {
            return;
        }
        at += n;
        if !delay.is_zero() && at < to {
            tokio::time::sleep(delay).await;
        }
    }
}

struct ChannelBody(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

/// `%XX` escapes decoded (invalid ones kept as they are).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Builds a hand-framed answer from the request head as received: the
/// pieces are written in order, each flushed on its own (so a test controls
/// where the proxy's reads split the body), then the connection closes.
pub type Framer = Arc<dyn Fn(&str) -> Vec<Vec<u8>> + Send + Sync>;

/// A TLS stand-in that answers every request with bytes framed by hand,
/// for responses hyper's server would never write (a `Content-Length`
/// beside `Transfer-Encoding`, codings other than chunked, a `101` to a
/// GET, a body delimited by the connection's close) and for echoing the
/// request's headers back. One request per connection.
pub struct RawUpstream {
    /// Its address.
    pub addr: SocketAddr,
    /// Requests received so far (each is answered).
    pub answered: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawUpstream {
    /// Starts on `127.0.0.1:0` with `cert`, answering with `framer`.
    pub async fn start(cert: ServerCert, framer: Framer) -> RawUpstream {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let acceptor = acceptor(cert, Versions::Both);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answered = Arc::new(AtomicUsize::new(0));
        let count = answered.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, framer, count) = (acceptor.clone(), framer.clone(), count.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    // Counted before the answer goes out, so a test that
                    // saw the proxy act on it sees the count too.
                    count.fetch_add(1, Ordering::SeqCst);
                    for piece in framer(&String::from_utf8_lossy(&head)) {
                        if tls.write_all(&piece).await.is_err() || tls.flush().await.is_err() {
                            return;
                        }
                    }
                    let _ = tls.shutdown().await;
                });
            }
        });
        RawUpstream {
            addr,
            answered,
            task,
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }
}

/// The value of header `name` in a raw request head, if present.
pub fn raw_header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}
