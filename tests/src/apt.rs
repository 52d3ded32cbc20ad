//! The real-world pieces of the end-to-end test: an APT repository of real
//! `.deb` files (downloaded with `apt-get download`, indexed with
//! `dpkg-scanpackages`), and a Debian base image made with `mmdebstrap`
//! from the Debian source this machine's own apt configuration names (read
//! at run time; no mirror is written into the repository). Both are cached
//! under `target/e2e-cache` and the image in Docker between runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Packages in the test repository: small, and with their libraries, so
/// `apt-get install` needs nothing from elsewhere.
pub const PACKAGES: [&str; 5] = ["hello", "tree", "jq", "libjq1", "libonig5"];
/// The base image's name.
pub const BASE_IMAGE: &str = "pap-e2e-debian:bookworm";

static LOCK: Mutex<()> = Mutex::new(());

/// `target/e2e-cache`.
pub fn cache_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> or target/<profile>/examples/<bin>
    let target = exe.ancestors().nth(3).unwrap().to_path_buf();
    let dir = target.join("e2e-cache");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

use crate::run;

/// In the chroot `rootfs`, inside namespace `ns`: `apt-get update`,
/// install `hello` and `jq` from the proxy on the bridge address, and run
/// `hello`. Fails the test with the output and `proxy_log()`; every
/// output is scanned for the credentials.
pub fn install_in_chroot(ns: &crate::netns::Netns, rootfs: &Path, proxy_log: impl Fn() -> String) {
    std::fs::write(
        rootfs.join("etc/apt/sources.list"),
        format!("deb [trusted=yes] http://192.168.33.3{REPO_PREFIX} stable main\n"),
    )
    .unwrap();
    let root = rootfs.to_str().unwrap();
    for args in [
        vec![root, "apt-get", "update"],
        vec![
            root,
            "apt-get",
            "install",
            "-y",
            "--no-install-recommends",
            "hello",
            "jq",
        ],
        vec![root, "hello"],
    ] {
        let out = ns.run("chroot", &args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "chroot {args:?}:\n{text}\nproxy log:\n{}",
            proxy_log()
        );
        if args[1] == "hello" {
            assert!(text.contains("Hello, world"), "{text}");
        }
    }
}

/// The repository root (serve it at `/pulp/content/debian/`), built once.
pub fn repo() -> PathBuf {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let root = cache_dir().join("apt-repo");
    if root.join("dists/stable/Release").exists() {
        return root;
    }
    let _ = std::fs::remove_dir_all(&root);
    let pool = root.join("pool/main");
    std::fs::create_dir_all(&pool).unwrap();
    let download = |dir: &Path| {
        Command::new("apt-get")
            .arg("download")
            .args(PACKAGES)
            .current_dir(dir)
            .output()
            .unwrap()
    };
    if !download(&pool).status.success() {
        // Package lists may be missing on a fresh machine.
        run(
            Command::new("apt-get").args(["update", "-qq"]),
            "apt-get update",
        );
        let out = download(&pool);
        assert!(
            out.status.success(),
            "apt-get download: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let bin = root.join("dists/stable/main/binary-amd64");
    std::fs::create_dir_all(&bin).unwrap();
    let out = Command::new("dpkg-scanpackages")
        .args(["--multiversion", "pool", "/dev/null"])
        .current_dir(&root)
        .output()
        .expect("dpkg-scanpackages is missing: tests/run installs dpkg-dev");
    assert!(
        out.status.success(),
        "dpkg-scanpackages: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(bin.join("Packages"), &out.stdout).unwrap();
    run(
        Command::new("gzip")
            .args(["-k9", "Packages"])
            .current_dir(&bin),
        "gzip Packages",
    );
    let release = Command::new("apt-ftparchive")
        .args([
            "-o",
            "APT::FTPArchive::Release::Suite=stable",
            "-o",
            "APT::FTPArchive::Release::Codename=stable",
            "-o",
            "APT::FTPArchive::Release::Components=main",
            "-o",
            "APT::FTPArchive::Release::Architectures=amd64",
            "release",
            "dists/stable",
        ])
        .current_dir(&root)
        .output()
        .expect("apt-ftparchive is missing: tests/run installs apt-utils");
    assert!(release.status.success());
    std::fs::write(root.join("dists/stable/Release"), &release.stdout).unwrap();
    root
}

/// The Debian source (URI) this machine's apt configuration uses for
/// bookworm, read from `/etc/apt/sources.list` and `sources.list.d`.
pub fn host_debian_source() -> String {
    let mut texts = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push(t);
    }
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for e in dir.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "sources" || x == "list") {
                texts.push(std::fs::read_to_string(p).unwrap_or_default());
            }
        }
    }
    for text in &texts {
        // One-line format: deb URI bookworm main
        for line in text.lines().map(str::trim) {
            let words: Vec<&str> = line
                .split_whitespace()
                .filter(|w| !w.starts_with('['))
                .collect();
            if words.len() >= 3 && words[0] == "deb" && words[2] == "bookworm" {
                return words[1].to_string();
            }
        }
        // deb822 format: a stanza with Suites: bookworm and a URIs: line.
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_string())
            };
            let suites = field("Suites:").unwrap_or_default();
            if suites.split_whitespace().any(|s| s == "bookworm") {
                if let Some(uri) =
                    field("URIs:").and_then(|u| u.split_whitespace().next().map(String::from))
                {
                    return uri;
                }
            }
        }
    }
    panic!("no bookworm source in /etc/apt/sources.list(.d); the e2e test builds its base image from the machine's own Debian source");
}

fn bootstrap_tar() -> PathBuf {
    let tar = cache_dir().join("bookworm.tar");
    if !tar.exists() {
        let tmp = cache_dir().join("bookworm.tar.tmp");
        let source = host_debian_source();
        run(
            Command::new("mmdebstrap")
                .args([
                    "--variant=apt",
                    "--format=tar",
                    "--components=main",
                    "--quiet",
                    "bookworm",
                ])
                .arg(&tmp)
                .arg(format!("deb {source} bookworm main")),
            "mmdebstrap (tests/run installs it)",
        );
        std::fs::rename(&tmp, &tar).unwrap();
    }
    tar
}

/// The Debian base image in Docker, made once and kept.
pub fn base_image() -> &'static str {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let exists = Command::new("docker")
        .args(["image", "inspect", BASE_IMAGE])
        .output()
        .unwrap()
        .status
        .success();
    if !exists {
        let tar = bootstrap_tar();
        run(
            Command::new("docker")
                .args(["import"])
                .arg(&tar)
                .arg(BASE_IMAGE),
            "docker import",
        );
    }
    BASE_IMAGE
}

/// A fresh copy of the unpacked base system, for `chroot` (removed with
/// the returned directory).
pub fn rootfs_copy() -> tempfile::TempDir {
    let tar = {
        let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        bootstrap_tar()
    };
    let dir = tempfile::tempdir_in(cache_dir()).unwrap();
    run(
        Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(dir.path()),
        "unpack the base system",
    );
    dir
}

/// Where the repository is served, upstream and through the proxy.
pub const REPO_PREFIX: &str = "/pulp/content/debian";

/// A Dockerfile that installs the test packages through `proxy_url` the
/// way the deployment does (an unsigned `[trusted=yes]` source), restores
/// the original sources, and checks the packages work.
pub fn dockerfile(base: &str, proxy_url: &str) -> String {
    format!(
        r#"FROM {base}
RUN cp /etc/apt/sources.list /root/sources.list.orig \
 && echo "deb [trusted=yes] {proxy_url}{REPO_PREFIX} stable main" > /etc/apt/sources.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends hello tree jq \
 && mv /root/sources.list.orig /etc/apt/sources.list \
 && rm -rf /var/lib/apt/lists/*
RUN hello | grep -q 'Hello, world' && tree --version && echo '{{"a":42}}' | jq -e '.a == 42'
"#
    )
}

/// Starts the Pulp stand-in as a process inside `ns`, on the namespace's
/// loopback, serving `repo` at [`REPO_PREFIX`] and writing its CA to
/// `ca_out`; returns it (killed on drop) and its address.
pub fn upstream_in(
    ns: &crate::netns::Netns,
    ca_out: &Path,
    repo: &Path,
    storage: bool,
) -> (crate::KillOnDrop, String) {
    use std::io::BufRead;
    let mut child = crate::KillOnDrop(
        Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(crate::bin("test-upstream"))
            .arg("127.0.0.1:0")
            .arg(ca_out)
            .arg(repo)
            .arg(REPO_PREFIX)
            .args(storage.then_some("storage"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .expect("test-upstream did not start")
        .to_string();
    (child, addr)
}

/// The bridge deployment's configuration: `breth1` with 192.168.33.3/24,
/// the proxy on it (with `interface` set), the stand-in at `upstream_addr`,
/// and `upstream_extra` keys in `[upstream]`.
pub fn bridge_config(
    upstream_addr: &str,
    password_file: &Path,
    ca_file: &Path,
    upstream_extra: &str,
) -> String {
    format!(
        r#"[network]
bridge = "breth1"
address = "192.168.33.3/24"
ports = ["dummy1"]

[proxy]
listen = "192.168.33.3:80"
interface = "breth1"
allowed_clients = ["192.168.33.0/24", "127.0.0.0/8"]

[upstream]
url = "https://{upstream_addr}"
username = "{user}"
password_file = "{pw}"
ca_file = "{ca}"
{upstream_extra}
"#,
        user = crate::USERNAME,
        pw = password_file.display(),
        ca = ca_file.display()
    )
}

/// One APT build through a proxy: how long it took and what it cost the
/// upstream.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// Wall time of `docker build`, seconds.
    pub secs: f64,
    /// Response body bytes the upstream sent during the build.
    pub upstream_bytes: u64,
}

/// Builds [`dockerfile`] through `s`'s proxy as image `tag` (removed when
/// the returned image drops), panicking with both logs if the build fails.
pub fn build_through(s: &crate::Setup, base: &str, tag: &str) -> (crate::docker::Image, Run) {
    let before = s.upstream.body_bytes();
    let started = std::time::Instant::now();
    let built = crate::docker::Image::try_build(tag, &dockerfile(base, &s.proxy.url()), &[], &[]);
    let secs = started.elapsed().as_secs_f64();
    let image = built.unwrap_or_else(|log| {
        panic!(
            "the build through the proxy failed:\n{log}\nproxy log:\n{}",
            s.proxy.log_text()
        )
    });
    let run = Run {
        secs,
        upstream_bytes: s.upstream.body_bytes() - before,
    };
    (image, run)
}
