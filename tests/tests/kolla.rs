//! The Kolla tier: a real kolla-build (kolla 23.0.0 from PyPI) builds
//! Kolla's Debian `base` image and the `cron` image on it, driven by
//! `ci-builder build` in plain Kolla mode, through the proxy on the bridge
//! address, from a real Pulp (filesystem and S3) holding every package the
//! two images install.
//!
//! Everything runs in a network namespace of the test's own: Pulp's content
//! app and moto_server on its loopback, the proxy on 192.168.33.3, and a
//! Docker daemon whose builds use `network_mode = host`, so a build has no
//! way out but loopback and the proxy.
//!
//! What Kolla's templates do that an offline deployment replaces, and only
//! that, is in `tests/kolla/offline.j2`: the key downloads
//! (`base_ubuntu_package_key_installation`) and `extrepo` (a stand-in put
//! in place in `base_debian_after_sources_list`, removed in
//! `base_pip_conf`). The base image is mmdebstrap's minbase trixie from
//! this machine's Debian source, with apt told to accept the test Pulp's
//! unsigned repositories (`e2e::kolla::APT_TRUST`).
//!
//! Timings and bytes go to stderr (`-- --nocapture`).

use e2e::kolla::{self, Dockerd};
use e2e::netns::Netns;
use e2e::pki::TestCa;
use e2e::proxy::{Proxy, Scratch};
use e2e::pulp::{Content, DebMirror, Pulp, Storage};
use e2e::{apt, leak, metric};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const PROXY: &str = "http://192.168.33.3";

#[test]
fn kolla_builds_base_and_cron_through_the_proxy_from_a_real_pulp() {
    kolla_tier(Storage::Filesystem);
}

#[test]
fn kolla_builds_base_and_cron_through_the_proxy_from_a_real_pulp_on_s3() {
    kolla_tier(Storage::S3);
}

/// What one build cost.
struct Build {
    secs: f64,
    /// Body bytes the proxy took from Pulp (and the object storage): what
    /// it sent minus what its cache served.
    upstream_bytes: f64,
    /// Requests Pulp's content app answered.
    pulp_requests: usize,
}

impl Build {
    fn report(&self, storage: Storage, what: &str) {
        eprintln!(
            "kolla tier ({storage:?}): base+cron, {what}: {:.1} s, {:.0} bytes from Pulp, {} Pulp requests",
            self.secs, self.upstream_bytes, self.pulp_requests
        );
    }
}

fn kolla_tier(storage: Storage) {
    let venv = kolla::venv();
    let packages = kolla::packages();
    let repos = tempfile::tempdir().unwrap();
    let main_suites = ["trixie", "trixie-updates", "trixie-backports"];
    kolla::repository(&packages.debs, &repos.path().join("debian"), &main_suites);
    kolla::repository(
        &packages.debs,
        &repos.path().join("debian-security"),
        &["trixie-security"],
    );

    // Declared before what runs inside it, so it outlives them.
    let ns = Netns::new();
    let ca = TestCa::new();
    let pulp = Pulp::start(
        &ca,
        storage,
        Content {
            deb: None,
            rpm: None,
            netns: Some(&ns.name),
            mirrors: &[
                DebMirror {
                    name: "debian",
                    dir: &repos.path().join("debian"),
                    distributions: &main_suites.join(" "),
                    base_path: "debian",
                },
                DebMirror {
                    name: "debian-security",
                    dir: &repos.path().join("debian-security"),
                    distributions: "trixie-security",
                    base_path: "debian-security",
                },
            ],
        },
    );
    eprintln!("kolla tier: pulp ({storage:?}) start: {:?}", pulp.timings);
    let dockerd = Dockerd::start(&ns.name);
    let imported = dockerd
        .command()
        .arg("import")
        .arg(&packages.base_tar)
        .arg("debian:trixie")
        .output()
        .unwrap();
    assert!(
        imported.status.success(),
        "docker import: {}",
        String::from_utf8_lossy(&imported.stderr)
    );

    let s = Scratch::new();
    let cfg = s.write_config(&config(&s, &pulp, &venv, storage));
    let bin = e2e::bin("ci-builder");
    let docker_host = dockerd.host.clone();
    let ci_builder = |args: &[&str]| -> (i32, String) {
        let out = e2e::output(
            Command::new("ip")
                .args(["netns", "exec", &ns.name])
                .arg(&bin)
                .arg("--config")
                .arg(&cfg)
                .args(args)
                // The build's fetch manifest lands here, not in the checkout.
                .current_dir(s.dir.path())
                .env_clear()
                .env("PATH", e2e::host_path())
                .env("HOME", s.path("home"))
                .env("DOCKER_HOST", &docker_host),
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    };
    let (code, text) = ci_builder(&["net", "up"]);
    assert_eq!(code, 0, "net up: {text}");
    let proxy = Proxy::start_in(Some(&ns.name), &cfg, &[]);
    assert_eq!(proxy.addr.to_string(), "192.168.33.3:80");

    let metrics = || {
        let out = ns.run("curl", &["-sf", &format!("{PROXY}/metrics")]);
        assert!(out.status.success(), "curl /metrics");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        metric(&text, "pulp_auth_proxy_response_body_bytes_total")
            - metric(&text, "pulp_auth_proxy_cache_served_bytes_total")
    };
    let build = |tag: &str| -> Build {
        let (bytes, requests) = (metrics(), pulp.access_log().len());
        let started = Instant::now();
        let (code, text) = ci_builder(&["build", "--audit", "--tag", tag, "^base$", "^cron$"]);
        assert_eq!(
            code,
            0,
            "ci-builder build (kolla-build) {tag}: {text}\nproxy log (tail):\n{}",
            tail(&proxy.log_text(), 40)
        );
        assert!(text.contains("2 images tagged"), "{text}");
        Build {
            secs: started.elapsed().as_secs_f64(),
            upstream_bytes: metrics() - bytes,
            pulp_requests: pulp.access_log().len() - requests,
        }
    };

    // First build: the cache starts empty, so every package comes from
    // Pulp.
    let first = build("tier-1");
    first.report(storage, "cache empty");
    assert_every_request_went_through_the_proxy(&pulp, &proxy);
    for image in ["kolla/base:tier-1", "kolla/cron:tier-1"] {
        assert_repositories_restored(&dockerd, image);
    }

    // Second build, the cache warm: at most 5% of the first one's bytes.
    let second = build("tier-2");
    second.report(storage, "cache warm");
    assert!(
        second.upstream_bytes <= first.upstream_bytes * 0.05,
        "the cached build took {} bytes from Pulp, the first {}",
        second.upstream_bytes,
        first.upstream_bytes
    );
    assert!(first.pulp_requests > 0 && first.upstream_bytes > 1_000_000.0);

    // The control: the same base with the credentials in a repository
    // URL fails the audit.
    let leaky = format!(
        "FROM kolla/base:tier-1\nRUN echo 'deb {}/pulp/content/debian/ trixie main' >/etc/apt/sources.list.d/leak.list\n",
        PROXY.replace(
            "http://",
            &format!(
                "http://{}:{}@",
                e2e::USERNAME,
                urlencode(e2e::PASSWORD)
            )
        )
    );
    // Plain output: the control's build log holds the credentials.
    let child = dockerd
        .command()
        .args(["build", "--network", "host", "-t", "pap-kolla-leak:1", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    let mut child = child;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(leaky.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "docker build of the control: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, text) = ci_builder(&["audit", "pap-kolla-leak:1"]);
    assert_eq!(
        code, 1,
        "the audit passed an image with the credentials: {text}"
    );
    assert!(text.contains("leak.list"), "{text}");
    let (code, text) = ci_builder(&["audit", "kolla/base:tier-2", "kolla/cron:tier-2"]);
    assert_eq!(code, 0, "{text}");

    drop(proxy);
    drop(dockerd);
    let stopped = pulp.stop_checked();
    assert!(stopped.is_ok(), "{}", stopped.unwrap_err());
    let (code, text) = ci_builder(&["net", "down"]);
    assert_eq!(code, 0, "net down: {text}");
}

/// The proxy's configuration: the bridge deployment, plain Kolla mode with
/// the test's kolla-build.conf and offline override, and the mirrors: the
/// URIs Kolla's own Debian sources name, and the one the base image came
/// from, all served by the Pulp distributions.
fn config(s: &Scratch, pulp: &Pulp, venv: &Path, storage: Storage) -> String {
    s.write_password(e2e::PASSWORD);
    std::fs::create_dir_all(s.path("home")).unwrap();
    std::fs::create_dir_all(s.path("cache")).unwrap();
    let kolla_conf = s.path("kolla-build.conf");
    // pull: the base image is local; cache off: every build installs
    // through the proxy again; no BuildKit: Debian's docker.io has no
    // buildx, and Kolla then uses the daemon's classic builder.
    std::fs::write(
        &kolla_conf,
        "[DEFAULT]\npull = false\ncache = false\nbuildkit = false\nnamespace = kolla\nthreads = 2\n",
    )
    .unwrap();
    let uris = kolla::kolla_debian_uris(venv);
    let host = apt::host_debian_source();
    let mut mirrors = Vec::new();
    for uri in uris.iter().chain([&host]) {
        let path = if uri.trim_end_matches('/').ends_with("-security") {
            "/pulp/content/debian-security/"
        } else {
            "/pulp/content/debian/"
        };
        let line = format!("{:?} = {path:?}\n", uri.trim_end_matches('/'));
        if !mirrors.contains(&line) {
            mirrors.push(line);
        }
    }
    let content = pulp.content_url();
    format!(
        "{bridge}\n[cache]\ndir = {cache:?}\nmax_size = \"2GiB\"\n\n\
         [build]\ntool = \"kolla-build\"\nkolla_build = {kb:?}\ndistro = \"debian\"\n\
         kolla_config = {kc:?}\ntemplate_override = {ov:?}\n\n[build.mirrors]\n{mirrors}",
        bridge = apt::bridge_config(
            content.strip_prefix("https://").unwrap(),
            &s.path("pw"),
            pulp.ca_file(),
            &format!(
                // The content app serves no status page: readiness is a
                // Release file of the guarded distribution.
                "readiness_path = \"/pulp/content/debian/dists/trixie/Release\"\n{}",
                if storage == Storage::S3 {
                    "redirect_hosts = [\"127.0.0.1\"]\n"
                } else {
                    ""
                }
            ),
        ),
        cache = s.path("cache"),
        kb = venv.join("bin/kolla-build"),
        kc = kolla_conf,
        ov = Path::new(env!("CARGO_MANIFEST_DIR")).join("kolla/offline.j2"),
        mirrors = mirrors.concat(),
    )
}

/// Every request Pulp's content app saw carried the proxy's credentials
/// (a build reaching Pulp on its own would have none), and every content
/// path Pulp saw is one the proxy logged.
fn assert_every_request_went_through_the_proxy(pulp: &Pulp, proxy: &Proxy) {
    let expected = e2e::basic_header();
    let log = proxy.log_text();
    let proxied: std::collections::HashSet<&str> = log
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("path="))
        .collect();
    let mut content = 0;
    for line in pulp.access_log() {
        assert_eq!(
            line.authorization.as_deref(),
            Some(expected.as_str()),
            "Pulp saw a request without the proxy's credentials: {}",
            line.request
        );
        let path = line.request.split_whitespace().nth(1).unwrap_or("");
        let path = path.split('?').next().unwrap();
        if path.starts_with("/pulp/content/debian") {
            content += 1;
            assert!(
                proxied.contains(path),
                "Pulp served {path}, which the proxy did not log"
            );
        }
    }
    assert!(content > 50, "Pulp saw only {content} content requests");
}

/// No repository file in `image` names the proxy, and Kolla's own Debian
/// sources are back as Kolla wrote them.
fn assert_repositories_restored(dockerd: &Dockerd, image: &str) {
    let out = dockerd.docker(&[
        "run",
        "--rm",
        "--network",
        "host",
        "--entrypoint",
        "/bin/sh",
        image,
        "-c",
        "grep -rl 192.168.33.3 /etc/apt/sources.list /etc/apt/sources.list.d; \
         cat /etc/apt/sources.list.d/debian.sources",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("/etc/apt/"),
        "{image} keeps repository files naming the proxy: {text}"
    );
    assert!(
        text.contains("Suites: trixie trixie-updates trixie-backports") && !text.contains(PROXY),
        "{image}'s debian.sources is not Kolla's: {text}"
    );
    leak::assert_clean("the image's sources", text.as_bytes());
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The shell of ci-builder's override, as `ci-builder build --dry-run`
/// prints it: the rewrite (block `labels`) and the restore (block
/// `footer`).
fn override_shell(cfg: &Path) -> (String, String) {
    let out = e2e::output(
        Command::new(e2e::bin("ci-builder"))
            .arg("--config")
            .arg(cfg)
            .args(["build", "--dry-run"])
            .env_clear()
            .env("PATH", e2e::host_path()),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let block = |name: &str| {
        let start = text
            .find(&format!("{{% block {name} %}}"))
            .unwrap_or_else(|| panic!("no block {name} in:\n{text}"));
        let body = &text[start..];
        let run = body.find("{% raw %}\nRUN ").unwrap() + "{% raw %}\nRUN ".len();
        let end = body[run..].find("\n{% endraw %}").unwrap();
        body[run..run + end].to_string()
    };
    (block("labels"), block("footer"))
}

const ROCKY_REPO: &str = "[baseos]\n\
name=Rocky Linux $releasever - BaseOS\n\
mirrorlist=https://mirrors.rockylinux.org/mirrorlist?arch=$basearch&repo=BaseOS-$releasever\n\
#baseurl=http://dl.rockylinux.org/$contentdir/$releasever/BaseOS/$basearch/os/\n\
gpgcheck=1\n\
\n\
[appstream]\n\
name=Rocky Linux $releasever - AppStream\n\
metalink = https://mirrors.rockylinux.org/metalink?repo=AppStream-$releasever\n\
# baseurl=http://dl.rockylinux.org/$contentdir/$releasever/AppStream/$basearch/os/\n\
\n\
[devel]\n\
name=Elsewhere\n\
mirrorlist=https://mirrors.example.org/mirrorlist?repo=devel\n\
#baseurl=https://elsewhere.example.org/devel/\n\
enabled=0\n";

const DEBIAN_SOURCES: &str = "Types: deb\n\
URIs: http://deb.debian.org/debian\n\
Suites: trixie trixie-updates\n\
Components: main\n\
\n\
Types: deb\n\
URIs: http://deb.debian.org/debian-security/\n\
Suites: trixie-security\n\
Components: main\n";

const ONE_LINE: &str = "deb [arch=amd64] http://deb.debian.org/debian/ trixie main\n\
deb http://deb.debian.org/debian-other trixie main\n";

/// The override's shell, run by a real Debian shell and GNU sed in a
/// chroot: rpm sections whose baseurl is mirrored point at the proxy with
/// their mirror lists off, others stay as they were; deb822 and one-line
/// sources point at the proxy by URL; running it again changes nothing;
/// the restore puts every file back byte for byte and refuses a file
/// that still names the proxy.
#[test]
fn the_override_points_repository_files_at_the_proxy_and_puts_them_back() {
    let s = Scratch::new();
    s.write_password(e2e::PASSWORD);
    let cfg = s.write_config(&format!(
        "{}\n[build]\ntool = \"kolla-build\"\ndistro = \"rocky\"\n[build.mirrors]\n\
         \"http://dl.rockylinux.org/$contentdir\" = \"/pulp/content/rocky/\"\n\
         \"http://deb.debian.org/debian\" = \"/pulp/content/debian/\"\n",
        apt::bridge_config("127.0.0.1:1", &s.path("pw"), &s.path("pw"), "")
    ));
    let (rewrite, restore) = override_shell(&cfg);
    let root = apt::rootfs_copy();
    let r = root.path();
    std::fs::create_dir_all(r.join("etc/yum.repos.d")).unwrap();
    let files = [
        ("etc/yum.repos.d/rocky.repo", ROCKY_REPO),
        ("etc/apt/sources.list.d/debian.sources", DEBIAN_SOURCES),
        ("etc/apt/sources.list.d/extra.list", ONE_LINE),
    ];
    let _ = std::fs::remove_file(r.join("etc/apt/sources.list"));
    for (path, text) in files {
        std::fs::write(r.join(path), text).unwrap();
    }
    let sh = |script: &str| {
        let out = Command::new("chroot")
            .arg(r)
            .args(["/bin/sh", "-c", script])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let read = |path: &str| std::fs::read_to_string(r.join(path)).unwrap();

    assert_eq!(sh(&rewrite), (Some(0), String::new()));
    let rocky = read("etc/yum.repos.d/rocky.repo");
    let want_rocky = ROCKY_REPO
        .replace(
            "mirrorlist=https://mirrors.rockylinux",
            "#mirrorlist=https://mirrors.rockylinux",
        )
        .replace("metalink = ", "#metalink = ")
        .replace(
            "#baseurl=http://dl.rockylinux.org/$contentdir/",
            "baseurl=http://192.168.33.3/pulp/content/rocky/",
        )
        .replace(
            "# baseurl=http://dl.rockylinux.org/$contentdir/",
            "baseurl=http://192.168.33.3/pulp/content/rocky/",
        );
    assert_eq!(rocky, want_rocky);
    assert_eq!(
        read("etc/apt/sources.list.d/debian.sources"),
        DEBIAN_SOURCES.replace(
            "URIs: http://deb.debian.org/debian\n",
            "URIs: http://192.168.33.3/pulp/content/debian/\n"
        )
    );
    assert_eq!(
        read("etc/apt/sources.list.d/extra.list"),
        ONE_LINE.replace(
            "http://deb.debian.org/debian/ ",
            "http://192.168.33.3/pulp/content/debian/ "
        )
    );
    // Again, as the next hook does: nothing changes, and the originals
    // kept are still the first ones.
    assert_eq!(sh(&rewrite), (Some(0), String::new()));
    assert_eq!(read("etc/yum.repos.d/rocky.repo"), want_rocky);

    assert_eq!(sh(&restore), (Some(0), String::new()));
    for (path, text) in files {
        assert_eq!(read(path), text, "{path} after the restore");
    }
    assert!(!r.join("var/lib/ci-builder-repos").exists());

    // A file naming the proxy that the restore cannot put back fails the
    // image, naming the file.
    std::fs::write(
        r.join("etc/apt/sources.list.d/left.list"),
        "deb http://192.168.33.3/pulp/content/debian/ trixie main\n",
    )
    .unwrap();
    let (code, err) = sh(&restore);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("still name the proxy http://192.168.33.3:")
            && err.contains("/etc/apt/sources.list.d/left.list"),
        "{err}"
    );
}
