//! Promise 2: the credentials go only to the configured origin, over TLS
//! whose certificate was verified. A bad certificate means no request (so
//! no credentials) reaches the upstream, the client gets 502, and the log
//! names the verification error.

use e2e::client::get;
use e2e::pki::{self, ServerCert, TestCa};
use e2e::proxy::{config, Proxy, Scratch};
use e2e::upstream::{Content, Upstream, Versions};
use e2e::{basic_header, leak};

async fn refused_by_tls(cert: ServerCert, trusted: &TestCa, expect_in_log: &str) {
    let upstream = Upstream::start(cert, Versions::Both).await;
    upstream.put("/pulp/content/a", Content::Bytes("a".into()));
    let scratch = Scratch::new();
    trusted.write_pem(&scratch.path("ca.pem"));
    let cfg = scratch.write_config(&config(
        &upstream.url(),
        &scratch.path("ca.pem"),
        &scratch.path("pw"),
    ));
    let proxy = Proxy::start(&cfg, &[]);
    let got = get(proxy.addr, "/pulp/content/a").await;
    assert_eq!(got.status, 502);
    assert!(
        upstream.requests().is_empty(),
        "a request reached an unverified upstream"
    );
    assert_eq!(upstream.handshakes(), 0);
    assert!(upstream.failed_handshakes() >= 1);
    let log = proxy.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("certificate rejected") && l.contains(expect_in_log)),
        "log does not name the certificate error ({expect_in_log}):\n{log}"
    );
    assert!(log.contains("kind=bad-certificate"), "{log}");
    leak::assert_clean("the proxy's log", log.as_bytes());
    leak::assert_clean("a response", &got.body);
}

#[tokio::test]
async fn self_signed_upstream_gets_no_request() {
    refused_by_tls(pki::self_signed(), &TestCa::new(), "UnknownIssuer").await;
}

#[tokio::test]
async fn wrong_host_name_gets_no_request() {
    let ca = TestCa::new();
    refused_by_tls(ca.wrong_name(), &ca, "not valid for name").await;
}

#[tokio::test]
async fn expired_certificate_gets_no_request() {
    let ca = TestCa::new();
    refused_by_tls(ca.expired(), &ca, "expired").await;
}

async fn works_with(versions: Versions) {
    let ca = TestCa::new();
    let upstream = Upstream::start(ca.leaf(), versions).await;
    upstream.put("/pulp/content/a", Content::Bytes("a".into()));
    let scratch = Scratch::new();
    ca.write_pem(&scratch.path("ca.pem"));
    let cfg = scratch.write_config(&config(
        &upstream.url(),
        &scratch.path("ca.pem"),
        &scratch.path("pw"),
    ));
    let proxy = Proxy::start(&cfg, &[]);
    let got = get(proxy.addr, "/pulp/content/a").await;
    assert_eq!(got.status, 200, "{}", proxy.log_text());
    assert_eq!(
        upstream.requests()[0].header("authorization"),
        vec![basic_header()]
    );
}

#[tokio::test]
async fn tls13_only_upstream_works() {
    works_with(Versions::Tls13).await;
}

#[tokio::test]
async fn tls12_only_upstream_works() {
    works_with(Versions::Tls12).await;
}

#[tokio::test]
async fn plaintext_needs_the_opt_in_and_warns_at_every_start() {
    let scratch = Scratch::new();
    TestCa::new().write_pem(&scratch.path("ca.pem"));
    let text = config(
        "http://127.0.0.1:9",
        &scratch.path("ca.pem"),
        &scratch.path("pw"),
    );
    let (status, log) = Proxy::run(&scratch.write_config(&text), &[]);
    assert_eq!(status.code(), Some(78), "{log}");
    let mut text = text;
    text.set("upstream", "allow_plaintext", true);
    let cfg = scratch.write_config(&text);
    let proxy = Proxy::start(&cfg, &[]);
    let log = proxy.log_text();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("allow_plaintext")
            && l.contains("unencrypted")),
        "{log}"
    );
    leak::assert_clean("the proxy's log", log.as_bytes());
}
