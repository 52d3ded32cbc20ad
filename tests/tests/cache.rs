//! The read-through cache (`[cache]`) against the recording upstream: what
//! is served without a round-trip, what is revalidated, what is never
//! stored, coalescing, eviction order, and falling back to plain proxying
//! when the directory cannot be used. Mount namespaces (`unshare --mount`)
//! give read-only and full file systems without touching the host's.

use e2e::client::{get, get_hashed, pattern_sha256, raw, send};
use e2e::proxy::Proxy;
use e2e::upstream::{Content, Versions};
use e2e::{cache_section, leak, metric, Setup};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RPM: &str = "/pulp/content/rocky/Packages/h/hello-2.12-1.el9.x86_64.rpm";
const INRELEASE: &str = "/pulp/content/debian/dists/bookworm/InRelease";

/// A proxy with `[cache]` in `dir` (which it creates) of `max_size`.
async fn with_cache(dir: &Path, max_size: &str) -> Setup {
    Setup::start_with(Versions::Both, "", cache_section(dir, max_size)).await
}

fn bytes(len: usize, seed: u8) -> bytes::Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<_>>()
        .into()
}

async fn metrics(s: &Setup) -> String {
    String::from_utf8(get(s.proxy.addr, "/metrics").await.body.to_vec()).unwrap()
}

/// The `cache=` field of each access line for `path`, in order.
fn cache_fields(log: &str, path: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(&format!("path={path} ")))
        .filter_map(|l| l.split(" cache=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(|v| v.trim_matches('"').to_string())
        .collect()
}

/// Stops the proxy, runs `meanwhile`, starts it again on the same config.
async fn restart(s: &mut Setup, meanwhile: impl FnOnce()) {
    s.proxy.signal("TERM");
    assert!(s.proxy.wait(Duration::from_secs(10)).is_some());
    meanwhile();
    let config = s.scratch.path("config.toml");
    s.proxy = tokio::task::spawn_blocking(move || Proxy::start(&config, &[]))
        .await
        .unwrap();
}

/// Waits until `dir` holds `n` finished entries and no temporary file.
async fn wait_for_entries(dir: &Path, n: usize) {
    e2e::wait_for(Duration::from_secs(20), "the stored entries", || async {
        let files = stored_files(dir);
        let done = files
            .iter()
            .all(|p| !p.file_name().unwrap().to_string_lossy().starts_with("tmp-"));
        (done && files.len() == n).then_some(())
    })
    .await
}

fn stored_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

#[tokio::test]
async fn content_addressed_hits_skip_the_upstream_and_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let mut s = with_cache(&dir, "64 MiB").await;
    let body = bytes(200_000, 7);
    s.upstream.put(RPM, Content::Bytes(body.clone()));

    let first = get(s.proxy.addr, RPM).await;
    let second = get(s.proxy.addr, RPM).await;
    assert_eq!(first.status, 200);
    assert_eq!(second.status, 200);
    assert_eq!(
        (first.body.clone(), second.body.clone()),
        (body.clone(), body.clone())
    );
    assert_eq!(second.headers["etag"], "\"v1\"");
    assert!(
        !first.headers.contains_key("age"),
        "fetched for this request"
    );
    let age: u64 = second.headers["age"].to_str().unwrap().parse().unwrap();
    assert!(age < 60, "{age}");
    assert_eq!(
        s.upstream.count(RPM),
        1,
        "the hit must not reach the upstream"
    );

    // Range, unsatisfiable range and the client's own validator, from disk.
    let part = send(s.proxy.addr, "GET", RPM, &[("range", "bytes=1000-1999")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.headers["content-range"], "bytes 1000-1999/200000");
    assert_eq!(part.body, body.slice(1000..2000));
    let tail = send(s.proxy.addr, "GET", RPM, &[("range", "bytes=-10")]).await;
    assert_eq!(tail.body, body.slice(199_990..));
    let beyond = send(s.proxy.addr, "GET", RPM, &[("range", "bytes=200000-")]).await;
    assert_eq!(beyond.status, 416);
    assert_eq!(beyond.headers["content-range"], "bytes */200000");
    let unchanged = send(s.proxy.addr, "GET", RPM, &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(unchanged.status, 304);
    assert!(unchanged.body.is_empty());
    assert_eq!(s.upstream.count(RPM), 1);

    let text = metrics(&s).await;
    let p = "pulp_auth_proxy_";
    assert_eq!(metric(&text, &format!("{p}cache_misses_total")), 1.0);
    assert_eq!(metric(&text, &format!("{p}cache_hits_total")), 5.0);
    assert_eq!(
        metric(&text, &format!("{p}cache_served_bytes_total")),
        (200_000 + 1000 + 10) as f64
    );
    assert_eq!(metric(&text, &format!("{p}cache_entries")), 1.0);
    assert_eq!(
        cache_fields(&s.proxy.log_text(), RPM),
        ["miss", "hit", "hit", "hit", "hit", "hit"]
    );

    // 0700 directory, 0600 entries, and nothing of the credentials inside.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    let files = stored_files(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(mode(&files[0]), 0o600);
    leak::assert_clean("a cache entry", &std::fs::read(&files[0]).unwrap());

    // A new process finds the entry on disk.
    restart(&mut s, || {}).await;
    assert_eq!(get(s.proxy.addr, RPM).await.body, body);
    assert_eq!(s.upstream.count(RPM), 1);
    assert!(
        s.proxy.log_text().contains("entries=1"),
        "{}",
        s.proxy.log_text()
    );
    for g in [&first, &part, &unchanged] {
        s.saw(g);
    }
    s.assert_no_leaks();
}

#[tokio::test]
async fn other_hits_are_revalidated_and_changes_replace_the_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let s = with_cache(&dir, "64 MiB").await;
    s.upstream
        .put(INRELEASE, Content::Bytes("release one\n".into()));

    assert_eq!(get(s.proxy.addr, INRELEASE).await.body, "release one\n");
    let sent = s.upstream.body_bytes();
    let again = get(s.proxy.addr, INRELEASE).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, "release one\n");
    let reqs = s.upstream.requests();
    assert_eq!(reqs.len(), 2, "every hit asks the upstream");
    assert_eq!(reqs[1].header("if-none-match"), ["\"v1\""]);
    assert_eq!(reqs[1].header("if-modified-since").len(), 1);
    assert_eq!(s.upstream.body_bytes(), sent, "a 304 carries no body");

    // The upstream's content changes: the new body is served and stored.
    s.upstream
        .put(INRELEASE, Content::Bytes("release two\n".into()));
    assert_eq!(get(s.proxy.addr, INRELEASE).await.body, "release two\n");
    assert_eq!(get(s.proxy.addr, INRELEASE).await.body, "release two\n");
    assert_eq!(s.upstream.requests()[3].header("if-none-match"), ["\"v2\""]);

    // Gone upstream: the client sees the 404 and the entry goes.
    s.upstream.remove(INRELEASE);
    assert_eq!(get(s.proxy.addr, INRELEASE).await.status, 404);
    s.upstream
        .put(INRELEASE, Content::Bytes("release three\n".into()));
    assert_eq!(get(s.proxy.addr, INRELEASE).await.body, "release three\n");
    let last = s.upstream.requests().pop().unwrap();
    assert!(
        last.header("if-none-match").is_empty(),
        "a miss is unconditional"
    );

    assert_eq!(
        cache_fields(&s.proxy.log_text(), INRELEASE),
        [
            "miss",
            "revalidated",
            "changed",
            "revalidated",
            "gone",
            "miss"
        ]
    );

    // Emptied by hand while running: entries are fetched again and the
    // directory comes back, still 0700.
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(get(s.proxy.addr, INRELEASE).await.body, "release three\n");
    assert_eq!(get(s.proxy.addr, INRELEASE).await.body, "release three\n");
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let last = s.upstream.requests().pop().unwrap();
    assert_eq!(last.header("if-none-match"), ["\"v1\""]);
    assert!(s.proxy.log_text().contains("created it again"));

    let text = metrics(&s).await;
    let r = "pulp_auth_proxy_cache_revalidations_total";
    assert_eq!(
        metric(&text, &format!("{r}{{result=\"not_modified\"}}")),
        3.0
    );
    assert_eq!(metric(&text, &format!("{r}{{result=\"changed\"}}")), 1.0);
    assert_eq!(metric(&text, &format!("{r}{{result=\"gone\"}}")), 1.0);
    s.assert_no_leaks();
}

#[tokio::test]
async fn truncated_or_abandoned_transfers_are_never_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let s = with_cache(&dir, "64 MiB").await;
    let len = 1 << 20;
    s.upstream
        .put(RPM, Content::Truncate { len, sent: len / 4 });
    assert!(get_hashed(s.proxy.addr, RPM).await.is_err());

    s.upstream.put(RPM, Content::Pattern(len));
    let whole = get_hashed(s.proxy.addr, RPM).await.unwrap();
    assert_eq!(whole.2, pattern_sha256(len));
    assert_eq!(s.upstream.count(RPM), 2, "the broken transfer was not kept");
    assert_eq!(
        get_hashed(s.proxy.addr, RPM).await.unwrap().2,
        pattern_sha256(len)
    );
    assert_eq!(s.upstream.count(RPM), 2);

    // A client that leaves part way: the fill goes on at the upstream's
    // pace and is stored.
    let slow = "/pulp/content/rocky/Packages/s/slow-1-1.noarch.rpm";
    s.upstream.put(
        slow,
        Content::Slow {
            len,
            chunks: 4,
            delay: Duration::from_millis(300),
        },
    );
    let request = format!("GET {slow} HTTP/1.1\r\nHost: x\r\n\r\n");
    let part = raw(s.proxy.addr, request.as_bytes(), Duration::from_millis(150)).await;
    assert!(
        part.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&part[..64.min(part.len())])
    );
    assert!((part.len() as u64) < len);
    wait_for_entries(&dir, 2).await;
    assert_eq!(
        get_hashed(s.proxy.addr, slow).await.unwrap().2,
        pattern_sha256(len)
    );
    assert_eq!(
        s.upstream.count(slow),
        1,
        "the departed client's fill was kept"
    );

    // Only finished entries are in the directory; no temporary file stays.
    let names: Vec<_> = stored_files(&dir)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| !n.starts_with("tmp-")), "{names:?}");
    s.assert_no_leaks();
}

#[tokio::test]
async fn concurrent_misses_make_one_upstream_request() {
    let tmp = tempfile::tempdir().unwrap();
    let s = with_cache(&tmp.path().join("c"), "64 MiB").await;
    // A package (never revalidated) and an index (revalidated on hits):
    // either way the seven that waited get the one fetch's response.
    let deb = "/pulp/content/debian/pool/main/h/hello/hello_2.10-3_amd64.deb";
    let index = "/pulp/content/debian/dists/bookworm/main/binary-amd64/Packages.xz";
    let len = 512 * 1024;
    for (round, path) in [deb, index].into_iter().enumerate() {
        // The upstream holds the body until all eight clients are in.
        let (open, gate) = tokio::sync::watch::channel(false);
        s.upstream.put(path, Content::Gated { len, gate });
        let addr = s.proxy.addr;
        let clients: Vec<_> = (0..8)
            .map(|_| tokio::spawn(async move { get_hashed(addr, path).await }))
            .collect();
        let waiting = 7 * (round + 1);
        s.proxy
            .wait_for_log_count("following another request's fetch", waiting)
            .await;
        assert_eq!(s.upstream.count(path), 1);
        open.send(true).unwrap();
        for c in clients {
            let (status, n, sum) = c.await.unwrap().unwrap();
            assert_eq!((status.as_u16(), n), (200, len));
            assert_eq!(sum, pattern_sha256(len));
        }
        assert_eq!(
            s.upstream.count(path),
            1,
            "{path}: one fetch for eight clients"
        );
        let fields = cache_fields(&s.proxy.log_text(), path);
        assert_eq!(
            fields.iter().filter(|f| *f == "miss").count(),
            1,
            "{fields:?}"
        );
        assert_eq!(
            fields.iter().filter(|f| *f == "hit").count(),
            7,
            "{fields:?}"
        );
    }
    // Later requests for the index are revalidated as usual.
    assert_eq!(get(s.proxy.addr, index).await.body.len() as u64, len);
    assert_eq!(
        s.upstream
            .requests()
            .last()
            .unwrap()
            .header("if-none-match"),
        ["\"v1\""]
    );
    s.assert_no_leaks();
}

#[tokio::test]
async fn a_stalled_first_client_delays_nobody_and_its_fill_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let s = with_cache(&dir, "256 MiB").await;
    // Far more than the socket buffers hold.
    let len = 32 << 20;
    s.upstream.put(RPM, Content::Pattern(len));
    // The first client reads the head and a little body, then stops
    // reading and keeps its connection open.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut first = socket.connect(s.proxy.addr).await.unwrap();
    first
        .write_all(format!("GET {RPM} HTTP/1.1\r\nHost: p\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = first.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // A second client gets the whole file, promptly, and from the fill.
    let second = tokio::time::timeout(Duration::from_secs(20), get_hashed(s.proxy.addr, RPM))
        .await
        .expect("the second client waited for the stalled first one")
        .unwrap();
    assert_eq!((second.0.as_u16(), second.1), (200, len));
    assert_eq!(second.2, pattern_sha256(len));
    // The fill ran to the end at the upstream's pace and was stored,
    // while the first client still has not read it.
    wait_for_entries(&dir, 1).await;
    assert_eq!(
        get_hashed(s.proxy.addr, RPM).await.unwrap().2,
        pattern_sha256(len)
    );
    assert_eq!(s.upstream.count(RPM), 1);
    let fields = cache_fields(&s.proxy.log_text(), RPM);
    assert_eq!(fields, ["hit", "hit"], "the first is still on its way");
    drop(first);
    s.proxy.wait_for_log("cache=miss").await;
    s.assert_no_leaks();
}

#[tokio::test]
async fn a_fill_that_fails_aborts_every_follower_and_stores_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let s = with_cache(&dir, "64 MiB").await;
    let len = 1 << 20;
    let (open, gate) = tokio::sync::watch::channel(false);
    s.upstream.put(RPM, Content::GatedCut { len, gate });
    let addr = s.proxy.addr;
    let clients: Vec<_> = (0..3)
        .map(|_| tokio::spawn(async move { get_hashed(addr, RPM).await }))
        .collect();
    s.proxy
        .wait_for_log_count("following another request's fetch", 2)
        .await;
    assert_eq!(s.upstream.count(RPM), 1);
    // The upstream breaks mid-body: every transfer breaks with it.
    open.send(true).unwrap();
    for c in clients {
        let err = c.await.unwrap().unwrap_err();
        assert!(err.contains("body broke"), "{err}");
    }
    let log = s.proxy.log_text();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("request aborted") && l.contains("upstream body failed"))
            .count(),
        3,
        "{log}"
    );
    // Nothing stored, no temporary file left: the next request fetches.
    wait_for_entries(&dir, 0).await;
    s.upstream.put(RPM, Content::Pattern(len));
    assert_eq!(get_hashed(addr, RPM).await.unwrap().2, pattern_sha256(len));
    assert_eq!(s.upstream.count(RPM), 2);
    s.assert_no_leaks();
}

#[tokio::test]
async fn eviction_removes_the_least_recently_used_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let s = with_cache(&tmp.path().join("c"), "1 MiB").await;
    // Three 300 KiB entries fit in 1 MiB; a fourth does not.
    let path = |n: &str| format!("/pulp/content/rocky/Packages/{n}-1.0-1.noarch.rpm");
    for (i, n) in ["a", "b", "c", "d"].iter().enumerate() {
        s.upstream
            .put(&path(n), Content::Bytes(bytes(300 * 1024, i as u8)));
    }
    for n in ["a", "b", "c", "a", "d"] {
        assert_eq!(get(s.proxy.addr, &path(n)).await.status, 200);
    }
    // `a` was used after `b`, so `b` went when `d` arrived.
    for n in ["a", "c", "d"] {
        assert_eq!(get(s.proxy.addr, &path(n)).await.status, 200);
        assert_eq!(s.upstream.count(&path(n)), 1, "{n} should still be stored");
    }
    assert_eq!(get(s.proxy.addr, &path("b")).await.status, 200);
    assert_eq!(
        s.upstream.count(&path("b")),
        2,
        "b should have been evicted"
    );
    let text = metrics(&s).await;
    assert_eq!(metric(&text, "pulp_auth_proxy_cache_evictions_total"), 2.0);
    assert!(metric(&text, "pulp_auth_proxy_cache_stored_bytes") <= (1 << 20) as f64);
    s.assert_no_leaks();
}

/// A proxy whose cache directory is `dir` as prepared by `mount_script`
/// (run in a private mount namespace, so the host never sees the mount).
async fn in_mount_namespace(dir: &Path, mount_script: &str) -> Setup {
    let mut s = with_cache(dir, "64 MiB").await;
    s.proxy.signal("KILL");
    s.proxy.wait(Duration::from_secs(5));
    let config = s.scratch.path("config.toml");
    let script = format!("set -e; {mount_script}; exec \"$0\" \"$@\"");
    s.proxy = tokio::task::spawn_blocking(move || {
        Proxy::start_wrapped(
            &[
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
            ],
            &config,
            &[],
        )
    })
    .await
    .unwrap();
    s
}

#[tokio::test]
async fn unusable_directories_fall_back_to_plain_proxying() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ro");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let d = dir.display();
    // Root ignores mode bits; a read-only mount stops even root.
    let s = in_mount_namespace(
        &dir,
        &format!("mount --bind {d} {d}; mount -o remount,bind,ro {d}"),
    )
    .await;
    let log = s.proxy.log_text();
    assert!(
        log.contains("cache off: cannot write in") && log.contains("Read-only file system"),
        "{log}"
    );
    let body = bytes(50_000, 3);
    s.upstream.put(RPM, Content::Bytes(body.clone()));
    for _ in 0..2 {
        let got = get(s.proxy.addr, RPM).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.body, body);
    }
    assert_eq!(s.upstream.count(RPM), 2, "nothing was cached");
    s.assert_no_leaks();

    // A directory whose parent is missing: the same, with its own reason.
    let missing = tmp.path().join("no/such/dir");
    let s = with_cache(&missing, "64 MiB").await;
    assert!(
        s.proxy.log_text().contains("cache off: cannot create"),
        "{}",
        s.proxy.log_text()
    );
    s.upstream.put(RPM, Content::Bytes(body.clone()));
    assert_eq!(get(s.proxy.addr, RPM).await.body, body);
    s.assert_no_leaks();
}

#[tokio::test]
async fn a_full_directory_keeps_serving_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("small");
    std::fs::create_dir(&dir).unwrap();
    let d = dir.display();
    let s = in_mount_namespace(
        &dir,
        &format!("mount -t tmpfs -o size=256k,mode=0700 pap-cache {d}"),
    )
    .await;
    // Larger than the file system, smaller than max_size: the write fails
    // part way, the client still gets every byte.
    let len = 1 << 20;
    s.upstream.put(RPM, Content::Pattern(len));
    for _ in 0..2 {
        let (status, n, sum) = get_hashed(s.proxy.addr, RPM).await.unwrap();
        assert_eq!((status.as_u16(), n), (200, len));
        assert_eq!(sum, pattern_sha256(len));
    }
    assert_eq!(s.upstream.count(RPM), 2);
    let log = s.proxy.log_text();
    assert!(log.contains("No space left on device"), "{log}");
    // The failed write left no file behind, so a small entry still fits.
    let small = "/pulp/content/rocky/Packages/s/small-1-1.noarch.rpm";
    s.upstream.put(small, Content::Bytes(bytes(10_000, 9)));
    for _ in 0..2 {
        assert_eq!(get(s.proxy.addr, small).await.status, 200);
    }
    assert_eq!(s.upstream.count(small), 1);
    s.assert_no_leaks();
}

#[tokio::test]
async fn chunked_responses_are_stored_when_they_end_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let s = with_cache(&dir, "64 MiB").await;
    let len = 700_000;
    // Eight clients while the chunked body is held back: one fetch, the
    // rest follow a fill whose length nobody knows yet.
    let (open, gate) = tokio::sync::watch::channel(false);
    s.upstream.put(
        RPM,
        Content::Chunked {
            len,
            cut: false,
            gate: Some(gate),
        },
    );
    let addr = s.proxy.addr;
    let clients: Vec<_> = (0..8)
        .map(|_| tokio::spawn(async move { get_hashed(addr, RPM).await }))
        .collect();
    s.proxy
        .wait_for_log_count("following another request's fetch", 7)
        .await;
    open.send(true).unwrap();
    for c in clients {
        let (status, n, sum) = c.await.unwrap().unwrap();
        assert_eq!((status.as_u16(), n), (200, len));
        assert_eq!(sum, pattern_sha256(len));
    }
    wait_for_entries(&dir, 1).await;
    // Stored with the length the last chunk settled: served with it.
    let hit = get(s.proxy.addr, RPM).await;
    assert_eq!(hit.status, 200);
    assert_eq!(hit.headers["content-length"], len.to_string());
    assert_eq!(hit.body.len() as u64, len);
    assert_eq!(s.upstream.count(RPM), 1, "one fetch for ten requests");

    // A chunked body that breaks off is never stored, and its followers
    // see a broken transfer, never a short complete one.
    let cut = "/pulp/content/rocky/Packages/c/cut-1-1.noarch.rpm";
    let (open, gate) = tokio::sync::watch::channel(false);
    s.upstream.put(
        cut,
        Content::Chunked {
            len,
            cut: true,
            gate: Some(gate),
        },
    );
    let clients: Vec<_> = (0..3)
        .map(|_| tokio::spawn(async move { get_hashed(addr, cut).await }))
        .collect();
    s.proxy
        .wait_for_log_count("following another request's fetch", 9)
        .await;
    open.send(true).unwrap();
    for c in clients {
        let got = c.await.unwrap();
        assert!(got.is_err(), "{got:?}");
    }
    s.upstream.put(
        cut,
        Content::Chunked {
            len,
            cut: false,
            gate: None,
        },
    );
    assert_eq!(get_hashed(addr, cut).await.unwrap().2, pattern_sha256(len));
    assert_eq!(s.upstream.count(cut), 2, "the broken body was not kept");
    wait_for_entries(&dir, 2).await;
    s.assert_no_leaks();
}
