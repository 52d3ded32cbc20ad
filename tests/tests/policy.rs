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

/// Raw bytes, for targets a `String` request line cannot carry as sent.
async fn refused_bytes(s: &Setup, request: &[u8], status: u16) {
    let before = s.upstream.requests().len();
    let resp = raw(s.proxy.addr, request, Duration::from_millis(500)).await;
    let shown = String::from_utf8_lossy(request);
    assert_eq!(
        first_status(&resp),
        Some(status),
        "{shown:?} -> {}",
        String::from_utf8_lossy(&resp)
    );
    assert_eq!(
        s.upstream.requests().len(),
        before,
        "{shown:?} reached the upstream"
    );
    s.seen.lock().unwrap().extend_from_slice(&resp);
}

fn raw_get(target: &[u8]) -> Vec<u8> {
    let mut r = b"GET ".to_vec();
    r.extend_from_slice(target);
    r.extend_from_slice(b" HTTP/1.1\r\nHost: proxy\r\n\r\n");
    r
}

#[tokio::test]
async fn raw_non_ascii_and_invalid_utf8_escapes_are_refused() {
    let s = Setup::start().await;
    s.upstream
        .put("/pulp/content/caf\u{e9}", Content::Bytes("x".into()));
    for target in [
        &b"/pulp/content/caf\xc3\xa9"[..],
        b"/pulp/content/%41\xc3\xa9",
        b"/pulp/content/a?q=\xc3\xa9",
    ] {
        refused_bytes(&s, &raw_get(target), 400).await;
    }
    for target in [
        "/pulp/content/%c0%ae%c0%ae/api/v3/users/",
        "/pulp/content/%80",
        "/pulp/content/%ed%a0%80",
        "/pulp/content/%ff",
    ] {
        refused(&s, req("GET", target), 400).await;
    }
    // Valid UTF-8, escaped, is forwarded as sent.
    let got = get(s.proxy.addr, "/pulp/content/caf%C3%A9").await;
    assert_eq!(got.status, 200);
    assert_eq!(s.upstream.requests()[0].target, "/pulp/content/caf%C3%A9");
    s.assert_no_leaks();
}

#[tokio::test]
async fn segments_that_lenient_servers_read_as_dots_are_refused() {
    let s = Setup::start().await;
    for target in [
        "/pulp/content/..;/api/v3/users/",
        "/pulp/content/..;x/api/v3/users/",
        "/pulp/content/.;x/a",
        "/pulp/content/%2e%2e;/api/v3/users/",
        "/pulp/content/%ef%bc%8e%ef%bc%8e/api/v3/users/",
        "/pulp/content/%e2%80%a4%e2%80%a4/api/v3/users/",
        "/pulp/content/%ef%b9%92%ef%b9%92/api/v3/users/",
        "/pulp/content/%e2%80%a5/api/v3/users/",
        "/pulp/content/..%20/api/v3/users/",
        "/pulp/content/%20../api/v3/users/",
        "/pulp/content/..%c2%a0/api/v3/users/",
    ] {
        refused(&s, req("GET", target), 400).await;
    }
    refused_bytes(
        &s,
        &raw_get("/pulp/content/\u{ff0e}\u{ff0e}/api/v3/users/".as_bytes()),
        400,
    )
    .await;
    s.assert_no_leaks();
}

#[tokio::test]
async fn a_prefix_with_a_slash_does_not_admit_the_path_without_it() {
    // The defaults: "/pulp/content/" and "/pulp/api/v3/status/".
    let s = Setup::start().await;
    refused(&s, req("GET", "/pulp/api/v3/status"), 403).await;
    refused(&s, req("GET", "/pulp/content"), 403).await;
    let got = get(s.proxy.addr, "/pulp/api/v3/status/").await;
    assert_eq!(got.status, 200);
    s.assert_no_leaks();

    // Written without the slash: the path itself and what is under it.
    let s = Setup::start_with(
        Default::default(),
        "",
        e2e::proxy_keys("allowed_paths = [\"/pulp/content\"]"),
    )
    .await;
    s.upstream
        .put("/pulp/content", Content::Bytes("index".into()));
    s.upstream
        .put("/pulp/content/a", Content::Bytes("a".into()));
    assert_eq!(get(s.proxy.addr, "/pulp/content").await.status, 200);
    assert_eq!(get(s.proxy.addr, "/pulp/content/a").await.status, 200);
    refused(&s, req("GET", "/pulp/contentX"), 403).await;
    s.assert_no_leaks();
}

#[tokio::test]
async fn host_values_must_be_host_and_port() {
    let s = Setup::start().await;
    for host in [
        "user@evil.example",
        "evil.example/pulp",
        "a b",
        "[::1",
        "a:b",
        "a:80:80",
        "a:123456",
        "\"q\"",
    ] {
        refused(
            &s,
            format!("GET /pulp/content/a HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            400,
        )
        .await;
    }
    let log = s.proxy.wait_for_log("not a valid host[:port]").await;
    assert!(
        log.lines()
            .any(|l| l.contains("rule=host") && l.contains("not a valid host[:port]")),
        "{log}"
    );
    s.upstream
        .put("/pulp/content/a", Content::Bytes("a".into()));
    for host in ["proxy", "192.168.33.3:80", "[::1]:8080"] {
        let resp = raw(
            s.proxy.addr,
            format!("GET /pulp/content/a HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
            Duration::from_millis(500),
        )
        .await;
        assert_eq!(first_status(&resp), Some(200), "{host}");
    }
    s.assert_no_leaks();
}

#[tokio::test]
async fn local_endpoints_obey_the_request_shape() {
    let s = Setup::start().await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        refused(&s, req("GET", &format!("http://proxy{path}")), 400).await;
        refused(&s, format!("GET {path} HTTP/1.1\r\n\r\n"), 400).await;
        refused(
            &s,
            format!("GET {path} HTTP/1.1\r\nHost: p\r\nContent-Length: 3\r\n\r\nabc"),
            400,
        )
        .await;
        refused(
            &s,
            format!(
                "GET {path} HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            400,
        )
        .await;
        refused(&s, req("POST", path), 405).await;
    }
    // /readyz probes nothing for them; a proper request still works.
    assert!(s.upstream.requests().is_empty());
    assert_eq!(get(s.proxy.addr, "/healthz").await.status, 200);
    s.assert_no_leaks();

    // The metrics listener keeps the same rules.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let keys = format!("metrics_listen = \"127.0.0.1:{port}\"");
    let s = Setup::start_with(Default::default(), "", e2e::proxy_keys(&keys)).await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    e2e::wait_for(Duration::from_secs(10), "the metrics listener", || async {
        tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
    })
    .await;
    for request in [
        req("GET", "http://proxy/metrics"),
        "GET /metrics HTTP/1.1\r\n\r\n".to_string(),
        "GET /healthz HTTP/1.1\r\nHost: p\r\nContent-Length: 3\r\n\r\nabc".to_string(),
    ] {
        let resp = raw(addr, request.as_bytes(), Duration::from_millis(500)).await;
        assert_eq!(first_status(&resp), Some(400), "{request:?}");
        s.seen.lock().unwrap().extend_from_slice(&resp);
    }
    assert_eq!(get(addr, "/metrics").await.status, 200);
    s.assert_no_leaks();
}

#[tokio::test]
async fn readyz_tells_clients_a_reason_word_and_the_log_the_cause() {
    let s = Setup::start_with(
        Default::default(),
        "",
        e2e::proxy_keys("readiness_cache_secs = 0"),
    )
    .await;
    s.upstream.refuse_credentials(true);
    let down = get(s.proxy.addr, "/readyz").await;
    assert_eq!(down.status, 503);
    assert_eq!(down.body, "not ready: credentials-refused\n");
    s.saw(&down);
    let log = s.proxy.wait_for_log("readiness probe failed").await;
    assert!(
        log.lines().any(|l| l.contains("readiness probe failed")
            && l.contains("reason=credentials-refused")
            && l.contains("refused the proxy's credentials")),
        "{log}"
    );
    s.assert_no_leaks();
}

/// With `upstream.readiness_path`, `/readyz` probes that guarded path
/// with HEAD and the proxy's credentials (Pulp's status endpoint needs
/// none, so it cannot prove them), and tells refused credentials from a
/// path the user may not read.
#[tokio::test]
async fn readyz_probes_the_readiness_path_and_tells_refusal_from_forbidden() {
    let s = Setup::start_with(Default::default(), "", |c| {
        c.keys("proxy", "readiness_cache_secs = 0");
        c.keys("upstream", "readiness_path = \"/pulp/content/guarded/\"");
    })
    .await;
    s.upstream.refuse_like_pulp();
    s.upstream
        .put("/pulp/content/guarded/", Content::Bytes("index".into()));
    let up = get(s.proxy.addr, "/readyz").await;
    assert_eq!(up.status, 200, "{up:?}");
    let probes: Vec<_> = s
        .upstream
        .requests()
        .into_iter()
        .filter(|r| r.target == "/pulp/content/guarded/")
        .collect();
    assert_eq!(probes.len(), 1, "{probes:?}");
    assert_eq!(probes[0].method, "HEAD");
    assert!(
        !s.upstream
            .requests()
            .iter()
            .any(|r| r.target.contains("/status/")),
        "the status endpoint was probed as well"
    );

    s.upstream.refuse_credentials(true);
    let down = get(s.proxy.addr, "/readyz").await;
    assert_eq!(down.status, 503);
    assert_eq!(down.body, "not ready: credentials-refused\n");
    s.saw(&down);
    s.upstream.refuse_credentials(false);

    s.upstream.put("/pulp/content/guarded/", Content::Forbidden);
    let down = get(s.proxy.addr, "/readyz").await;
    assert_eq!(down.status, 503);
    assert_eq!(down.body, "not ready: forbidden\n");
    s.saw(&down);
    let log = s.proxy.wait_for_log("reason=forbidden").await;
    assert!(log.contains("download role"), "{log}");

    s.upstream.remove("/pulp/content/guarded/");
    let down = get(s.proxy.addr, "/readyz").await;
    assert_eq!(down.body, "not ready: status\n");
    s.proxy
        .wait_for_log(
            "answered the readiness probe with 404 Not Found; check upstream.readiness_path",
        )
        .await;
    s.assert_no_leaks();
}

/// Characters that end, forge or hide a log line in some viewer, as raw
/// UTF-8 in a request target.
const LOG_BREAKERS: [char; 5] = ['\u{85}', '\u{2028}', '\u{2029}', '\u{202e}', '\u{9b}'];

fn breaking_target() -> String {
    let mut t = "/pulp/content/a".to_string();
    for c in LOG_BREAKERS {
        t.push(c);
        t.push_str("xstatus=200");
    }
    t
}

#[tokio::test]
async fn log_fields_cannot_forge_or_hide_lines() {
    for json in [false, true] {
        let keys = if json { "log_format = \"json\"" } else { "" };
        let s = Setup::start_with(Default::default(), "", e2e::proxy_keys(keys)).await;
        s.upstream
            .put("/pulp/content/a", Content::Bytes("a".into()));
        refused_bytes(&s, &raw_get(breaking_target().as_bytes()), 400).await;
        let log = s.proxy.wait_for_log("path-syntax").await;
        for c in LOG_BREAKERS {
            assert!(!log.contains(c), "raw {c:?} in the log:\n{log}");
            let escaped = format!("\\u{{{:x}}}", u32::from(c));
            assert!(log.contains(&escaped), "no {escaped} in the log:\n{log}");
        }
        if json {
            for line in log.lines() {
                let v: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                if v["fields"]["rule"] == "path-syntax" {
                    let target = v["fields"]["target"].as_str().unwrap();
                    assert!(target.starts_with("/pulp/content/a\\u{85}x"), "{target}");
                }
            }
        } else {
            let refused: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("rule=path-syntax"))
                .collect();
            assert_eq!(refused.len(), 1, "{log}");
        }
        s.assert_no_leaks();
    }
}
