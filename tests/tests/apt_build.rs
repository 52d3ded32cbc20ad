//! The whole promise on real components: a real APT repository behind an
//! HTTPS Pulp stand-in that requires the credentials, the real proxy
//! binary deployed as operators run it, a real package manager fetching
//! through it, and the audit of what was built.

use e2e::docker::{ensure_daemon, Image};
use e2e::netns::Netns;
use e2e::proxy::{Proxy, Scratch};
use e2e::storage::Storage;
use e2e::upstream::Versions;
use e2e::{apt, cache_section, leak, upstream_keys, Setup, USERNAME};
use std::process::Command;

use apt::{dockerfile, REPO_PREFIX};

#[tokio::test(flavor = "multi_thread")]
async fn docker_build_installs_packages_through_the_proxy_on_loopback() {
    ensure_daemon();
    let repo = tokio::task::spawn_blocking(apt::repo).await.unwrap();
    let base = tokio::task::spawn_blocking(apt::base_image).await.unwrap();
    let mut s = Setup::start().await;
    s.upstream.serve_dir(REPO_PREFIX, &repo);
    let url = s.proxy.url();
    let pid = std::process::id();

    let (built, _) =
        tokio::task::block_in_place(|| apt::build_through(&s, base, &format!("pap-e2e-apt:{pid}")));
    let log = s.proxy.log_text();
    assert!(
        log.contains("path=/pulp/content/debian/pool/main/hello_"),
        "no package fetched through the proxy:\n{log}"
    );
    assert!(s
        .upstream
        .requests()
        .iter()
        .all(|r| r.header("authorization") == vec![e2e::basic_header()]));
    assert_record_matches_the_upstream(&s, &repo).await;

    // The image holds no credential; a control image that does is caught.
    let cfg = s.scratch.path("config.toml");
    let (code, text) = e2e::audit(&cfg, &built.tag);
    assert_eq!(code, 0, "{text}");
    let control = Image::build(
        &format!("pap-e2e-control:{pid}"),
        &format!("FROM {base}\nCOPY sources.list /etc/apt/sources.list\n"),
        &[("sources.list", format!(
            "deb [trusted=yes] http://{USERNAME}:fake%20pass%3A%40%2F%25%2B%20word@127.0.0.1:80{REPO_PREFIX} stable main\n"
        ).as_bytes())],
        &[],
    );
    let (code, text) = e2e::audit(&cfg, &control.tag);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("URL userinfo") && text.contains("/etc/apt/sources.list"),
        "{text}"
    );

    // Without the proxy the same build fails.
    s.proxy.signal("TERM");
    tokio::task::block_in_place(|| s.proxy.wait(std::time::Duration::from_secs(10)));
    let again = tokio::task::block_in_place(|| {
        Image::try_build(
            &format!("pap-e2e-apt-noproxy:{pid}"),
            &dockerfile(base, &url),
            &[],
            &[],
        )
    });
    assert!(again.is_err(), "the build succeeded without the proxy");
    s.assert_no_leaks();
}

#[test]
fn apt_in_a_namespace_through_the_bridge() {
    through_the_bridge(false);
}

/// The same with the upstream redirecting every content request to object
/// storage, as a production Pulp does: the proxy follows, apt sees only
/// the proxy's answers.
#[test]
fn apt_in_a_namespace_through_the_bridge_with_object_storage() {
    through_the_bridge(true);
}

fn through_the_bridge(storage: bool) {
    let repo = apt::repo();
    let rootfs = apt::rootfs_copy();
    let ns = Netns::new();
    let s = Scratch::new();

    // The Pulp stand-in inside the namespace, on its loopback (and its
    // storage on the namespace's `localhost`).
    let (upstream, up_addr) = apt::upstream_in(&ns, &s.path("ca.pem"), &repo, storage);
    let extra = if storage {
        "redirect_hosts = [\"localhost\"]"
    } else {
        ""
    };
    let cfg = s.write_config(&apt::bridge_config(
        &up_addr,
        &s.path("pw"),
        &s.path("ca.pem"),
        extra,
    ));
    let bin = e2e::bin("ci-builder");
    let up = ns.run(
        bin.to_str().unwrap(),
        &["--config", cfg.to_str().unwrap(), "net", "up"],
    );
    assert!(
        up.status.success(),
        "net up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let proxy = Proxy::start_in(Some(&ns.name), &cfg, &[]);
    assert_eq!(proxy.addr.to_string(), "192.168.33.3:80");

    apt::install_in_chroot(&ns, rootfs.path(), || proxy.log_text());
    let log = proxy.log_text();
    assert!(
        log.contains("peer=192.168.33.3:")
            && log.contains("path=/pulp/content/debian/pool/main/hello_"),
        "{log}"
    );
    leak::assert_clean("the proxy's log", log.as_bytes());
    if storage {
        assert_followed_everything(&log);
    }
    drop(proxy);
    drop(upstream);
    let down = ns.run(
        bin.to_str().unwrap(),
        &["--config", cfg.to_str().unwrap(), "net", "down"],
    );
    assert!(
        down.status.success(),
        "net down: {}",
        String::from_utf8_lossy(&down.stderr)
    );
}

/// The proxy's fetch record of the build is what the upstream itself saw
/// (each request under the repository, once, without its query), and each
/// complete body's sha256 is the repository file's.
async fn assert_record_matches_the_upstream(s: &Setup, repo: &std::path::Path) {
    use sha2::{Digest, Sha256};
    let mut seen: Vec<String> = s
        .upstream
        .requests()
        .iter()
        .filter(|r| r.target.starts_with(REPO_PREFIX))
        .map(|r| format!("{} {}", r.method, r.target.split('?').next().unwrap()))
        .collect();
    seen.sort();
    let records = e2e::wait_for(
        std::time::Duration::from_secs(10),
        "the fetch record of every upstream request",
        || async {
            let got = e2e::client::get(s.proxy.addr, "/fetches").await;
            let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&got.body)
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            (lines.len() >= seen.len()).then_some(lines)
        },
    )
    .await;
    let mut recorded: Vec<String> = records
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["method"].as_str().unwrap(),
                r["path"].as_str().unwrap()
            )
        })
        .collect();
    recorded.sort();
    assert_eq!(recorded, seen, "the record and the upstream's requests");
    let mut packages = 0;
    for r in records
        .iter()
        .filter(|r| r["status"] == 200 && r["method"] == "GET")
    {
        let path = r["path"].as_str().unwrap();
        // The record keeps the path as forwarded, percent-encoded.
        let rel = e2e::upstream::percent_decode(path.strip_prefix(REPO_PREFIX).unwrap());
        let file = repo.join(rel.trim_start_matches('/'));
        let data =
            std::fs::read(&file).unwrap_or_else(|e| panic!("{path} as {}: {e}", file.display()));
        let sha: String = Sha256::digest(data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(r["sha256"], sha, "{path}");
        packages += usize::from(path.ends_with(".deb"));
    }
    assert!(packages > 0, "no package in the record: {records:?}");
}

/// The cache's promise on a real package manager: a second, identical
/// build costs the upstream at most 5% of the first one's bytes.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_apt_build_is_served_from_the_cache() {
    ensure_daemon();
    let repo = tokio::task::spawn_blocking(apt::repo).await.unwrap();
    let base = tokio::task::spawn_blocking(apt::base_image).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let s = Setup::start_with(Versions::Both, "", cache_section(&dir, "256 MiB")).await;
    s.upstream.serve_dir(REPO_PREFIX, &repo);
    let pid = std::process::id();
    let (_, first) = tokio::task::block_in_place(|| {
        apt::build_through(&s, base, &format!("pap-e2e-cached-1:{pid}"))
    });
    let (_, second) = tokio::task::block_in_place(|| {
        apt::build_through(&s, base, &format!("pap-e2e-cached-2:{pid}"))
    });
    assert!(first.upstream_bytes > 100_000, "{first:?}");
    assert!(
        second.upstream_bytes * 20 <= first.upstream_bytes,
        "second build cost the upstream {} bytes, first {}",
        second.upstream_bytes,
        first.upstream_bytes
    );
    let log = s.proxy.log_text();
    let hits = log
        .lines()
        .filter(|l| l.contains("path=/pulp/content/debian/pool/main/") && l.contains("cache=hit"))
        .count();
    let packages = std::fs::read_dir(repo.join("pool/main")).unwrap().count();
    assert_eq!(
        hits, packages,
        "every package of the second build from disk:\n{log}"
    );
    for entry in std::fs::read_dir(&dir).unwrap() {
        leak::assert_clean(
            "a cache entry",
            &std::fs::read(entry.unwrap().path()).unwrap(),
        );
    }
    s.assert_no_leaks();
}

/// Every content request apt made got the proxy's own answer, never a
/// redirect, and some came through the storage; nothing of a presigned
/// URL is in the log.
fn assert_followed_everything(log: &str) {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" path=/pulp/content/"))
        .collect();
    assert!(!lines.is_empty(), "{log}");
    for l in &lines {
        for status in [301, 302, 303, 307, 308] {
            assert!(
                !l.contains(&format!(" status={status} ")),
                "a redirect reached apt: {l}"
            );
        }
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("storage=localhost") && l.contains("hops=1")),
        "{log}"
    );
    assert!(
        !log.contains("X-Amz-"),
        "a presigned URL in the proxy's log"
    );
}

/// Files of `image` that hold `needle`, read by `grep` inside it.
fn files_with(image: &str, needle: &str) -> std::collections::BTreeSet<String> {
    let out = e2e::output(Command::new("docker").args([
        "run",
        "--rm",
        "--network",
        "none",
        image,
        "grep",
        "-rl",
        "--exclude-dir=proc",
        "--exclude-dir=sys",
        "--exclude-dir=dev",
        needle,
        "/",
    ]));
    // grep: 0 found, 1 none; anything else is the check failing.
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "grep in {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The APT build against an upstream that redirects every content
/// request to object storage, as a production Pulp does: with the cache
/// off, then twice with it on. Prints the figures it measured.
#[tokio::test(flavor = "multi_thread")]
async fn apt_builds_through_object_storage_redirects_with_the_cache_off_and_on() {
    ensure_daemon();
    let repo = tokio::task::spawn_blocking(apt::repo).await.unwrap();
    let base = tokio::task::spawn_blocking(apt::base_image).await.unwrap();
    let keys = format!("redirect_hosts = [\"{}\"]", Storage::HOST);
    let pid = std::process::id();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let mut runs = Vec::new();
    let mut images = Vec::new();
    for (cached, builds) in [(false, 1), (true, 2)] {
        let cache = cache_section(&dir, "256 MiB");
        let s = Setup::start_with(Versions::Both, "", |c| {
            upstream_keys(&keys)(c);
            if cached {
                cache(c);
            }
        })
        .await;
        let storage = s.upstream.with_storage(s.ca.leaf()).await;
        s.upstream.serve_dir(REPO_PREFIX, &repo);
        for n in 0..builds {
            let before = storage.body_bytes();
            let tag = format!("pap-e2e-storage-{cached}-{n}:{pid}");
            let (image, run) = tokio::task::block_in_place(|| apt::build_through(&s, base, &tag));
            let stored = storage.body_bytes() - before;
            eprintln!(
                "storage mode, cache {}, build {}: {:.1} s, upstream {} body bytes, storage {} body bytes",
                if cached { "on" } else { "off" },
                n + 1,
                run.secs,
                run.upstream_bytes,
                stored
            );
            runs.push((cached, run, stored));
            images.push(image);
        }
        let log = s.proxy.log_text();
        assert_followed_everything(&log);
        for r in storage.requests() {
            assert!(r.header("authorization").is_empty(), "{r:?}");
        }
        assert!(s
            .upstream
            .requests()
            .iter()
            .all(|r| r.header("authorization") == vec![e2e::basic_header()]));
        if cached {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let bytes = std::fs::read(entry.unwrap().path()).unwrap();
                leak::assert_clean("a cache entry", &bytes);
                assert!(
                    !bytes.windows(6).any(|w| w == b"X-Amz-"),
                    "a presigned URL in a cache entry"
                );
            }
        }
        let cfg = s.scratch.path("config.toml");
        for image in &images {
            let (code, text) = e2e::audit(&cfg, &image.tag);
            assert_eq!(code, 0, "{text}");
        }
        s.assert_no_leaks();
    }
    let (_, first, first_stored) = runs[1];
    let (_, second, second_stored) = runs[2];
    assert!(first_stored > 100_000, "{first:?} {first_stored}");
    assert!(
        (second_stored + second.upstream_bytes) * 20 <= first_stored + first.upstream_bytes,
        "the second cached build cost {second_stored} storage bytes, the first {first_stored}"
    );
    // No file the build added holds anything of a presigned URL.
    let in_base = files_with(base, "X-Amz-");
    for image in &images {
        let added: Vec<_> = files_with(&image.tag, "X-Amz-")
            .difference(&in_base)
            .cloned()
            .collect();
        assert!(added.is_empty(), "{}: {added:?}", image.tag);
    }
}
