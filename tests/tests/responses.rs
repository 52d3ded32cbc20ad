//! Promise 6 for what the upstream sends back: only framings the proxy can
//! forward faithfully reach a client (anything else is a 502 that names
//! the cause), and the proxy's own credential never comes back out, even
//! from an upstream that echoes request headers.
//!
//! The upstream here is the hand-framing stand-in. In the leak tests it
//! sends the credential on purpose; only what the proxy hands the client
//! (remembered with `saw`) and the proxy's log are scanned, which is the
//! promise.

use bytes::Bytes;
use e2e::pki::TestCa;
use e2e::upstream::{raw_header, Framer, RawUpstream, Versions};
use e2e::{cache_section, count_responses, first_status, leak, Setup};
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

const RPM: &str = "/pulp/content/rocky/Packages/h/hello-2.12-1.el9.x86_64.rpm";

/// A proxy in front of a [`RawUpstream`] answering with `framer`, with
/// `edit` applied to its config.
async fn behind(
    framer: Framer,
    edit: impl FnOnce(&mut e2e::proxy::ConfigFile),
) -> (Setup, RawUpstream, tempfile::TempDir) {
    let ca = TestCa::new();
    let raw = RawUpstream::start(ca.leaf(), framer).await;
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("raw-ca.pem");
    ca.write_pem(&pem);
    let url = raw.url();
    let s = Setup::start_with(Versions::Both, "", move |c| {
        c.set("upstream", "url", url)
            .set("upstream", "ca_file", pem.to_str().unwrap());
        edit(c);
    })
    .await;
    (s, raw, dir)
}

/// One fixed answer, whatever the request.
fn fixed(pieces: &'static [&'static [u8]]) -> Framer {
    Arc::new(move |_| pieces.iter().map(|p| p.to_vec()).collect())
}

/// A GET through the proxy read as far as it goes: status, headers, the
/// body bytes that arrived, and whether the transfer broke.
struct Read {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
    broken: bool,
}

async fn read(s: &Setup, path: &str) -> Read {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri = format!("http://{}{path}", s.proxy.addr);
    let resp = client
        .request(http::Request::get(uri).body(Empty::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let mut body = resp.into_body();
    let mut got = Vec::new();
    let mut broken = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => got.extend_from_slice(f.data_ref().map_or(&[][..], |d| d)),
            Err(_) => {
                broken = true;
                break;
            }
        }
    }
    let mut seen = s.seen.lock().unwrap();
    seen.extend_from_slice(format!("{headers:?}").as_bytes());
    seen.extend_from_slice(&got);
    Read {
        status,
        headers,
        body: got,
        broken,
    }
}

#[tokio::test]
async fn a_length_beside_transfer_encoding_is_dropped() {
    let (s, _raw, _dir) = behind(
        fixed(&[
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        ]),
        |_| {},
    )
    .await;
    let got = read(&s, "/pulp/content/a").await;
    assert_eq!(got.status, 200);
    assert!(!got.broken);
    assert_eq!(got.body, b"hello world");
    assert_ne!(
        got.headers.get("content-length").map(|v| v.as_bytes()),
        Some(&b"3"[..]),
        "the stale length was forwarded"
    );
    s.assert_no_leaks();
}

/// Two pipelined GETs on one client connection, and the raw answer.
async fn two_on_one_connection(s: &Setup) -> Vec<u8> {
    let req = "GET /pulp/content/a HTTP/1.1\r\nHost: pulp\r\n\r\n";
    e2e::client::raw(
        s.proxy.addr,
        format!("{req}{req}").as_bytes(),
        Duration::from_secs(3),
    )
    .await
}

#[tokio::test]
async fn framings_that_cannot_be_forwarded_are_502_naming_the_cause() {
    let cases: [(&'static [&'static [u8]], &str); 5] = [
        (
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"],
            "transfer coding other than `chunked`",
        ),
        (
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nhello"],
            "transfer coding other than `chunked`",
        ),
        (
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nhello"],
            "transfer coding other than `chunked`",
        ),
        (
            &[b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nnot http"],
            "answered 101",
        ),
        (
            &[b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close"],
            "neither Content-Length nor chunked",
        ),
    ];
    for (pieces, cause) in cases {
        let (s, raw, _dir) = behind(fixed(pieces), |_| {}).await;
        let got = two_on_one_connection(&s).await;
        assert_eq!(first_status(&got), Some(502), "{cause}: {got:?}");
        // The connection stayed usable: the second request got its answer.
        assert_eq!(count_responses(&got), 2, "{cause}: {got:?}");
        let text = String::from_utf8_lossy(&got);
        assert!(!text.contains("hello") && !text.contains("not http"));
        assert!(!text.contains("until the close"));
        s.proxy.wait_for_log(cause).await;
        let log = s.proxy.log_text();
        assert!(
            log.lines()
                .any(|l| l.contains("kind=framing") && l.contains(cause)),
            "{cause}:\n{log}"
        );
        assert!(raw.answered.load(Ordering::SeqCst) >= 1);
        s.seen.lock().unwrap().extend_from_slice(&got);
        s.assert_no_leaks();
    }
}

/// Echoes the request's `Authorization` into a response header and into a
/// chunked body, split across two chunks at its middle, or as the body's
/// last bytes when `at_end`.
fn echo(at_end: bool) -> Framer {
    Arc::new(move |head| {
        let auth = raw_header(head, "authorization")
            .unwrap_or("none")
            .to_string();
        let (a, b) = auth.split_at(auth.len() / 2);
        let chunk = |s: &str| format!("{:x}\r\n{s}\r\n", s.len()).into_bytes();
        let mut pieces = vec![
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nETag: \"e1\"\r\nX-Echo-Authorization: {auth}\r\nSet-Cookie: sessionid=shared\r\nX-Kept: yes\r\n\r\n"
            )
            .into_bytes(),
            chunk(&"clean bytes before ".repeat(100)),
        ];
        if at_end {
            pieces.push(chunk(&auth));
        } else {
            pieces.push(chunk(&format!("you sent: {a}")));
            pieces.push(chunk(&format!("{b} and more")));
        }
        pieces.push(b"0\r\n\r\n".to_vec());
        pieces
    })
}

fn assert_scrubbed(got: &Read) {
    assert_eq!(got.status, 200);
    assert!(got.broken, "the body was not cut");
    assert!(!got.headers.contains_key("x-echo-authorization"));
    assert!(!got.headers.contains_key("set-cookie"));
    assert_eq!(got.headers["x-kept"], "yes");
    // What came is a prefix of the clean part, nothing of the credential.
    let clean = "clean bytes before ".repeat(100);
    assert!(
        clean.as_bytes().starts_with(&got.body),
        "{} bytes",
        got.body.len()
    );
    leak::assert_clean("the client's body", &got.body);
}

#[tokio::test]
async fn an_echoed_credential_never_reaches_the_client() {
    for at_end in [false, true] {
        let (s, _raw, _dir) = behind(echo(at_end), |_| {}).await;
        let got = read(&s, "/pulp/content/echo").await;
        assert_scrubbed(&got);
        let log = s.proxy.wait_for_log("cut a response body").await;
        assert!(log.contains("form=\"base64(user:password)\""), "{log}");
        assert!(
            log.lines().any(|l| l.contains("dropped a response header")
                && l.contains("header=\"x-echo-authorization\"")),
            "{log}"
        );
        s.assert_no_leaks();
    }
}

#[tokio::test]
async fn a_cut_body_is_never_cached() {
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("c");
    let (s, raw, _dir) = behind(echo(false), cache_section(&dir, "10M")).await;
    for _ in 0..2 {
        assert_scrubbed(&read(&s, RPM).await);
    }
    // Both went to the upstream: nothing was stored for the second.
    let answered = raw.answered.load(Ordering::SeqCst);
    assert!(answered >= 2, "{answered}");
    s.proxy.wait_for_log_count("cut a response body", 2).await;
    for entry in walk(&dir) {
        leak::assert_clean("a cache file", &std::fs::read(&entry).unwrap());
    }
    s.assert_no_leaks();
}

#[tokio::test]
async fn a_clean_body_through_the_cache_is_stored_and_served_unchanged() {
    // The control for the test above: the same upstream, nothing echoed.
    let framer: Framer = Arc::new(|_| {
        vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nETag: \"e1\"\r\n\r\nhello".to_vec(),
            b" world".to_vec(),
        ]
    });
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("c");
    let (s, raw, _dir) = behind(framer, cache_section(&dir, "10M")).await;
    let first = read(&s, RPM).await;
    assert_eq!(
        (first.status, first.body.as_slice()),
        (StatusCode::OK, &b"hello world"[..])
    );
    let before = raw.answered.load(Ordering::SeqCst);
    let second = read(&s, RPM).await;
    assert_eq!(second.body, b"hello world");
    assert!(!second.broken);
    assert_eq!(
        raw.answered.load(Ordering::SeqCst),
        before,
        "not served from the cache"
    );
    s.assert_no_leaks();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
