//! The tier against a real Pulp (`e2e::pulp`): pulpcore with the deb plugin,
//! content synced in and published behind an RBAC content guard, the real
//! proxy in front of it, and a real apt-get in `docker build` installing
//! through the proxy. What a stand-in cannot show: that Pulp's own answers
//! (403 for refused credentials, its ETags and Cache-Control) work with the
//! proxy and its cache.
//!
//! Timings go to stderr (`cargo test -p e2e --test e2e pulp -- --nocapture`).

use e2e::docker::{ensure_daemon, Image};
use e2e::netns::Netns;
use e2e::pki::TestCa;
use e2e::proxy::{Proxy, Scratch};
use e2e::pulp::{Content, Pulp, Storage};
use e2e::{apt, leak, rpm};
use std::process::Command;
use std::time::Instant;

/// One `docker build` through the proxy: its wall time and what it cost
/// Pulp, in bytes on the wire.
#[derive(Debug)]
struct Run {
    secs: f64,
    pulp_bytes: u64,
    /// S3 mode: bytes the object storage sent.
    storage_bytes: u64,
}

fn build_through(pulp: &Pulp, proxy: &Proxy, base: &str, tag: &str) -> (Image, Run) {
    build_from(pulp, proxy, &apt::dockerfile(base, &proxy.url()), tag)
}

/// Like [`build_through`], from the structured publication (Pulp's own
/// `dists/` and `pool/` layout) instead of the verbatim one.
fn build_structured(pulp: &Pulp, proxy: &Proxy, base: &str, tag: &str) -> (Image, Run) {
    let verbatim = format!("{}{} stable", proxy.url(), apt::REPO_PREFIX);
    let structured = format!("{}/pulp/content/debian-structured stable", proxy.url());
    let dockerfile = apt::dockerfile(base, &proxy.url());
    assert!(dockerfile.contains(&verbatim), "{dockerfile}");
    build_from(
        pulp,
        proxy,
        &dockerfile.replace(&verbatim, &structured),
        tag,
    )
}

fn build_from(pulp: &Pulp, proxy: &Proxy, dockerfile: &str, tag: &str) -> (Image, Run) {
    let before = pulp.bytes_sent();
    let stored = pulp.storage_bytes_sent().unwrap_or(0);
    let started = Instant::now();
    let built = Image::try_build(tag, dockerfile, &[], &[]);
    let secs = started.elapsed().as_secs_f64();
    let image = built.unwrap_or_else(|log| {
        panic!(
            "the build through the proxy to Pulp failed:\n{log}\nproxy log:\n{}",
            proxy.log_text()
        )
    });
    let run = Run {
        secs,
        pulp_bytes: pulp.bytes_sent() - before,
        storage_bytes: pulp.storage_bytes_sent().unwrap_or(0) - stored,
    };
    (image, run)
}

fn start_proxy(pulp: &Pulp, scratch: &Scratch, cache: Option<&std::path::Path>) -> Proxy {
    let config = pulp.proxy_config(&scratch.path("pw"), cache);
    Proxy::start(&scratch.write_config(&config), &[])
}

/// Every request Pulp's content app saw after its first `since` log lines
/// (the test's own requests) carried the proxy's credentials, and none was
/// refused: each was answered with content, or with 404 for the
/// signatures apt looks for first and an unsigned repository lacks.
fn assert_pulp_saw_only_the_proxy(pulp: &Pulp, since: usize) {
    // On S3 every content answer is a redirect to the storage.
    let redirected = pulp.storage_url().is_some();
    let log = pulp.access_log();
    assert!(
        log.len() > since,
        "Pulp's content app logged no request from the proxy"
    );
    let expected = e2e::basic_header();
    for line in &log[since..] {
        assert!(
            line.authorization.as_deref() == Some(expected.as_str()),
            "Pulp saw a request without the proxy's credentials: {}",
            line.request
        );
        assert!(
            matches!(line.status, 200 | 206 | 304)
                || (redirected && line.status == 302)
                || (line.status == 404
                    && (line.request.contains("/InRelease ")
                        || line.request.contains("/Release.gpg "))),
            "Pulp answered {} to {}",
            line.status,
            line.request
        );
    }
}

/// One dnf install through the proxy into a fresh root: its wall time and
/// what it cost Pulp.
fn dnf_through(pulp: &Pulp, proxy: &Proxy) -> Run {
    let before = pulp.bytes_sent();
    let stored = pulp.storage_bytes_sent().unwrap_or(0);
    let started = Instant::now();
    let baseurl = format!("{}/pulp/content/rpm/", proxy.url());
    let (_root, text) = rpm::dnf_install(None, &baseurl);
    leak::assert_clean("dnf's output", text.as_bytes());
    assert!(!text.contains("X-Amz-"), "dnf saw a presigned URL:\n{text}");
    Run {
        secs: started.elapsed().as_secs_f64(),
        pulp_bytes: pulp.bytes_sent() - before,
        storage_bytes: pulp.storage_bytes_sent().unwrap_or(0) - stored,
    }
}

fn report(what: &str, run: &Run) {
    eprintln!(
        "{what}: {:.1} s, {} bytes from Pulp, {} from the storage",
        run.secs, run.pulp_bytes, run.storage_bytes
    );
}

/// The second of two identical runs through a caching proxy costs Pulp,
/// and the storage behind it, at most 5% of the first one's bytes.
fn assert_cached(what: &str, first: &Run, second: &Run, proxy: &Proxy) {
    let (a, b) = (
        first.pulp_bytes + first.storage_bytes,
        second.pulp_bytes + second.storage_bytes,
    );
    assert!(a > 100_000, "{what}: {first:?}");
    assert!(
        b * 20 <= a,
        "{what}: the second cached run cost {second:?}, the first {first:?}:\n{}",
        proxy.log_text()
    );
}

/// No redirect reached a client: the proxy followed each one, and its log
/// holds nothing of a presigned URL.
fn assert_followed_everything(proxy: &Proxy) {
    let log = proxy.log_text();
    for line in log.lines().filter(|l| l.contains(" path=/pulp/content/")) {
        for status in [301, 302, 303, 307, 308] {
            assert!(
                !line.contains(&format!(" status={status} ")),
                "a redirect reached the client: {line}"
            );
        }
    }
    assert!(
        log.contains(" storage=127.0.0.1 "),
        "nothing followed:\n{log}"
    );
    assert!(
        !log.contains("X-Amz-"),
        "a presigned URL in the proxy's log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn apt_and_dnf_install_from_a_real_pulp_through_the_proxy_cache_off_and_on() {
    ensure_daemon();
    let deb_repo = tokio::task::spawn_blocking(apt::repo).await.unwrap();
    let rpm_repo = tokio::task::spawn_blocking(rpm::repo).await.unwrap();
    let base = tokio::task::spawn_blocking(apt::base_image).await.unwrap();
    let ca = TestCa::new();
    let pulp = tokio::task::block_in_place(|| {
        Pulp::start(
            &ca,
            Storage::Filesystem,
            Content {
                deb: Some(&deb_repo),
                rpm: Some(&rpm_repo),
                netns: None,
                mirrors: &[],
            },
        )
    });
    eprintln!("pulp (filesystem) start: {:?}", pulp.timings);
    assert_eq!(pulp.distributions["deb_verbatim"], "debian");
    assert_eq!(pulp.distributions["rpm"], "rpm");
    let scratch = Scratch::new();
    let pid = std::process::id();

    // Cache off.
    let proxy = start_proxy(&pulp, &scratch, None);
    let (built, off) = tokio::task::block_in_place(|| {
        build_through(&pulp, &proxy, base, &format!("pap-e2e-pulp-apt:{pid}"))
    });
    report("apt, cache off", &off);
    let log = proxy.log_text();
    assert!(
        log.contains("path=/pulp/content/debian/pool/main/hello_"),
        "no package fetched through the proxy:\n{log}"
    );
    let t = Instant::now();
    let (code, text) =
        tokio::task::block_in_place(|| e2e::audit(&scratch.path("config.toml"), &built.tag));
    assert_eq!(
        code, 0,
        "the audit failed the image built through Pulp:\n{text}"
    );
    leak::assert_clean("the audit's output", text.as_bytes());
    eprintln!("audit of the image: {:.1} s", t.elapsed().as_secs_f64());
    let off = tokio::task::block_in_place(|| dnf_through(&pulp, &proxy));
    report("dnf, cache off", &off);
    let (_, structured) = tokio::task::block_in_place(|| {
        build_structured(
            &pulp,
            &proxy,
            base,
            &format!("pap-e2e-pulp-structured:{pid}"),
        )
    });
    report(
        "apt from the structured publication, cache off",
        &structured,
    );
    assert!(
        proxy
            .log_text()
            .contains("path=/pulp/content/debian-structured/pool/main/h/hello/hello_"),
        "no package fetched from the structured publication:\n{}",
        proxy.log_text()
    );
    assert!(
        proxy
            .log_text()
            .contains("path=/pulp/content/rpm/Packages/p/pap-data-1.0-1.noarch.rpm"),
        "no RPM fetched through the proxy:\n{}",
        proxy.log_text()
    );
    assert_pulp_saw_only_the_proxy(&pulp, 0);
    drop(proxy);

    // Cache on.
    let cache = scratch.path("cache");
    let proxy = start_proxy(&pulp, &scratch, Some(&cache));
    let (_, first) = tokio::task::block_in_place(|| {
        build_through(&pulp, &proxy, base, &format!("pap-e2e-pulp-cached-1:{pid}"))
    });
    let (_, second) = tokio::task::block_in_place(|| {
        build_through(&pulp, &proxy, base, &format!("pap-e2e-pulp-cached-2:{pid}"))
    });
    report("apt, cache on, first", &first);
    report("apt, cache on, second", &second);
    assert_cached("apt", &first, &second, &proxy);
    let first = tokio::task::block_in_place(|| dnf_through(&pulp, &proxy));
    let second = tokio::task::block_in_place(|| dnf_through(&pulp, &proxy));
    report("dnf, cache on, first", &first);
    report("dnf, cache on, second", &second);
    assert_cached("dnf", &first, &second, &proxy);
    assert_pulp_saw_only_the_proxy(&pulp, 0);
    for entry in std::fs::read_dir(&cache).unwrap() {
        leak::assert_clean(
            "a cache entry",
            &std::fs::read(entry.unwrap().path()).unwrap(),
        );
    }
    refusals_and_readiness(&pulp, &proxy).await;
    drop(proxy);

    eprintln!("pulp peak memory: {} MiB", pulp.peak_rss_kib() / 1024);
    let t = Instant::now();
    let stopped = tokio::task::block_in_place(|| pulp.stop_checked());
    assert!(stopped.is_ok(), "{}", stopped.unwrap_err());
    eprintln!("pulp stop: {:.1} s", t.elapsed().as_secs_f64());
}

/// What Pulp's two 403s become, and `/readyz` against a real Pulp: ready
/// through the guarded distribution; a distribution whose guard gives the
/// user no role is `forbidden` (403 to the client), never a credential
/// problem; a changed password turns `/readyz` to `credentials-refused`
/// and requests to 502, until the proxy has the new one.
async fn refusals_and_readiness(pulp: &Pulp, proxy: &Proxy) {
    use e2e::client::get;
    let ready = get(proxy.addr, "/readyz").await;
    assert_eq!(ready.status, 200, "{ready:?}\n{}", proxy.log_text());

    assert_eq!(pulp.distributions["deb_others"], "debian-others");
    let theirs = get(
        proxy.addr,
        "/pulp/content/debian-others/dists/stable/Release",
    )
    .await;
    assert_eq!(theirs.status, 403, "{theirs:?}");
    let log = proxy.wait_for_log("kind=forbidden").await;
    assert!(log.contains("download role"), "{log}");
    assert!(!log.contains("kind=credentials-refused"), "{log}");
    assert_eq!(get(proxy.addr, "/readyz").await.status, 200);

    let changed = format!("{}-rotated", e2e::PASSWORD);
    tokio::task::block_in_place(|| pulp.set_password(e2e::USERNAME, &changed));
    let down = get(proxy.addr, "/readyz").await;
    assert_eq!(down.status, 503);
    assert_eq!(down.body, "not ready: credentials-refused\n");
    // A path the cache does not hold, so Pulp is asked; its guard answers
    // before it looks the path up.
    let refused = get(proxy.addr, "/pulp/content/debian/never-fetched").await;
    assert_eq!(refused.status, 502, "{refused:?}");
    proxy.wait_for_log("kind=credentials-refused").await;
    tokio::task::block_in_place(|| pulp.set_password(e2e::USERNAME, e2e::PASSWORD));
    assert_eq!(get(proxy.addr, "/readyz").await.status, 200);
    leak::assert_clean("the proxy's log", proxy.log_text().as_bytes());
}

/// `curl` with the test credentials from a config file (never on its
/// command line), trusting the tests' CA, not following redirects: the
/// status, the `Location` and the body.
fn curl(pulp: &Pulp, url: &str, credentials: bool) -> (u16, String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("curl.conf");
    let mut text = String::from("silent\nshow-error\n");
    if credentials {
        // curl's config quoting: backslash and double quote escaped.
        let user = format!("{}:{}", e2e::USERNAME, e2e::PASSWORD)
            .replace('\\', "\\\\")
            .replace('"', "\\\"");
        text.push_str(&format!("user = \"{user}\"\n"));
    }
    std::fs::write(&config, text).unwrap();
    let body = dir.path().join("body");
    let out = Command::new("curl")
        .arg("--config")
        .arg(&config)
        .arg("--cacert")
        .arg(pulp.ca_file())
        .arg("--output")
        .arg(&body)
        .args(["--write-out", "%{http_code} %{redirect_url}"])
        .arg(url)
        .env_clear()
        .env("PATH", e2e::host_path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl {url}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, location) = text.split_once(' ').unwrap_or((&text, ""));
    (
        code.parse().unwrap(),
        location.to_string(),
        std::fs::read(&body).unwrap_or_default(),
    )
}

/// The S3 mode of the fixture, without the proxy: content synced into
/// object storage, and every content request, metadata included, a 302 to
/// a presigned URL on the storage that serves the file without
/// credentials. The clients' tests in this mode need the proxy to follow
/// such redirects.
#[tokio::test(flavor = "multi_thread")]
async fn a_real_pulp_on_s3_redirects_every_content_request_to_storage() {
    let deb_repo = tokio::task::spawn_blocking(apt::repo).await.unwrap();
    let rpm_repo = tokio::task::spawn_blocking(rpm::repo).await.unwrap();
    let ca = TestCa::new();
    let pulp = tokio::task::block_in_place(|| {
        Pulp::start(
            &ca,
            Storage::S3,
            Content {
                deb: Some(&deb_repo),
                rpm: Some(&rpm_repo),
                netns: None,
                mirrors: &[],
            },
        )
    });
    eprintln!("pulp (S3) start: {:?}", pulp.timings);
    let storage = pulp.storage_url().unwrap();
    ensure_daemon();
    let base = tokio::task::spawn_blocking(apt::base_image).await.unwrap();
    for (path, file) in [
        (
            "debian/dists/stable/Release",
            deb_repo.join("dists/stable/Release"),
        ),
        ("rpm/repodata/repomd.xml", std::path::PathBuf::new()),
        (
            "rpm/Packages/p/pap-data-1.0-1.noarch.rpm",
            rpm_repo.join("Packages/pap-data-1.0-1.noarch.rpm"),
        ),
    ] {
        let url = format!("{}/pulp/content/{path}", pulp.content_url());
        let (code, _, _) = tokio::task::block_in_place(|| curl(&pulp, &url, false));
        assert_eq!(code, 403, "{path} without credentials");
        let (code, location, _) = tokio::task::block_in_place(|| curl(&pulp, &url, true));
        assert_eq!(code, 302, "{path} with credentials");
        assert!(
            location.starts_with(&format!("{storage}/pulp/")),
            "{path}: {location}"
        );
        let (code, _, body) = tokio::task::block_in_place(|| curl(&pulp, &location, false));
        assert_eq!(code, 200, "{path} from the storage");
        if file.as_os_str().is_empty() {
            assert!(body.starts_with(b"<?xml"), "{path}");
        } else {
            assert!(
                body == std::fs::read(&file).unwrap(),
                "{path}: other bytes from the storage"
            );
        }
    }

    // Real clients through the proxy, which follows every redirect to the
    // storage itself: cache off, then on.
    let scratch = Scratch::new();
    let pid = std::process::id();
    let ours = pulp.access_log().len();
    let proxy = start_proxy(&pulp, &scratch, None);
    let (built, off) = tokio::task::block_in_place(|| {
        build_through(&pulp, &proxy, base, &format!("pap-e2e-pulp-s3-apt:{pid}"))
    });
    report("S3: apt, cache off", &off);
    assert!(off.storage_bytes > 100_000, "{off:?}");
    let (code, text) =
        tokio::task::block_in_place(|| e2e::audit(&scratch.path("config.toml"), &built.tag));
    assert_eq!(
        code, 0,
        "the audit failed the image built through S3:\n{text}"
    );
    let dnf_off = tokio::task::block_in_place(|| dnf_through(&pulp, &proxy));
    report("S3: dnf, cache off", &dnf_off);
    assert_followed_everything(&proxy);
    drop(proxy);
    let cache = scratch.path("cache");
    let proxy = start_proxy(&pulp, &scratch, Some(&cache));
    let (_, first) = tokio::task::block_in_place(|| {
        build_through(
            &pulp,
            &proxy,
            base,
            &format!("pap-e2e-pulp-s3-cached-1:{pid}"),
        )
    });
    let (second_image, second) = tokio::task::block_in_place(|| {
        build_through(
            &pulp,
            &proxy,
            base,
            &format!("pap-e2e-pulp-s3-cached-2:{pid}"),
        )
    });
    report("S3: apt, cache on, first", &first);
    report("S3: apt, cache on, second", &second);
    assert_cached("S3 apt", &first, &second, &proxy);
    let (code, text) =
        tokio::task::block_in_place(|| e2e::audit(&scratch.path("config.toml"), &second_image.tag));
    assert_eq!(code, 0, "{text}");
    let first = tokio::task::block_in_place(|| dnf_through(&pulp, &proxy));
    let second = tokio::task::block_in_place(|| dnf_through(&pulp, &proxy));
    report("S3: dnf, cache on, first", &first);
    report("S3: dnf, cache on, second", &second);
    assert_cached("S3 dnf", &first, &second, &proxy);
    assert_followed_everything(&proxy);
    assert_pulp_saw_only_the_proxy(&pulp, ours);
    // Ready: Pulp checked the credentials, then redirected the probe.
    let ready = e2e::client::get(proxy.addr, "/readyz").await;
    assert_eq!(ready.status, 200, "{ready:?}\n{}", proxy.log_text());
    for entry in std::fs::read_dir(&cache).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        leak::assert_clean("a cache entry", &bytes);
        assert!(
            !bytes.windows(6).any(|w| w == b"X-Amz-"),
            "a presigned URL in a cache entry"
        );
    }
    drop(proxy);
    let stopped = tokio::task::block_in_place(|| pulp.stop_checked());
    assert!(stopped.is_ok(), "{}", stopped.unwrap_err());
}

/// The bridge deployment against a real Pulp: `ci-builder net up` in a
/// namespace, the proxy on 192.168.33.3:80 with `interface` set, Pulp's
/// content app on the namespace's loopback, apt-get (in a chroot) and dnf
/// installing through the bridge address.
#[test]
fn apt_and_dnf_install_from_a_real_pulp_through_the_bridge() {
    through_the_bridge(Storage::Filesystem);
}

/// The same on S3: moto_server on the namespace's loopback, every content
/// request a redirect the proxy follows there (listed in
/// `upstream.redirect_hosts`), none reaching apt or dnf.
#[test]
fn apt_and_dnf_install_from_a_real_pulp_on_s3_through_the_bridge() {
    through_the_bridge(Storage::S3);
}

fn through_the_bridge(storage: Storage) {
    let deb_repo = apt::repo();
    let rpm_repo = rpm::repo();
    let rootfs = apt::rootfs_copy();
    // Declared before Pulp, so it outlives the processes inside it.
    let ns = Netns::new();
    let ca = TestCa::new();
    let pulp = Pulp::start(
        &ca,
        storage,
        Content {
            deb: Some(&deb_repo),
            rpm: Some(&rpm_repo),
            netns: Some(&ns.name),
            mirrors: &[],
        },
    );
    eprintln!(
        "pulp ({storage:?}, in a namespace) start: {:?}",
        pulp.timings
    );
    let s3 = pulp.storage_url().is_some();
    let s = Scratch::new();
    let content = pulp.content_url();
    let cfg = s.write_config(&apt::bridge_config(
        content.strip_prefix("https://").unwrap(),
        &s.path("pw"),
        pulp.ca_file(),
        if s3 {
            "redirect_hosts = [\"127.0.0.1\"]\n"
        } else {
            ""
        },
    ));
    let bin = e2e::bin("ci-builder");
    let net = |verb: &str| {
        let out = ns.run(
            bin.to_str().unwrap(),
            &["--config", cfg.to_str().unwrap(), "net", verb],
        );
        assert!(
            out.status.success(),
            "net {verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    net("up");
    let proxy = Proxy::start_in(Some(&ns.name), &cfg, &[]);
    assert_eq!(proxy.addr.to_string(), "192.168.33.3:80");

    let started = Instant::now();
    apt::install_in_chroot(&ns, rootfs.path(), || proxy.log_text());
    eprintln!(
        "apt through the bridge to Pulp ({storage:?}): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let (_root, text) = rpm::dnf_install(Some(&ns.name), "http://192.168.33.3/pulp/content/rpm/");
    leak::assert_clean("dnf's output", text.as_bytes());
    eprintln!(
        "dnf through the bridge to Pulp ({storage:?}): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let log = proxy.log_text();
    assert!(
        log.contains("peer=192.168.33.3:")
            && log.contains("path=/pulp/content/debian/pool/main/hello_")
            && log.contains("path=/pulp/content/rpm/Packages/p/pap-data-1.0-1.noarch.rpm"),
        "{log}"
    );
    if s3 {
        assert_followed_everything(&proxy);
    }
    assert_pulp_saw_only_the_proxy(&pulp, 0);
    drop(proxy);
    let stopped = pulp.stop_checked();
    assert!(stopped.is_ok(), "{}", stopped.unwrap_err());
    net("down");
}
