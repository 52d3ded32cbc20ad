//! The forwarding core: bytes, headers and paths pass through unchanged,
//! and the upstream sees the configured credentials on every request.

use bytes::Bytes;
use e2e::client::{self, get, get_hashed, send};
use e2e::upstream::{Content, Versions};
use e2e::{basic_header, Setup};
use std::time::Duration;

#[tokio::test]
async fn small_file_is_identical_and_carries_the_credentials() {
    let s = Setup::start().await;
    let data = Bytes::from_static(b"Package: demo\nVersion: 1.0\n");
    s.upstream.put(
        "/pulp/content/debian/dists/stable/Release",
        Content::Bytes(data.clone()),
    );
    let got = get(s.proxy.addr, "/pulp/content/debian/dists/stable/Release").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, data);
    assert_eq!(got.headers["content-length"], data.len().to_string());
    let reqs = s.upstream.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].header("authorization"), vec![basic_header()]);
    assert_eq!(
        reqs[0].header("host"),
        vec![format!("127.0.0.1:{}", s.upstream.addr.port())]
    );
    s.saw(&got);
    s.assert_no_leaks();
}

#[tokio::test]
async fn large_file_streams_intact() {
    let s = Setup::start().await;
    let len = 64 * 1024 * 1024 + 13;
    s.upstream
        .put("/pulp/content/big.rpm", Content::Pattern(len));
    let (status, n, digest) = get_hashed(s.proxy.addr, "/pulp/content/big.rpm")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(n, len);
    assert_eq!(digest, client::pattern_sha256(len));
    // Streaming, not buffering: the proxy's peak memory stays far below the
    // size of the file it passed on.
    let peak_kib = s.proxy.peak_rss_kib();
    assert!(
        peak_kib < 40 * 1024,
        "peak RSS {peak_kib} KiB while streaming 64 MiB"
    );
    s.assert_no_leaks();
}

#[tokio::test]
async fn head_range_and_conditional_requests_pass_through() {
    let s = Setup::start().await;
    let data = Bytes::from_static(b"0123456789abcdef");
    s.upstream.put("/pulp/content/f", Content::Bytes(data));

    let head = send(s.proxy.addr, "HEAD", "/pulp/content/f", &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-length"], "16");
    assert!(head.body.is_empty());

    let part = send(
        s.proxy.addr,
        "GET",
        "/pulp/content/f",
        &[("range", "bytes=2-5")],
    )
    .await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, "2345");
    assert_eq!(part.headers["content-range"], "bytes 2-5/16");

    let cached = send(
        s.proxy.addr,
        "GET",
        "/pulp/content/f",
        &[("if-none-match", "\"v1\"")],
    )
    .await;
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());

    let reqs = s.upstream.requests();
    assert_eq!(reqs[0].method, "HEAD");
    assert_eq!(reqs[1].header("range"), vec!["bytes=2-5"]);
    assert_eq!(reqs[2].header("if-none-match"), vec!["\"v1\""]);
    assert!(reqs
        .iter()
        .all(|r| r.header("authorization") == vec![basic_header()]));
    for g in [&head, &part, &cached] {
        s.saw(g);
    }
    s.assert_no_leaks();
}

#[tokio::test]
async fn query_and_percent_encoded_names_are_preserved() {
    let s = Setup::start().await;
    let target = "/pulp/content/el9/Packages/lib%2Bfoo%20bar-1.0.rpm?x=1&y=%2F%3D";
    s.upstream.put(
        "/pulp/content/el9/Packages/lib%2Bfoo%20bar-1.0.rpm",
        Content::Bytes("ok".into()),
    );
    let got = get(s.proxy.addr, target).await;
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(s.upstream.requests()[0].target, target);
    s.assert_no_leaks();
}

#[tokio::test]
async fn upstream_path_prefix_is_prepended() {
    for prefix in ["/mirror", "/mirror/"] {
        let s = Setup::start_with(Versions::Both, prefix, |_| {}).await;
        s.upstream
            .put("/mirror/pulp/content/a", Content::Bytes("a".into()));
        let got = get(s.proxy.addr, "/pulp/content/a?q").await;
        assert_eq!(got.status, 200);
        assert_eq!(s.upstream.requests()[0].target, "/mirror/pulp/content/a?q");
        s.assert_no_leaks();
    }
}

#[tokio::test]
async fn client_credentials_never_reach_the_upstream() {
    let s = Setup::start().await;
    s.upstream
        .put("/pulp/content/a", Content::Bytes("a".into()));
    let got = send(
        s.proxy.addr,
        "GET",
        "/pulp/content/a",
        &[
            ("authorization", "Basic Y2xpZW50OmNsaWVudA=="),
            ("proxy-authorization", "Basic eDp5"),
            ("cookie", "sessionid=abc"),
        ],
    )
    .await;
    assert_eq!(got.status, 200);
    let r = &s.upstream.requests()[0];
    assert_eq!(r.header("authorization"), vec![basic_header()]);
    assert!(r.header("proxy-authorization").is_empty());
    assert!(r.header("cookie").is_empty());
    s.assert_no_leaks();
}

#[tokio::test]
async fn keep_alive_connections_are_pooled() {
    let s = Setup::start().await;
    s.upstream
        .put("/pulp/content/a", Content::Bytes("a".into()));
    for _ in 0..20 {
        assert_eq!(get(s.proxy.addr, "/pulp/content/a").await.status, 200);
    }
    assert_eq!(s.upstream.requests().len(), 20);
    assert!(
        s.upstream.handshakes() <= 2,
        "{} handshakes for 20 requests",
        s.upstream.handshakes()
    );
    s.assert_no_leaks();
}

#[tokio::test]
async fn access_log_has_one_line_per_request() {
    let s = Setup::start().await;
    s.upstream
        .put("/pulp/content/a", Content::Bytes("abcd".into()));
    get(s.proxy.addr, "/pulp/content/a").await;
    get(s.proxy.addr, "/pulp/content/a").await;
    get(s.proxy.addr, "/pulp/api/v3/users/").await;
    // The line for a forwarded request is written when its body is done.
    let log = e2e::wait_for(Duration::from_secs(10), "three access lines", || async {
        let log = s.proxy.log_text();
        (access_lines(&log).count() >= 3).then_some(log)
    })
    .await;
    let lines: Vec<&str> = access_lines(&log).collect();
    assert_eq!(
        lines.len(),
        3,
        "one line per request:\n{}",
        lines.join("\n")
    );
    let ok: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains(" request ") || l.ends_with(" request"))
        .collect();
    assert_eq!(ok.len(), 2, "{log}");
    assert!(
        ok.iter().all(|l| l.contains("path=/pulp/content/a")),
        "{log}"
    );
    let ok = ok[0];
    for field in [
        "method=GET",
        "status=200",
        "bytes=4",
        "duration_ms=",
        "upstream_ms=",
        "peer=127.0.0.1:",
    ] {
        assert!(ok.contains(field), "{field} missing: {ok}");
    }
    let refused: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("refused"))
        .collect();
    assert_eq!(refused.len(), 1, "{log}");
    assert!(refused[0].contains("status=403"), "{log}");
    s.assert_no_leaks();
}

/// The access-log lines of a text log.
fn access_lines(log: &str) -> impl Iterator<Item = &str> {
    log.lines().filter(|l| l.contains(" access: "))
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_in_flight_transfers_finish() {
    let mut s = Setup::start().await;
    let len = 4 * 1024 * 1024;
    s.upstream.put(
        "/pulp/content/slow",
        Content::Slow {
            len,
            chunks: 8,
            delay: Duration::from_millis(150),
        },
    );
    let addr = s.proxy.addr;
    let transfer = tokio::spawn(async move { get_hashed(addr, "/pulp/content/slow").await });
    // In flight once the upstream has the request.
    e2e::wait_for(
        Duration::from_secs(10),
        "the slow request upstream",
        || async { (s.upstream.count("/pulp/content/slow") == 1).then_some(()) },
    )
    .await;
    s.proxy.signal("TERM");
    let (status, n, digest) = transfer.await.unwrap().unwrap();
    assert_eq!((status.as_u16(), n), (200, len));
    assert_eq!(digest, client::pattern_sha256(len));
    let exit = tokio::task::block_in_place(|| s.proxy.wait(Duration::from_secs(10)));
    assert_eq!(
        exit.and_then(|e| e.code()),
        Some(0),
        "{}",
        s.proxy.log_text()
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after SIGTERM"
    );
    s.assert_no_leaks();
}

/// A connection the proxy accepted before SIGTERM gets its first request
/// answered even when the request comes after the signal: under socket
/// activation such a client only ever connected to the listening socket,
/// and a restart must not reset it.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_answers_the_first_request_of_a_connection_already_accepted() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = Setup::start().await;
    s.upstream
        .put("/pulp/content/small", Content::Bytes("small".into()));
    // A transfer held open keeps the proxy draining.
    let (open, gate) = tokio::sync::watch::channel(false);
    s.upstream
        .put("/pulp/content/held", Content::Gated { len: 1 << 20, gate });
    let addr = s.proxy.addr;
    let held = tokio::spawn(async move { get_hashed(addr, "/pulp/content/held").await });
    e2e::wait_for(
        Duration::from_secs(10),
        "the held request upstream",
        || async { (s.upstream.count("/pulp/content/held") == 1).then_some(()) },
    )
    .await;
    let mut fresh = tokio::net::TcpStream::connect(addr).await.unwrap();
    e2e::wait_for(Duration::from_secs(10), "the proxy accepting", || async {
        (e2e::accept_queue(addr) == 0).then_some(())
    })
    .await;
    s.proxy.signal("TERM");
    s.proxy.wait_for_log("shutting down").await;
    fresh
        .write_all(b"GET /pulp/content/small HTTP/1.1\r\nHost: proxy\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), fresh.read_to_end(&mut got)).await;
    assert!(matches!(read, Ok(Ok(_))), "{read:?}");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(text.ends_with("small"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    open.send(true).unwrap();
    let (status, n, _) = held.await.unwrap().unwrap();
    assert_eq!((status.as_u16(), n), (200, 1 << 20));
    let exit = tokio::task::block_in_place(|| s.proxy.wait(Duration::from_secs(10)));
    assert_eq!(
        exit.and_then(|e| e.code()),
        Some(0),
        "{}",
        s.proxy.log_text()
    );
    s.assert_no_leaks();
}

#[tokio::test]
async fn only_allow_listed_client_headers_reach_the_upstream() {
    let s = Setup::start().await;
    s.upstream
        .put("/pulp/content/f", Content::Bytes("0123456789".into()));
    let dropped = [
        ("x-http-method-override", "DELETE"),
        ("x-http-method", "DELETE"),
        ("x-method-override", "PUT"),
        ("x-original-url", "/pulp/api/v3/users/"),
        ("x-rewrite-url", "/pulp/api/v3/users/"),
        ("forwarded", "for=203.0.113.9;host=evil.example;proto=http"),
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-port", "80"),
        ("x-forwarded-prefix", "/evil"),
        ("x-real-ip", "203.0.113.9"),
        ("accept", "text/html"),
        ("accept-encoding", "gzip"),
        ("user-agent", "reflect-me"),
        ("x-reflected", "poison"),
    ];
    let mut headers = dropped.to_vec();
    headers.push(("range", "bytes=2-5"));
    let got = send(s.proxy.addr, "GET", "/pulp/content/f", &headers).await;
    assert_eq!(got.status, 206);
    assert_eq!(got.body, "2345");
    let r = &s.upstream.requests()[0];
    let mut names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    // The proxy sets no forwarding header of its own either.
    assert_eq!(names, ["authorization", "host", "range"], "{:?}", r.headers);
    assert_eq!(r.header("authorization"), vec![basic_header()]);
    s.saw(&got);
    s.assert_no_leaks();
}
