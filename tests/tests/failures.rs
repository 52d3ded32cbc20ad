//! Promise 6: a failing upstream gives a clear 5xx and a log line naming
//! the cause; never a hang, never a truncated body that looks complete.

use e2e::client::{get, get_hashed};
use e2e::proxy::ConfigFile;
use e2e::upstream::{Content, Versions};
use e2e::{metric, proxy_keys, upstream_keys, Setup};
use http::StatusCode;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Points `upstream.url` at `127.0.0.1:port`.
fn upstream_at(config: &mut ConfigFile, port: u16) {
    config.set("upstream", "url", format!("https://127.0.0.1:{port}"));
}

fn log_has(s: &Setup, needles: &[&str]) {
    let log = s.proxy.log_text();
    assert!(
        log.lines().any(|l| needles.iter().all(|n| l.contains(n))),
        "no log line with {needles:?}:\n{log}"
    );
}

#[tokio::test]
async fn refused_credentials_become_502_without_a_challenge() {
    let s = Setup::start().await;
    s.upstream
        .put("/pulp/content/a", Content::Bytes("a".into()));
    s.upstream.refuse_credentials(true);
    let got = get(s.proxy.addr, "/pulp/content/a").await;
    assert_eq!(got.status, 502);
    assert!(!got.headers.contains_key("www-authenticate"));
    assert!(String::from_utf8_lossy(&got.body).contains("refused the proxy's credentials"));
    log_has(
        &s,
        &["kind=credentials-refused", "401", "check upstream.username"],
    );
    s.saw(&got);
    s.upstream.refuse_credentials(false);
    assert_eq!(get(s.proxy.addr, "/pulp/content/a").await.status, 200);
    s.assert_no_leaks();
}

/// Pulp answers refused credentials and a path its user may not read both
/// with 403; the reason in the status line tells them apart, and so must
/// the client's answer, the log and the metrics.
#[tokio::test]
async fn a_403_for_refused_credentials_is_told_from_a_403_for_the_path() {
    let s = Setup::start().await;
    s.upstream.refuse_like_pulp();
    s.upstream
        .put("/pulp/content/ours/a", Content::Bytes("a".into()));
    s.upstream.put("/pulp/content/theirs/b", Content::Forbidden);

    let got = get(s.proxy.addr, "/pulp/content/theirs/b").await;
    assert_eq!(got.status, 403);
    assert!(
        String::from_utf8_lossy(&got.body).contains("does not let the proxy's user read this path"),
        "{got:?}"
    );
    log_has(&s, &["kind=forbidden", "status=403", "download role"]);
    s.saw(&got);
    // The proxy's answer, not Pulp's text: nothing from the upstream's
    // refusal reaches the client.
    assert!(!String::from_utf8_lossy(&got.body).contains("permission"));
    assert_eq!(get(s.proxy.addr, "/pulp/content/ours/a").await.status, 200);

    s.upstream.refuse_credentials(true);
    let got = get(s.proxy.addr, "/pulp/content/ours/a").await;
    assert_eq!(got.status, 502);
    assert!(!got.headers.contains_key("www-authenticate"));
    assert!(String::from_utf8_lossy(&got.body).contains("refused the proxy's credentials"));
    log_has(
        &s,
        &["kind=credentials-refused", "403", "check upstream.username"],
    );
    s.saw(&got);
    let metrics = get(s.proxy.addr, "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    for kind in ["forbidden", "credentials-refused"] {
        assert_eq!(
            metric(
                &text,
                &format!("pulp_auth_proxy_upstream_errors_total{{kind=\"{kind}\"}}")
            ),
            1.0,
            "{text}"
        );
    }
    s.assert_no_leaks();
}

#[tokio::test]
async fn connection_refused_is_502_fast() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = Setup::start_with(Versions::Both, "", |c| upstream_at(c, port)).await;
    let started = Instant::now();
    let got = get(s.proxy.addr, "/pulp/content/a").await;
    assert_eq!(got.status, 502);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    log_has(&s, &["kind=connect-refused", "refused the connection"]);
    s.assert_no_leaks();
}

#[tokio::test]
async fn silent_upstream_is_a_connect_timeout() {
    // Accepts TCP but never speaks TLS: the handshake must time out.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            held.push(c);
        }
    });
    let s = Setup::start_with(Versions::Both, "", |c| {
        c.set("upstream", "connect_timeout_secs", 1);
        upstream_at(c, port)
    })
    .await;
    let got = get(s.proxy.addr, "/pulp/content/a").await;
    assert_eq!(got.status, 504);
    log_has(&s, &["kind=connect-timeout"]);
    hold.abort();
    s.assert_no_leaks();
}

#[tokio::test]
async fn slow_response_head_is_504() {
    let s = Setup::start_with(
        Versions::Both,
        "",
        upstream_keys("response_timeout_secs = 1"),
    )
    .await;
    s.upstream
        .put("/pulp/content/slow", Content::Delay(Duration::from_secs(5)));
    let got = get(s.proxy.addr, "/pulp/content/slow").await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT);
    log_has(
        &s,
        &["kind=response-timeout", "upstream.response_timeout_secs"],
    );
    s.assert_no_leaks();
}

#[tokio::test]
async fn stalled_body_aborts_the_client_connection() {
    let s = Setup::start_with(Versions::Both, "", upstream_keys("body_timeout_secs = 1")).await;
    s.upstream.put(
        "/pulp/content/stall",
        Content::Stall {
            len: 1 << 20,
            sent: 100_000,
        },
    );
    let err = get_hashed(s.proxy.addr, "/pulp/content/stall")
        .await
        .unwrap_err();
    assert!(err.contains("body broke"), "{err}");
    log_has(&s, &["request aborted", "stalled", "status=200"]);
    s.assert_no_leaks();
}

#[tokio::test]
async fn upstream_dying_mid_body_truncates_visibly() {
    let s = Setup::start().await;
    s.upstream.put(
        "/pulp/content/cut",
        Content::Truncate {
            len: 1 << 20,
            sent: 200_000,
        },
    );
    let err = get_hashed(s.proxy.addr, "/pulp/content/cut")
        .await
        .unwrap_err();
    assert!(err.contains("body broke"), "{err}");
    log_has(&s, &["request aborted", "upstream body failed"]);
    s.assert_no_leaks();
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_and_its_upstream_released() {
    let s = Setup::start_with(Versions::Both, "", proxy_keys("send_timeout_secs = 1")).await;
    // Far more than the socket buffers on both sides hold.
    let len = 64 << 20;
    let path = "/pulp/content/big.iso";
    s.upstream.put(path, Content::Pattern(len));
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut c = socket.connect(s.proxy.addr).await.unwrap();
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: p\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // The client never reads; the proxy gives up on it after 1 s.
    let log = s.proxy.wait_for_log("rule=send-timeout").await;
    let line = log
        .lines()
        .find(|l| l.contains("rule=send-timeout"))
        .unwrap();
    let peer = c.local_addr().unwrap().to_string();
    assert!(
        line.contains(&format!("peer={peer}")) && line.contains("proxy.send_timeout_secs"),
        "{line}"
    );
    assert_eq!(log.matches("rule=send-timeout").count(), 1, "{log}");
    // The access line says why the transfer stopped.
    s.proxy
        .wait_for_log("read nothing for proxy.send_timeout_secs; connection closed")
        .await;
    // The upstream's connection was closed, not kept half-read in the pool.
    e2e::wait_for(
        Duration::from_secs(10),
        "the upstream connection closed",
        || async { (s.upstream.open_connections() == 0).then_some(()) },
    )
    .await;
    let sent_upstream = s.upstream.body_bytes();
    assert!(sent_upstream < len, "{sent_upstream}");
    // What the buffers held, then the end: nothing more was written.
    let mut got = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got += n as u64,
            Err(_) => panic!("the proxy did not close the connection"),
        }
    }
    assert!(got < len, "{got}");
    let text = String::from_utf8(get(s.proxy.addr, "/metrics").await.body.to_vec()).unwrap();
    assert_eq!(
        metric(
            &text,
            "pulp_auth_proxy_closed_connections_total{reason=\"send-timeout\"}"
        ),
        1.0
    );
    // A client that reads is still served.
    s.upstream
        .put("/pulp/content/a", Content::Bytes("a".into()));
    assert_eq!(get(s.proxy.addr, "/pulp/content/a").await.status, 200);
    s.assert_no_leaks();
}

#[tokio::test]
async fn redirects_into_the_upstream_are_rewritten() {
    let s = Setup::start_with(Versions::Both, "/prefix", |_| {}).await;
    let up = s.upstream.url();
    s.upstream.put(
        "/prefix/pulp/content/moved",
        Content::Redirect(
            StatusCode::MOVED_PERMANENTLY,
            format!("{up}/prefix/pulp/content/new?x=1"),
        ),
    );
    s.upstream.put(
        "/prefix/pulp/content/away",
        // Another origin is followed by the proxy, not passed on (see
        // `storage`); this one a private address, refused without a
        // connection.
        Content::Redirect(StatusCode::FOUND, "https://10.0.0.1/blob/1?sig=x".into()),
    );
    // Pulp's 301 that adds a slash names a path only.
    s.upstream.put(
        "/prefix/pulp/content/dir",
        Content::Redirect(
            StatusCode::MOVED_PERMANENTLY,
            "/prefix/pulp/content/dir/".into(),
        ),
    );
    // Not a URL: where it points cannot be told, so it is not passed on.
    s.upstream.put(
        "/prefix/pulp/content/bad",
        Content::Redirect(StatusCode::FOUND, "https://bad host/x?sig=y".into()),
    );
    let dir = get(s.proxy.addr, "/pulp/content/dir").await;
    assert_eq!(dir.status, 301);
    assert_eq!(
        dir.headers["location"],
        format!("http://{}/pulp/content/dir/", s.proxy.addr)
    );
    let bad = get(s.proxy.addr, "/pulp/content/bad").await;
    assert_eq!(bad.status, 502);
    assert!(!bad.headers.contains_key("location"));
    s.proxy
        .wait_for_log("the upstream's Location is not a URL")
        .await;
    let moved = get(s.proxy.addr, "/pulp/content/moved").await;
    assert_eq!(moved.status, 301);
    assert_eq!(
        moved.headers["location"],
        format!("http://{}/pulp/content/new?x=1", s.proxy.addr)
    );
    let away = get(s.proxy.addr, "/pulp/content/away").await;
    assert_eq!(away.status, 502);
    assert!(!away.headers.contains_key("location"));
    assert!(!String::from_utf8_lossy(&away.body).contains("sig="));
    s.proxy.wait_for_log("kind=storage-host").await;
    s.saw(&moved);
    s.saw(&away);
    s.assert_no_leaks();
}

#[test]
fn unresolvable_upstream_is_502_fast() {
    // Inside a namespace with only loopback: the name lookup fails at once
    // and no query can leave the machine.
    let ns = e2e::netns::Netns::new();
    let s = e2e::proxy::Scratch::new();
    e2e::pki::TestCa::new().write_pem(&s.path("ca.pem"));
    let cfg = s.write_config(&e2e::proxy::config(
        "https://pulp.invalid",
        &s.path("ca.pem"),
        &s.path("pw"),
    ));
    let proxy = e2e::proxy::Proxy::start_in(Some(&ns.name), &cfg, &[]);
    let started = Instant::now();
    let out = ns.run(
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{}/pulp/content/a", proxy.url()),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "502",
        "{}",
        proxy.log_text()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let log = proxy.log_text();
    assert!(
        log.contains("kind=dns") && log.contains("did not resolve"),
        "{log}"
    );
    e2e::leak::assert_clean("the proxy's log", log.as_bytes());
}
