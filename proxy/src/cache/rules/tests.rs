use super::*;
use http::HeaderValue;

const SHA256: &str = "0f343b0931126a20f133d67c2b018a3b1e3f4f3e9bd5e5a3c1e6d51c2b6c0a7e";

#[test]
fn content_addressed_paths_are_immutable() {
    for path in [
        "/pulp/content/rocky/Packages/h/hello-2.12-1.el9.x86_64.rpm",
        "/pulp/content/rocky/drpms/hello-2.10_2.12.x86_64.drpm",
        "/pulp/content/debian/pool/main/h/hello/hello_2.10-3_amd64.deb",
        "/pulp/content/debian/pool/main/d/d-i/x_1_amd64.udeb",
        "/pulp/content/debian/pool/main/h/hello/hello-dbgsym_1_amd64.ddeb",
        &format!("/pulp/content/debian/dists/bookworm/main/binary-amd64/by-hash/SHA256/{SHA256}"),
        "/pulp/content/debian/dists/b/main/by-hash/MD5Sum/0123456789abcdef0123456789ABCDEF",
        &format!("/pulp/content/rocky/repodata/{SHA256}-primary.xml.gz"),
        "/c/repodata/0123456789abcdef0123456789abcdef01234567-filelists.sqlite.bz2",
    ] {
        assert_eq!(freshness(path, None), Freshness::Immutable, "{path}");
    }
}

#[test]
fn indexes_and_near_misses_are_revalidated() {
    for path in [
        "/pulp/content/rocky/repodata/repomd.xml",
        "/pulp/content/rocky/repodata/repomd.xml.asc",
        "/pulp/content/debian/dists/bookworm/InRelease",
        "/pulp/content/debian/dists/bookworm/Release",
        "/pulp/content/debian/dists/bookworm/main/binary-amd64/Packages.xz",
        // A suffix alone is not a package name.
        "/pulp/content/x/.rpm",
        "/pulp/content/x/.deb",
        "/pulp/content/x/hello.rpm.asc",
        // Digest of the wrong length for its algorithm, or not hex.
        &format!("/d/by-hash/SHA512/{SHA256}"),
        "/d/by-hash/SHA256/not-a-digest",
        &format!("/d/by-hash/SHA3/{SHA256}"),
        &format!("/d/by-hash/SHA256/{SHA256}/extra"),
        // Checksum names outside repodata/, or without a name after them.
        &format!("/c/other/{SHA256}-primary.xml.gz"),
        &format!("/c/repodata/{SHA256}-"),
        "/c/repodata/abc-primary.xml.gz",
        "/pulp/api/v3/status/",
    ] {
        assert_eq!(freshness(path, None), Freshness::Revalidate, "{path}");
    }
    let pkg = "/pulp/content/rocky/Packages/h/hello-2.12-1.el9.x86_64.rpm";
    assert_eq!(freshness(pkg, Some("v=2")), Freshness::Revalidate);
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[test]
fn requests_that_bypass_or_only_read() {
    let get = Method::GET;
    assert_eq!(request_use(&get, &headers(&[])), Use::Lookup { fill: true });
    assert_eq!(
        request_use(&get, &headers(&[("cache-control", "max-age=0")])),
        Use::Lookup { fill: true }
    );
    for h in [
        ("range", "bytes=0-9"),
        ("if-none-match", "\"a\""),
        ("if-modified-since", "x"),
    ] {
        assert_eq!(
            request_use(&get, &headers(&[h])),
            Use::Lookup { fill: false },
            "{h:?}"
        );
    }
    for h in [
        ("if-match", "\"a\""),
        ("if-unmodified-since", "x"),
        ("if-range", "\"a\""),
        ("cache-control", "max-age=0, No-Store"),
    ] {
        assert_eq!(request_use(&get, &headers(&[h])), Use::Bypass, "{h:?}");
    }
    assert_eq!(request_use(&Method::HEAD, &headers(&[])), Use::Bypass);
}

#[test]
fn what_is_stored() {
    let ok = StatusCode::OK;
    let base = [("content-length", "10"), ("etag", "\"a\"")];
    assert_eq!(
        storable(ok, &headers(&base), Freshness::Revalidate, 1 << 20),
        Ok(Some(10))
    );
    let lm = [
        ("content-length", "10"),
        ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
    ];
    assert_eq!(
        storable(ok, &headers(&lm), Freshness::Revalidate, 1 << 20),
        Ok(Some(10))
    );
    // Immutable paths need no validator, unless the upstream says no-cache.
    let bare = [("content-length", "10")];
    assert_eq!(
        storable(ok, &headers(&bare), Freshness::Immutable, 1 << 20),
        Ok(Some(10))
    );
    // Chunked: the fill learns the length at the last chunk.
    assert_eq!(
        storable(
            ok,
            &headers(&[("etag", "\"a\"")]),
            Freshness::Revalidate,
            1 << 20
        ),
        Ok(None)
    );
    type Case<'a> = (&'a [(&'a str, &'a str)], Freshness, &'a str);
    let cases: [Case; 9] = [
        (&bare, Freshness::Revalidate, "no ETag or Last-Modified"),
        (
            &[("content-length", "10"), ("cache-control", "no-cache")],
            Freshness::Immutable,
            "no ETag",
        ),
        (
            &[("content-length", "x")],
            Freshness::Immutable,
            "not a number",
        ),
        (
            &[("content-length", "2000000")],
            Freshness::Immutable,
            "larger than",
        ),
        (
            &[
                ("content-length", "1"),
                ("cache-control", "public, no-store"),
            ],
            Freshness::Immutable,
            "forbids",
        ),
        (
            &[("content-length", "1"), ("cache-control", "private")],
            Freshness::Immutable,
            "forbids",
        ),
        (
            &[("content-length", "1"), ("set-cookie", "a=b")],
            Freshness::Immutable,
            "Set-Cookie",
        ),
        (
            &[("content-length", "1"), ("content-encoding", "gzip")],
            Freshness::Immutable,
            "Content-Encoding",
        ),
        (
            &[
                ("content-length", "1"),
                ("vary", "Accept-Encoding, User-Agent"),
            ],
            Freshness::Immutable,
            "varies",
        ),
    ];
    for (h, f, why) in cases {
        let err = storable(ok, &headers(h), f, 1 << 20).unwrap_err();
        assert!(err.contains(why), "{h:?}: {err}");
    }
    let vary_ae = [("content-length", "1"), ("vary", "accept-encoding")];
    assert_eq!(
        storable(ok, &headers(&vary_ae), Freshness::Immutable, 1 << 20),
        Ok(Some(1))
    );
    let partial = StatusCode::PARTIAL_CONTENT;
    assert!(storable(partial, &headers(&base), Freshness::Immutable, 1 << 20).is_err());
    assert!(forces_revalidation(&headers(&[(
        "cache-control",
        "No-Cache"
    )])));
}
