//! The connection to the one upstream origin: TLS trust, the pooled client,
//! connect timeouts, and turning transport failures into named causes.

use crate::error::{StartError, UpstreamError};
use bytes::Bytes;
use http::{HeaderValue, Uri};
use http_body_util::Empty;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use pulp_auth_config::{files, Scheme, UpstreamOrigin};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

/// Client connections idle longer than this are closed; Pulp's own
/// keep-alive is usually shorter, and a stale pooled connection costs a
/// retry.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// Bytes read from an upstream connection at a time.
const READ_BUF: usize = 64 * 1024;

/// The pooled HTTP/1.1 client to the upstream and what every request to it
/// needs.
#[derive(Clone)]
pub struct Upstream {
    client: Client<TimeoutConnector<HttpConnector>, Empty<Bytes>>,
    /// For redirects to object storage: the same trust anchors, timeouts
    /// and schemes, its own pool, and a resolver that refuses private
    /// addresses for hosts not listed in `upstream.redirect_hosts`.
    storage: Client<TimeoutConnector<HttpConnector<GuardedResolver>>, Empty<Bytes>>,
    /// Which redirects are followed.
    pub redirects: Arc<crate::redirect::Rules>,
    origin: UpstreamOrigin,
    base: String,
    host: HeaderValue,
    /// `upstream.readiness_path`.
    pub readiness_path: Option<String>,
    /// Time to the upstream's response head.
    pub response_timeout: Duration,
    /// Longest gap between two body chunks.
    pub body_timeout: Duration,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upstream({})", self.origin)
    }
}

impl Upstream {
    /// Builds the client. Certificates and host names are always verified;
    /// there is no switch to turn that off.
    pub fn new(
        config: &pulp_auth_config::Upstream,
        tls: rustls::ClientConfig,
    ) -> Result<Self, StartError> {
        let redirects = Arc::new(crate::redirect::Rules::new(config));
        let client = Self::client(config, tls.clone(), HttpConnector::new());
        let storage = Self::client(
            config,
            tls,
            HttpConnector::new_with_resolver(GuardedResolver(redirects.clone())),
        );
        let origin = config.origin.clone();
        let host =
            HeaderValue::from_str(&origin.host_header()).map_err(|_| StartError::UpstreamHost)?;
        Ok(Self {
            client,
            storage,
            redirects,
            base: format!("{}{}", origin.origin(), origin.prefix()),
            origin,
            host,
            readiness_path: config
                .readiness_path
                .as_ref()
                .map(|p| p.as_str().to_string()),
            response_timeout: config.response_timeout,
            body_timeout: config.body_timeout,
        })
    }

    fn client<R>(
        config: &pulp_auth_config::Upstream,
        tls: rustls::ClientConfig,
        mut http: HttpConnector<R>,
    ) -> Client<TimeoutConnector<HttpConnector<R>>, Empty<Bytes>>
    where
        R: tower_service::Service<Name> + Clone + Send + Sync + 'static,
        HttpConnector<R>: tower_service::Service<Uri>,
        HttpsConnector<HttpConnector<R>>: tower_service::Service<
                Uri,
                Response = MaybeHttpsStream<TokioIo<TcpStream>>,
                Error = BoxError,
                Future = Pin<
                    Box<
                        dyn Future<Output = Result<MaybeHttpsStream<TokioIo<TcpStream>>, BoxError>>
                            + Send,
                    >,
                >,
            > + Clone
            + Send
            + Sync
            + 'static,
    {
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
        let https = match config.origin.scheme() {
            Scheme::Https => https.https_only(),
            Scheme::Http => https.https_or_http(),
        }
        .enable_http1()
        .wrap_connector(http);
        let connector = TimeoutConnector {
            inner: https,
            timeout: config.connect_timeout,
        };
        Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            // A fixed read buffer: hyper's adaptive one grows towards
            // ~400 KiB per connection on large bodies, which multiplied by
            // the pool dominated the proxy's memory; 64 KiB keeps streaming
            // at full speed.
            .http1_read_buf_exact_size(READ_BUF)
            .set_host(false)
            .build(connector)
    }

    /// Sends one request to object storage (a redirect's target) and
    /// waits for the response head within `response_timeout`. Unlike
    /// [`Upstream::send`], a 401 or 403 is the storage's answer, for the
    /// redirect rules to judge; the request never holds the credentials.
    pub async fn send_storage(
        &self,
        req: http::Request<Empty<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, UpstreamError> {
        match tokio::time::timeout(self.response_timeout, self.storage.request(req)).await {
            Err(_) => Err(UpstreamError::ResponseTimeout),
            Ok(Err(e)) => Err(classify(&e)),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    /// The origin, for logs.
    pub fn origin(&self) -> &UpstreamOrigin {
        &self.origin
    }

    /// The `Host` header value to send.
    pub fn host_header(&self) -> HeaderValue {
        self.host.clone()
    }

    /// The absolute URI for a checked `path?query`: the upstream's prefix,
    /// then the path. Only ever called with a path that starts with `/`.
    pub fn uri_for(&self, path_and_query: &str) -> Result<Uri, UpstreamError> {
        format!("{}{}", self.base, path_and_query)
            .parse()
            .map_err(|e: http::uri::InvalidUri| UpstreamError::Other(e.to_string()))
    }

    /// Sends one request and waits for the response head, within
    /// `response_timeout`. A 401 or 403 becomes an error ([`refusal`]),
    /// for forwarded requests and the readiness probe alike; its
    /// `WWW-Authenticate` and body stay here, so a client is never invited
    /// to supply credentials of its own.
    pub async fn send(
        &self,
        req: http::Request<Empty<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, UpstreamError> {
        match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
            Err(_) => Err(UpstreamError::ResponseTimeout),
            Ok(Err(e)) => Err(classify(&e)),
            Ok(Ok(resp)) => match refusal(&resp) {
                Some(e) => Err(e),
                None => Ok(resp),
            },
        }
    }
}

/// What a 401 or 403 from the upstream means. A 401, or a 403 with a
/// challenge or a reason about authentication, refuses the credentials:
/// Pulp answers no or wrong credentials with `403 Authentication
/// credentials were not provided.`, never 401. Any other 403 refuses the
/// path to a user the upstream knows (Pulp: `You do not have permission
/// to perform this action.` when the user lacks the content guard's
/// role), so it is not reported as a credential problem.
fn refusal<B>(resp: &http::Response<B>) -> Option<UpstreamError> {
    use http::StatusCode as S;
    match resp.status() {
        S::UNAUTHORIZED => Some(UpstreamError::CredentialsRefused(S::UNAUTHORIZED)),
        S::FORBIDDEN if about_authentication(resp) => {
            Some(UpstreamError::CredentialsRefused(S::FORBIDDEN))
        }
        S::FORBIDDEN => Some(UpstreamError::Forbidden),
        _ => None,
    }
}

fn about_authentication<B>(resp: &http::Response<B>) -> bool {
    if resp.headers().contains_key(http::header::WWW_AUTHENTICATE) {
        return true;
    }
    // hyper keeps the status line's reason only when it is not the
    // canonical "Forbidden".
    resp.extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .is_some_and(|r| {
            let reason = r.as_bytes().to_ascii_lowercase();
            [&b"credentials"[..], b"authenticat", b"password"]
                .iter()
                .any(|word| reason.windows(word.len()).any(|w| w == *word))
        })
}

/// A CA bundle of every public root is about 200 KiB.
const MAX_CA_FILE_BYTES: u64 = 4 << 20;

/// The rustls configuration: the system trust store plus `ca_file`, TLS 1.2
/// and 1.3, SNI on (rustls' default), ALPN set by the connector.
pub fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, StartError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let ca_err = |reason: String| StartError::CaFile {
            path: path.to_path_buf(),
            reason,
        };
        let pem =
            files::read_protected(path, MAX_CA_FILE_BYTES).map_err(StartError::CaFileUnsafe)?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| ca_err(format!("not valid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(ca_err("holds no CERTIFICATE block".into()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| ca_err(format!("certificate not usable as a trust anchor: {e}")))?;
        }
    }
    if roots.is_empty() {
        return Err(StartError::NoTrustAnchors);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Bounds TCP connect plus the TLS handshake; `HttpConnector`'s own timeout
/// covers only TCP.
#[derive(Clone)]
struct TimeoutConnector<H> {
    inner: HttpsConnector<H>,
    timeout: Duration,
}

/// Resolves storage host names, and refuses the lookup when a name not
/// listed in `upstream.redirect_hosts` has a loopback, link-local or
/// private address: the check and the connect use the same answer, so a
/// name cannot resolve public for the check and private for the connect.
/// (IP-literal hosts never reach a resolver; `redirect` checks those.)
#[derive(Clone)]
struct GuardedResolver(Arc<crate::redirect::Rules>);

/// A storage name that resolved to an address the proxy does not reach.
#[derive(Debug)]
pub struct PrivateAddress;

impl std::fmt::Display for PrivateAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("resolves to a loopback, link-local or private address")
    }
}

impl std::error::Error for PrivateAddress {}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<std::net::SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let listed = self.0.listed(name.as_str());
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            if !listed && addrs.iter().any(|a| !crate::redirect::public(a.ip())) {
                return Err(Box::new(PrivateAddress) as BoxError);
            }
            Ok(addrs.into_iter())
        })
    }
}

/// Marks a connect that ran out of time, so `classify` can name it.
#[derive(Debug)]
struct ConnectTimedOut;

impl std::fmt::Display for ConnectTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connect timed out")
    }
}

impl std::error::Error for ConnectTimedOut {}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<H> tower_service::Service<Uri> for TimeoutConnector<H>
where
    HttpsConnector<H>: tower_service::Service<
        Uri,
        Response = MaybeHttpsStream<TokioIo<TcpStream>>,
        Error = BoxError,
        Future = Pin<
            Box<dyn Future<Output = Result<MaybeHttpsStream<TokioIo<TcpStream>>, BoxError>> + Send>,
        >,
    >,
{
    type Response = MaybeHttpsStream<TokioIo<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(r) => r,
                Err(_) => Err(Box::new(ConnectTimedOut) as BoxError),
            }
        })
    }
}

/// Names the cause of a client error. hyper's `Display` shows only the top
/// level, and rustls errors arrive wrapped in one or two `io::Error`s,
/// whose `source()` skips the wrapped error itself; so every error in the
/// chain is opened with `get_ref` as well.
fn classify(err: &hyper_util::client::legacy::Error) -> UpstreamError {
    let text = crate::error::chain(err);
    for e in crate::error::causes(err) {
        if e.is::<ConnectTimedOut>() {
            return UpstreamError::ConnectTimeout;
        }
        if e.is::<PrivateAddress>() {
            return UpstreamError::StorageHost {
                host: String::new(),
                why: "its name resolves to a loopback, link-local or private address; list it in upstream.redirect_hosts if the proxy should reach it",
            };
        }
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return match tls {
                rustls::Error::InvalidCertificate(_) => UpstreamError::Certificate(tls.to_string()),
                _ => UpstreamError::Tls(tls.to_string()),
            };
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return UpstreamError::Refused(text),
                std::io::ErrorKind::TimedOut => return UpstreamError::ConnectTimeout,
                _ => {}
            }
        }
    }
    if text.contains("dns error") {
        return UpstreamError::Dns(text);
    }
    UpstreamError::Other(text)
}
