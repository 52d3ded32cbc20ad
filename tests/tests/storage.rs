//! Redirects to object storage: the upstream in object-storage mode answers
//! every content request with a `302 no-store` to a presigned URL on a
//! second TLS origin, which the proxy follows itself, never with the
//! credentials, and never letting the presigned query out.

use bytes::Bytes;
use e2e::client::{get, send, Got};
use e2e::storage::Storage;
use e2e::upstream::{raw_header, Content, RawUpstream, Versions};
use e2e::{leak, metric, upstream_keys, Setup};
use std::sync::Arc;

const FILE: &str = "/pulp/content/debian/dists/bookworm/Release";

/// A proxy whose upstream redirects to a storage it may reach (listed by
/// name), with `extra` upstream keys.
async fn start(extra: &str) -> (Setup, Storage) {
    let keys = format!("redirect_hosts = [\"{}\"]\n{extra}", Storage::HOST);
    let s = Setup::start_with(Versions::Both, "", upstream_keys(&keys)).await;
    let storage = s.upstream.with_storage(s.ca.leaf()).await;
    (s, storage)
}

/// The presigned parts the storage saw, as forbidden strings for the leak
/// scan, plus the parameter names themselves.
fn signatures(storage: &Storage) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![
        ("X-Amz-Signature".to_string(), b"X-Amz-Signature".to_vec()),
        ("X-Amz-Credential".to_string(), b"X-Amz-Credential".to_vec()),
    ];
    for r in storage.requests() {
        if let Some(q) = r.target.split_once('?').map(|(_, q)| q.to_string()) {
            for kv in q.split('&') {
                if let Some(sig) = kv.strip_prefix("X-Amz-Signature=") {
                    out.push(("a presigned signature".into(), sig.as_bytes().to_vec()));
                }
            }
            out.push(("a presigned query".into(), q.into_bytes()));
        }
    }
    out
}

/// No credential and no presigned part in any response or log line, or in
/// the metrics.
async fn assert_no_storage_leaks(s: &Setup, storage: &Storage, got: &[&Got]) {
    let forbidden = signatures(storage);
    assert!(forbidden.len() > 2, "the storage saw no presigned request");
    for g in got {
        let text = format!("{:?}{}", g.headers, String::from_utf8_lossy(&g.body));
        leak::assert_lacks("a response", text.as_bytes(), &forbidden);
    }
    let metrics = get(s.proxy.addr, "/metrics").await;
    leak::assert_lacks("the metrics", &metrics.body, &forbidden);
    leak::assert_lacks("the proxy's log", s.proxy.log_text().as_bytes(), &forbidden);
}

/// Every storage request carried no `Authorization` and no header but
/// `Host` and the listed client headers.
fn assert_storage_requests_clean(storage: &Storage) {
    for r in storage.requests() {
        assert!(r.header("authorization").is_empty(), "{r:?}");
        for (name, _) in &r.headers {
            assert!(
                [
                    "host",
                    "range",
                    "if-range",
                    "if-none-match",
                    "if-modified-since"
                ]
                .contains(&name.as_str()),
                "storage got {name}"
            );
        }
    }
}

#[tokio::test]
async fn content_comes_through_the_redirect_without_credentials() {
    let (s, storage) = start("").await;
    let data = Bytes::from_static(b"Origin: Debian\nSuite: bookworm\n");
    s.upstream.put(FILE, Content::Bytes(data.clone()));
    let got = get(s.proxy.addr, FILE).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, data);
    assert!(!got.headers.contains_key("location"));
    assert_eq!(got.headers["etag"], "\"storage-1\"");
    assert_eq!(s.upstream.count(FILE), 1);
    let reqs = storage.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "GET");
    assert!(reqs[0].target.starts_with(&format!("{FILE}?")));
    assert_storage_requests_clean(&storage);
    let line = s.proxy.wait_for_log("storage=localhost").await;
    assert!(line.contains("hops=1"), "{line}");
    let m = get(s.proxy.addr, "/metrics").await;
    let m = String::from_utf8_lossy(&m.body).into_owned();
    assert_eq!(
        metric(
            &m,
            "pulp_auth_proxy_redirects_followed_total{host=\"localhost\"}"
        ),
        1.0
    );
    assert_no_storage_leaks(&s, &storage, &[&got]).await;
    s.assert_no_leaks();
}

#[tokio::test]
async fn head_follows_a_head_signed_url() {
    let (s, storage) = start("").await;
    s.upstream
        .put(FILE, Content::Bytes(Bytes::from_static(b"0123456789")));
    let got = send(s.proxy.addr, "HEAD", FILE, &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.headers["content-length"], "10");
    let reqs = storage.requests();
    assert_eq!(reqs.len(), 1);
    // The storage checks the signature against the method: a GET-signed
    // URL would have been refused.
    assert_eq!(reqs[0].method, "HEAD");
    assert_no_storage_leaks(&s, &storage, &[&got]).await;
}

#[tokio::test]
async fn range_and_conditionals_reach_the_final_hop() {
    let (s, storage) = start("").await;
    s.upstream.put(
        FILE,
        Content::Bytes(Bytes::from_static(b"0123456789abcdef")),
    );
    let part = send(s.proxy.addr, "GET", FILE, &[("range", "bytes=2-5")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(&part.body[..], b"2345");
    let same = send(
        s.proxy.addr,
        "GET",
        FILE,
        &[("if-none-match", "\"storage-1\"")],
    )
    .await;
    assert_eq!(same.status, 304);
    let reqs = storage.requests();
    assert_eq!(reqs[0].header("range"), vec!["bytes=2-5"]);
    assert_eq!(reqs[1].header("if-none-match"), vec!["\"storage-1\""]);
    // The upstream's own validator is answered by the upstream, as Pulp
    // does: no storage hop.
    let pulp = send(s.proxy.addr, "GET", FILE, &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(pulp.status, 304);
    assert_eq!(storage.requests().len(), 2);
    assert_storage_requests_clean(&storage);
    assert_no_storage_leaks(&s, &storage, &[&part, &same, &pulp]).await;
}

#[tokio::test]
async fn an_expired_signature_is_asked_for_again_once() {
    let (s, storage) = start("").await;
    s.upstream
        .put(FILE, Content::Bytes(Bytes::from_static(b"data")));
    storage.expire_next(1);
    let got = get(s.proxy.addr, FILE).await;
    assert_eq!(got.status, 200);
    assert_eq!(&got.body[..], b"data");
    assert_eq!(s.upstream.count(FILE), 2);
    assert_eq!(storage.requests().len(), 2);
    // Every URL the upstream signs is now past its lifetime: one retry,
    // then a 502 that says so.
    storage.advance_clock(3600);
    let refused = get(s.proxy.addr, FILE).await;
    assert_eq!(refused.status, 502);
    assert_eq!(s.upstream.count(FILE), 4);
    assert_eq!(storage.requests().len(), 4);
    let line = s.proxy.wait_for_log("kind=storage-refused").await;
    assert!(line.contains("localhost"), "{line}");
    assert_no_storage_leaks(&s, &storage, &[&got, &refused]).await;
}

#[tokio::test]
async fn a_host_outside_redirect_hosts_is_refused() {
    let s = Setup::start_with(
        Versions::Both,
        "",
        upstream_keys("redirect_hosts = [\"objects.example.test\"]"),
    )
    .await;
    let storage = s.upstream.with_storage(s.ca.leaf()).await;
    s.upstream
        .put(FILE, Content::Bytes(Bytes::from_static(b"x")));
    let got = get(s.proxy.addr, FILE).await;
    assert_eq!(got.status, 502);
    assert!(storage.requests().is_empty());
    let line = s.proxy.wait_for_log("kind=storage-host").await;
    assert!(
        line.contains("localhost") && line.contains("redirect_hosts"),
        "{line}"
    );
    leak::assert_lacks(
        "the proxy's log",
        s.proxy.log_text().as_bytes(),
        &[("X-Amz-Signature".into(), b"X-Amz-Signature".to_vec())],
    );
}

#[tokio::test]
async fn private_addresses_are_refused_unless_listed() {
    // No redirect_hosts: `localhost` resolves to loopback.
    let s = Setup::start().await;
    let storage = s.upstream.with_storage(s.ca.leaf()).await;
    s.upstream
        .put(FILE, Content::Bytes(Bytes::from_static(b"x")));
    let got = get(s.proxy.addr, FILE).await;
    assert_eq!(got.status, 502);
    s.proxy.wait_for_log("kind=storage-host").await;
    // An address literal, too.
    s.upstream.put(
        "/pulp/content/literal",
        Content::Redirect(
            http::StatusCode::FOUND,
            format!("https://127.0.0.1:{}{FILE}", storage.addr.port()),
        ),
    );
    let literal = get(s.proxy.addr, "/pulp/content/literal").await;
    assert_eq!(literal.status, 502);
    s.proxy.wait_for_log_count("kind=storage-host", 2).await;
    assert!(storage.requests().is_empty());
}

/// A storage that answers every request with a redirect `next(path)` on
/// itself, one per connection (said, so the proxy never reuses one the
/// stand-in is closing).
async fn redirecting_storage(s: &Setup, next: fn(&str) -> String) -> RawUpstream {
    let framer = Arc::new(move |head: &str| {
        let host = raw_header(head, "host").unwrap_or("").to_string();
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        vec![format!(
            "HTTP/1.1 302 Found\r\nLocation: https://{host}{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            next(&path)
        )
        .into_bytes()]
    });
    RawUpstream::start(s.ca.leaf(), framer).await
}

#[tokio::test]
async fn loops_and_too_many_hops_are_refused() {
    let s = Setup::start_with(
        Versions::Both,
        "",
        upstream_keys("redirect_hosts = [\"localhost\"]\nmax_redirects = 3"),
    )
    .await;
    let looping = redirecting_storage(&s, |p| p.to_string()).await;
    let onward = redirecting_storage(&s, |p| format!("{p}/more")).await;
    for (path, storage) in [
        ("/pulp/content/loop", &looping),
        ("/pulp/content/far", &onward),
    ] {
        s.upstream.put(
            path,
            Content::Redirect(
                http::StatusCode::FOUND,
                format!("https://localhost:{}/start", storage.addr.port()),
            ),
        );
        let got = get(s.proxy.addr, path).await;
        assert_eq!(got.status, 502, "{path}");
    }
    let log = s.proxy.wait_for_log("the redirects loop").await;
    assert!(log.contains("kind=redirects"), "{log}");
    s.proxy
        .wait_for_log("more redirects than upstream.max_redirects")
        .await;
    use std::sync::atomic::Ordering;
    // The loop is seen on its second hop; the hop limit stops at three.
    assert_eq!(looping.answered.load(Ordering::SeqCst), 1);
    assert_eq!(onward.answered.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_bad_storage_certificate_is_a_502_that_says_so() {
    let (s, _) = start("").await;
    let storage = s.upstream.with_storage(e2e::pki::self_signed()).await;
    s.upstream
        .put(FILE, Content::Bytes(Bytes::from_static(b"x")));
    let got = get(s.proxy.addr, FILE).await;
    assert_eq!(got.status, 502);
    let line = s.proxy.wait_for_log("kind=storage-bad-certificate").await;
    assert!(line.contains("localhost"), "{line}");
    assert!(storage.requests().is_empty());
}

#[tokio::test]
async fn the_cache_stores_and_revalidates_through_redirects() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let keys = format!("redirect_hosts = [\"{}\"]\n", Storage::HOST);
    let cache = e2e::cache_section(&dir, "64 MiB");
    let s = Setup::start_with(Versions::Both, "", |c| {
        upstream_keys(&keys)(c);
        cache(c);
    })
    .await;
    let storage = s.upstream.with_storage(s.ca.leaf()).await;
    let deb = "/pulp/content/debian/pool/main/h/hello/hello_2.10-3_amd64.deb";
    s.upstream.put(
        FILE,
        Content::Bytes(Bytes::from_static(b"Suite: bookworm\n")),
    );
    s.upstream
        .put(deb, Content::Bytes(Bytes::from_static(b"!<arch>\ndeb")));

    // A miss: the 302 (no-store) is followed and the storage's 200 stored
    // under the upstream's URL.
    let first = get(s.proxy.addr, FILE).await;
    assert_eq!(first.status, 200);
    assert_eq!(&first.body[..], b"Suite: bookworm\n");
    let package = get(s.proxy.addr, deb).await;
    assert_eq!(package.status, 200);
    e2e::wait_for(
        std::time::Duration::from_secs(20),
        "two entries",
        || async { (std::fs::read_dir(&dir).unwrap().count() == 2).then_some(()) },
    )
    .await;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        leak::assert_lacks("a cache entry", &bytes, &signatures(&storage));
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("X-Amz-"), "a presigned URL in an entry");
    }

    // A package is content-addressed: no round trip at all.
    let (up, st) = (s.upstream.count(deb), storage.requests().len());
    assert_eq!(get(s.proxy.addr, deb).await.body, package.body);
    assert_eq!((s.upstream.count(deb), storage.requests().len()), (up, st));

    // The index is revalidated with the upstream's own ETag, and the
    // upstream's 304 answers it: the storage is not asked.
    let again = get(s.proxy.addr, FILE).await;
    assert_eq!(again.body, first.body);
    let asked = s.upstream.requests();
    let last = asked.iter().rev().find(|r| r.target == FILE).unwrap();
    assert_eq!(last.header("if-none-match"), ["\"v1\""]);
    assert_eq!(storage.requests().len(), st, "the upstream answered 304");

    // Changed: the upstream redirects again, and the storage hop carries
    // the storage's own validators, not the upstream's.
    s.upstream
        .put(FILE, Content::Bytes(Bytes::from_static(b"Suite: trixie\n")));
    let changed = get(s.proxy.addr, FILE).await;
    assert_eq!(&changed.body[..], b"Suite: trixie\n");
    let hop = storage.requests().pop().unwrap();
    assert_eq!(hop.header("if-none-match"), ["\"storage-1\""]);
    assert!(hop.header("authorization").is_empty());
    let log = s.proxy.log_text();
    let fields: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("path={FILE} ")))
        .filter_map(|l| l.split(" cache=").nth(1)?.split_whitespace().next())
        .collect();
    assert_eq!(fields, ["miss", "revalidated", "changed"]);
    assert_storage_requests_clean(&storage);
    assert_no_storage_leaks(&s, &storage, &[&first, &again, &changed]).await;
    s.assert_no_leaks();
}
