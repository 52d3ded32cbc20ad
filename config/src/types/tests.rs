use super::*;

#[test]
fn listen_refuses_wildcards_and_names() {
    for bad in [
        "0.0.0.0:80",
        "[::]:80",
        "[::ffff:0.0.0.0]:80",
        "localhost:80",
        "192.168.33.3",
    ] {
        assert!(ListenAddr::parse(bad).is_err(), "{bad} accepted");
    }
    for good in ["192.168.33.3:80", "127.0.0.1:8080", "[::1]:80"] {
        assert_eq!(ListenAddr::parse(good).unwrap().to_string(), good);
    }
}

#[test]
fn client_net_canonicalises_mapped_ipv6() {
    let net = ClientNet::parse("::ffff:192.168.33.0/120").unwrap();
    assert_eq!(net.to_string(), "192.168.33.0/24");
    assert!(net.contains("192.168.33.7".parse().unwrap()));
    assert!(net.contains("::ffff:192.168.33.7".parse().unwrap()));
    assert!(!net.contains("192.168.34.7".parse().unwrap()));
    let v4 = ClientNet::parse("127.0.0.0/8").unwrap();
    assert!(v4.contains("::ffff:127.0.0.1".parse().unwrap()));
    assert_eq!(
        ClientNet::parse("10.0.0.1").unwrap().to_string(),
        "10.0.0.1/32"
    );
    assert!(ClientNet::parse("10.0.0.1/8")
        .unwrap_err()
        .contains("10.0.0.0/8"));
    assert!(ClientNet::parse("nope").is_err());
}

#[test]
fn readiness_path_is_one_plain_path() {
    for good in [
        "/pulp/content/debian/",
        "/pulp/content/rpm/repodata/repomd.xml",
    ] {
        assert_eq!(ProbePath::parse(good).unwrap().as_str(), good);
    }
    for bad in [
        "",
        "/",
        "//",
        "pulp/content/",
        "/a/../b/",
        "/a//b/",
        "/a/%2e/",
        "/a\\b/",
        "/a b/",
        "/a/?x",
        "/a#b",
    ] {
        let err = ProbePath::parse(bad).expect_err(bad);
        assert!(err.contains('`') || err.contains("path"), "{bad}: {err}");
    }
}

#[test]
fn path_prefix_is_plain_and_segment_bounded() {
    let p = PathPrefix::parse("/pulp/content").unwrap();
    assert_eq!(p.as_str(), "/pulp/content");
    assert!(p.matches("/pulp/content/x"));
    assert!(p.matches("/pulp/content"));
    assert!(!p.matches("/pulp/contentX"));
    for bad in [
        "pulp/", "/", "/a/../b/", "/a//b/", "/a/%2e/", "/a\\b/", "/a b/", "/a/?x",
    ] {
        assert!(PathPrefix::parse(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn upstream_origin_parts() {
    let o = UpstreamOrigin::parse("https://pulp.example.test/prefix/", false).unwrap();
    assert_eq!(o.host(), "pulp.example.test");
    assert_eq!(o.port(), 443);
    assert_eq!(o.prefix(), "/prefix");
    assert_eq!(o.host_header(), "pulp.example.test");
    let o = UpstreamOrigin::parse("https://pulp.example.test:8443", false).unwrap();
    assert_eq!(o.prefix(), "");
    assert_eq!(o.host_header(), "pulp.example.test:8443");
    let o = UpstreamOrigin::parse("https://[::1]:9000/p", false).unwrap();
    assert_eq!(o.host_header(), "[::1]:9000");
}

#[test]
fn upstream_origin_refusals_never_echo_the_url() {
    let secret = "https://ci-user:fake%20pw@pulp.example.test/";
    let err = UpstreamOrigin::parse(secret, false).unwrap_err();
    assert!(err.contains("user information"), "{err}");
    assert!(!err.contains("fake"), "{err}");
    let err = UpstreamOrigin::parse("http://pulp.example.test", false).unwrap_err();
    assert!(err.contains("allow_plaintext"), "{err}");
    assert!(UpstreamOrigin::parse("http://pulp.example.test", true).is_ok());
    assert!(UpstreamOrigin::parse("ftp://pulp.example.test", true).is_err());
    assert!(UpstreamOrigin::parse("https://h/a?x=1", false).is_err());
    assert!(UpstreamOrigin::parse("https://h/a/../b", false).is_err());
}

#[test]
fn interface_names() {
    assert!(InterfaceName::parse("breth1").is_ok());
    for bad in ["", "a/b", "a b", "sixteen-chars-xx", "a:1"] {
        assert!(InterfaceName::parse(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn http_url_omits_port_80_and_brackets_ipv6() {
    let url = |s: &str| http_url(s.parse().unwrap());
    assert_eq!(url("192.168.33.3:80"), "http://192.168.33.3");
    assert_eq!(url("127.0.0.1:8080"), "http://127.0.0.1:8080");
    assert_eq!(url("[::1]:80"), "http://[::1]");
    assert_eq!(url("[2001:db8::3]:8080"), "http://[2001:db8::3]:8080");
}

#[test]
fn path_prefix_with_a_slash_admits_only_what_is_under_it() {
    let p = PathPrefix::parse("/pulp/api/v3/status/").unwrap();
    assert_eq!(p.as_str(), "/pulp/api/v3/status/");
    assert!(p.matches("/pulp/api/v3/status/"));
    assert!(p.matches("/pulp/api/v3/status/x"));
    assert!(!p.matches("/pulp/api/v3/status"));
    assert!(!p.matches("/pulp/api/v3/statusX"));
    // Repeated trailing slashes count as one.
    assert_eq!(
        PathPrefix::parse("/pulp/content//").unwrap().as_str(),
        "/pulp/content/"
    );
    let bare = PathPrefix::parse("/pulp/content").unwrap();
    assert!(bare.matches("/pulp/content"));
    assert!(bare.matches("/pulp/content/"));
    assert!(!bare.matches("/pulp"));
}

#[test]
fn redirect_hosts_are_names_addresses_or_suffixes() {
    for bad in [
        "",
        "*.",
        "*",
        "https://objects.example.com",
        "objects.example.com:443",
        "objects.example.com/bucket",
        "-bad.example.com",
        "a..b",
        "*.*.example.com",
        "[::1]",
    ] {
        assert!(RedirectHost::parse(bad).is_err(), "{bad:?} accepted");
    }
    let exact = RedirectHost::parse("Objects.Example.com").unwrap();
    assert!(exact.matches("objects.example.COM"));
    assert!(!exact.matches("x.objects.example.com"));
    let suffix = RedirectHost::parse("*.s3.example.com").unwrap();
    assert!(suffix.matches("bucket.s3.example.com"));
    assert!(suffix.matches("a.b.s3.example.com"));
    assert!(!suffix.matches("s3.example.com"));
    assert!(!suffix.matches("evils3.example.com"));
    assert!(!suffix.matches(".s3.example.com"));
    let ip = RedirectHost::parse("127.0.0.1").unwrap();
    assert!(ip.matches("127.0.0.1"));
    assert!(RedirectHost::parse("::1").unwrap().matches("::1"));
}
