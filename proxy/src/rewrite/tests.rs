use super::*;
use secrecy::SecretString;

fn upstream() -> Upstream {
    let config = pulp_auth_config::Upstream {
        origin: pulp_auth_config::UpstreamOrigin::parse(
            "https://pulp.example.test:8443/base/",
            false,
        )
        .unwrap(),
        username: "ci-user".into(),
        password_file: None,
        ca_file: None,
        connect_timeout: std::time::Duration::from_secs(1),
        response_timeout: std::time::Duration::from_secs(1),
        body_timeout: std::time::Duration::from_secs(1),
        max_redirects: 3,
        redirect_hosts: None,
        readiness_path: None,
    };
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    Upstream::new(&config, tls).unwrap()
}

#[test]
fn strips_client_credentials_and_hop_by_hop_then_injects() {
    let req = Request::builder()
        .uri("/pulp/content/a?x=1")
        .header("host", "proxy")
        .header("authorization", "Basic Y2xpZW50OnNlY3JldA==")
        .header("proxy-authorization", "Basic eDp5")
        .header("cookie", "session=1")
        .header("connection", "keep-alive, X-Secret-Hop")
        .header("x-secret-hop", "1")
        .header("te", "trailers")
        .header("range", "bytes=0-1")
        .header("if-none-match", "\"a\"")
        .header("if-none-match", "\"b\"")
        .body(())
        .unwrap();
    let (parts, ()) = req.into_parts();
    let decision = Decision {
        path: "/pulp/content/a".into(),
        query: Some("x=1".into()),
    };
    let auth = BasicAuth::new("ci-user", &SecretString::from("fake:@/%+ pw"));
    let out = to_upstream(&parts, &decision, &upstream(), &auth).unwrap();
    assert_eq!(
        out.uri().to_string(),
        "https://pulp.example.test:8443/base/pulp/content/a?x=1"
    );
    let h = out.headers();
    assert_eq!(h["host"], "pulp.example.test:8443");
    assert_eq!(h.get_all("authorization").iter().count(), 1);
    assert_eq!(h["authorization"], auth.header_value());
    for gone in [
        "proxy-authorization",
        "cookie",
        "connection",
        "x-secret-hop",
        "te",
    ] {
        assert!(!h.contains_key(gone), "{gone} forwarded");
    }
    assert_eq!(h["range"], "bytes=0-1");
    assert_eq!(
        h.get_all("if-none-match").iter().count(),
        2,
        "repeated headers kept"
    );
}

#[test]
fn response_hop_by_hop_removed_length_kept() {
    let mut h = HeaderMap::new();
    h.insert("connection", "close, x-hop".parse().unwrap());
    h.insert("x-hop", "1".parse().unwrap());
    h.insert("keep-alive", "timeout=5".parse().unwrap());
    h.insert("content-length", "10".parse().unwrap());
    h.insert("etag", "\"e\"".parse().unwrap());
    from_upstream(&mut h);
    assert!(
        !h.contains_key("connection") && !h.contains_key("x-hop") && !h.contains_key("keep-alive")
    );
    assert_eq!(h["content-length"], "10");
    assert_eq!(h["etag"], "\"e\"");
}

#[test]
fn responses_lose_a_length_beside_transfer_encoding_and_every_cookie() {
    let mut h = HeaderMap::new();
    h.insert("transfer-encoding", "chunked".parse().unwrap());
    h.insert("content-length", "5".parse().unwrap());
    h.append("set-cookie", "session=a".parse().unwrap());
    h.append("set-cookie", "csrftoken=b".parse().unwrap());
    h.insert("set-cookie2", "old=c".parse().unwrap());
    h.insert("etag", "\"e\"".parse().unwrap());
    from_upstream(&mut h);
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(h["etag"], "\"e\"");
}

#[test]
fn redirects_into_the_upstream_come_back_through_the_proxy() {
    let up = upstream();
    let o = up.origin();
    let base = "http://127.0.0.1:8080";
    let cases = [
        (
            "https://pulp.example.test:8443/base/pulp/content/b?x=1",
            Some("http://127.0.0.1:8080/pulp/content/b?x=1"),
        ),
        (
            "HTTPS://PULP.example.test:8443/base/pulp/content/b",
            Some("http://127.0.0.1:8080/pulp/content/b"),
        ),
        (
            "/base/pulp/content/c/",
            Some("http://127.0.0.1:8080/pulp/content/c/"),
        ),
        // Elsewhere: the client follows it on its own, without credentials.
        ("https://cdn.example.test/pulp/content/b", None),
        ("https://pulp.example.test/base/pulp/content/b", None),
        ("http://pulp.example.test:8443/base/pulp/content/b", None),
        ("https://user@pulp.example.test:8443/base/x", None),
        ("//pulp.example.test:8443/base/x", None),
        ("/other/x", None),
        ("/basement/x", None),
        ("relative/x", None),
    ];
    for (loc, want) in cases {
        let got = redirect(&HeaderValue::from_static(loc), o, base);
        assert_eq!(got.as_ref().map(|v| v.to_str().unwrap()), want, "{loc}");
    }
}

#[test]
fn only_the_allow_list_reaches_the_upstream() {
    let mut req = Request::builder()
        .uri("/pulp/content/a")
        .header("host", "proxy");
    let passed = [
        ("range", "bytes=0-1"),
        ("if-range", "\"e\""),
        ("if-match", "\"e\""),
        ("if-none-match", "\"e\""),
        ("if-modified-since", "Tue, 01 Dec 2026 00:00:00 GMT"),
        ("if-unmodified-since", "Tue, 01 Dec 2026 00:00:00 GMT"),
        ("cache-control", "no-cache"),
    ];
    let dropped = [
        ("x-http-method-override", "DELETE"),
        ("x-http-method", "DELETE"),
        ("x-method-override", "DELETE"),
        ("x-original-url", "/pulp/api/v3/users/"),
        ("x-rewrite-url", "/pulp/api/v3/users/"),
        ("forwarded", "for=203.0.113.9;host=evil.example"),
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-prefix", "/evil"),
        ("x-forwarded-anything", "1"),
        ("x-real-ip", "203.0.113.9"),
        ("accept", "text/html"),
        ("accept-encoding", "gzip"),
        ("user-agent", "<script>"),
        ("x-reflected", "poison"),
        ("expect", "100-continue"),
    ];
    for (k, v) in passed.iter().chain(dropped.iter()) {
        req = req.header(*k, *v);
    }
    // Listed in `Connection`: hop-by-hop, even on the allow-list.
    req = req.header("connection", "cache-control");
    let (parts, ()) = req.body(()).unwrap().into_parts();
    let decision = Decision {
        path: "/pulp/content/a".into(),
        query: None,
    };
    let auth = BasicAuth::new("ci-user", &SecretString::from("fake:@/%+ pw"));
    let out = to_upstream(&parts, &decision, &upstream(), &auth).unwrap();
    let mut names: Vec<&str> = out.headers().keys().map(|n| n.as_str()).collect();
    names.sort_unstable();
    let mut want: Vec<&str> = passed
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| *k != "cache-control")
        .chain(["authorization", "host"])
        .collect();
    want.sort_unstable();
    assert_eq!(names, want);
}
