//! Malformed and smuggling-shaped requests over raw TCP. Each attack is
//! followed, on the same connection, by a pipelined valid request: the
//! smuggled request must never reach the upstream, at most the one valid
//! request may, and a fresh connection must still be served.

use e2e::client::{get, raw};
use e2e::upstream::Content;
use e2e::{count_responses, first_status, Setup};
use std::time::Duration;

const SMUGGLED: &str = "GET /pulp/content/smuggled HTTP/1.1\r\nHost: p\r\n\r\n";
const VALID: &str = "GET /pulp/content/ok HTTP/1.1\r\nHost: p\r\n\r\n";

async fn attack(s: &Setup, name: &str, head: &str) {
    let before = s.upstream.requests().len();
    let payload = format!("{head}{SMUGGLED}{VALID}");
    let resp = raw(s.proxy.addr, payload.as_bytes(), Duration::from_millis(500)).await;
    let status = first_status(&resp);
    assert!(
        matches!(status, Some(400..=499)),
        "{name}: first answer {status:?}: {}",
        String::from_utf8_lossy(&resp)
    );
    assert!(
        count_responses(&resp) <= 2,
        "{name}: more answers than requests"
    );
    let after: Vec<_> = s.upstream.requests()[before..]
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert!(
        after.iter().all(|t| t == "/pulp/content/ok") && after.len() <= 1,
        "{name}: the upstream received {after:?}"
    );
    assert_eq!(
        get(s.proxy.addr, "/pulp/content/ok").await.status,
        200,
        "{name}: proxy unhealthy after"
    );
    s.seen.lock().unwrap().extend_from_slice(&resp);
}

#[tokio::test]
async fn smuggling_shapes_are_refused_without_desync() {
    let s = Setup::start().await;
    s.upstream
        .put("/pulp/content/ok", Content::Bytes("ok".into()));
    let big = "x".repeat(20_000);
    let cases: Vec<(&str, String)> = vec![
        ("conflicting Content-Length", "GET /pulp/content/a HTTP/1.1\r\nHost: p\r\nContent-Length: 0\r\nContent-Length: 47\r\n\r\n".into()),
        ("Content-Length with Transfer-Encoding", "GET /pulp/content/a HTTP/1.1\r\nHost: p\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into()),
        ("Transfer-Encoding on GET", "GET /pulp/content/a HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n2f\r\n".into()),
        ("bad chunk size", "GET /pulp/content/a HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".into()),
        ("obfuscated Transfer-Encoding", "GET /pulp/content/a HTTP/1.1\r\nHost: p\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n".into()),
        ("NUL in a header value", "GET /pulp/content/a HTTP/1.1\r\nHost: p\r\nX-A: a\0b\r\n\r\n".into()),
        ("CR in a header value", "GET /pulp/content/a HTTP/1.1\r\nHost: p\r\nX-A: a\rb\r\n\r\n".into()),
        ("obs-fold", "GET /pulp/content/a HTTP/1.1\r\nHost: p\r\nX-A: a\r\n b\r\n\r\n".into()),
        ("oversized header", format!("GET /pulp/content/a HTTP/1.1\r\nHost: p\r\nX-A: {big}\r\n\r\n")),
        ("very long URL", format!("GET /pulp/content/{big} HTTP/1.1\r\nHost: p\r\n\r\n")),
        ("absolute-form with Host conflict", "GET http://other.test/pulp/content/a HTTP/1.1\r\nHost: p\r\n\r\n".into()),
    ];
    for (name, head) in cases {
        attack(&s, name, &head).await;
    }
    assert!(
        !s.upstream
            .requests()
            .iter()
            .any(|r| r.target.contains("smuggled") || r.target == "/pulp/content/a"),
        "an attack request reached the upstream"
    );
    s.assert_no_leaks();
}
