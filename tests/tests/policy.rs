//! Promise 4 against the real binary: only GET and HEAD, only origin-form,
//! only allowed paths after normalisation; refused requests never reach the
//! upstream. Raw TCP, because HTTP clients normalise what they send.

use e2e::client::{get, raw};
use e2e::upstream::Content;
use e2e::{first_status, Setup};
use std::time::Duration;

async fn refused(s: &Setup, request: String, status: u16) -> Vec<u8> {
    let before = s.upstream.requests().len();
    let resp = raw(s.proxy.addr, request.as_bytes(), Duration::from_millis(500)).await;
    assert_eq!(
        first_status(&resp),
        Some(status),
        "{request:?} -> {}",
        String::from_utf8_lossy(&resp)
    );
    assert_eq!(
        s.upstream.requests().len(),
        before,
        "{request:?} reached the upstream"
    );
    s.seen.lock().unwrap().extend_from_slice(&resp);
    resp
}

fn req(method: &str, target: &str) -> String {
    format!("{method} {target} HTTP/1.1\r\nHost: proxy\r\n\r\n")
}

#[tokio::test]
async fn only_get_and_head() {
    let s = Setup::start().await;
    for m in [
        "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND",
    ] {
        let resp = refused(&s, req(m, "/pulp/content/a"), 405).await;
        let text = String::from_utf8_lossy(&resp).to_ascii_lowercase();
        assert!(text.contains("allow: get, head"), "{text}");
    }
    s.assert_no_leaks();
}

#[tokio::test]
async fn never_a_forward_proxy() {
    let s = Setup::start().await;
    let up = s.upstream.url();
    let host = up.trim_start_matches("https://");
    refused(&s, req("GET", &format!("{up}/pulp/content/a")), 400).await;
    refused(&s, req("GET", "http://example.test/pulp/content/a"), 400).await;
    refused(
        &s,
        format!("CONNECT {host} HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        400,
    )
    .await;
    refused(&s, req("OPTIONS", "*"), 400).await;
    s.assert_no_leaks();
}

#[tokio::test]
async fn paths_are_normalised_before_the_prefix_check() {
    let s = Setup::start().await;
    s.upstream
        .put("/pulp/content/a", Content::Bytes("a".into()));
    for target in [
        "/pulp/content/../api/v3/users/",
        "/pulp/content/./../../pulp/api/v3/tasks/",
        "/pulp/api/v3/tasks/",
        "/pulp/api/v3/status/../users/",
        "/pulp/contentx/a",
        "/",
    ] {
        refused(&s, req("GET", target), 403).await;
    }
    for target in [
        "/pulp/content/%2e%2e/api/v3/users/",
        "/pulp/content/.%2E/api/v3/users/",
        "/pulp/content/a%2Fb",
        "/pulp/content/a%5cb",
        "/pulp/content/a\\..\\b",
        "/..",
    ] {
        refused(&s, req("GET", target), 400).await;
    }
    // Plain dot segments and repeated slashes are resolved, and what is
    // forwarded is exactly the checked path.
    let got = get(s.proxy.addr, "/pulp/content/x/../a").await;
    assert_eq!(got.status, 200);
    let resp = raw(
        s.proxy.addr,
        req("GET", "//pulp//content/./a").as_bytes(),
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(first_status(&resp), Some(200));
    let targets: Vec<_> = s
        .upstream
        .requests()
        .into_iter()
        .map(|r| r.target)
        .collect();
    assert_eq!(targets, ["/pulp/content/a", "/pulp/content/a"]);
    s.assert_no_leaks();
}

#[tokio::test]
async fn host_header_rules() {
    let s = Setup::start().await;
    refused(
        &s,
        "GET /pulp/content/a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into(),
        400,
    )
    .await;
    refused(&s, "GET /pulp/content/a HTTP/1.1\r\n\r\n".into(), 400).await;
    s.assert_no_leaks();
}

#[tokio::test]
async fn request_bodies_are_refused() {
    let s = Setup::start().await;
    refused(
        &s,
        "GET /pulp/content/a HTTP/1.1\r\nHost: p\r\nContent-Length: 3\r\n\r\nabc".into(),
        400,
    )
    .await;
    refused(
        &s,
        "GET /pulp/content/a HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".into(),
        400,
    )
    .await;
    s.assert_no_leaks();
}

#[tokio::test]
async fn long_urls_and_large_heads() {
    let s = Setup::start_with(
        Default::default(),
        "",
        e2e::proxy_keys("max_url_bytes = 1024"),
    )
    .await;
    refused(
        &s,
        req("GET", &format!("/pulp/content/{}", "a".repeat(1100))),
        414,
    )
    .await;
    refused(
        &s,
        req("GET", &format!("/pulp/content/{}", "a".repeat(20_000))),
        431,
    )
    .await;
    let big = format!(
        "GET /pulp/content/a HTTP/1.1\r\nHost: p\r\nX-Big: {}\r\n\r\n",
        "b".repeat(20_000)
    );
    refused(&s, big, 431).await;
    let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    refused(
        &s,
        format!("GET /pulp/content/a HTTP/1.1\r\nHost: p\r\n{many}\r\n"),
        431,
    )
    .await;
    let log = s.proxy.log_text();
    assert!(log.contains("rule=header-size"), "{log}");
    assert!(log.contains("rule=url-length"), "{log}");
    s.assert_no_leaks();
}
