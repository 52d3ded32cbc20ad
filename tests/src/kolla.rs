//! The Kolla tier's pieces: kolla from PyPI in a pinned venv, the Debian
//! trixie packages Kolla's `base` and `cron` images install (gathered from
//! this machine's own Debian source at test time), the `debian:trixie` base
//! image Kolla builds on, the APT repositories Pulp syncs them from, and a
//! Docker daemon of the test's own inside a network namespace, so the
//! builds have no way out but loopback and the proxy's address.
//!
//! The gathered packages and the base image are cached in the Pulp
//! fixture's cache directory, named for what shapes them.

use crate::pulp::CACHE;
use crate::run;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The suite Kolla 23's Debian images are.
pub const SUITE: &str = "trixie";

/// What Kolla 23.0.0's Debian `base` and `cron` templates install, by
/// their own lists (`base_ubuntu_package_pre_packages`, the `extrepo`
/// step, `locales`, `base_apt_packages`, `cron_packages`); apt adds the
/// dependencies.
pub const PACKAGES: &[&str] = &[
    "adduser",
    "ca-certificates",
    "curl",
    "gnupg",
    "extrepo",
    "locales",
    "apt-utils",
    "dumb-init",
    "systemd-standalone-sysusers",
    "gawk",
    "iproute2",
    "kmod",
    "lsof",
    "lvm2",
    "netbase",
    "open-iscsi",
    "procps",
    "python3",
    "python3-pip",
    "python3-yaml",
    "socat",
    "sudo",
    "tgt",
    "patch",
    "cron",
    "logrotate",
];

/// The base image trusts the test's Pulp without a signature: Pulp
/// publishes the repositories unsigned here (a signing service would need a
/// key inside Debian's own keyring, which Kolla's sources name), so the
/// test marks them trusted in apt's configuration rather than in a
/// sources file that Kolla writes.
pub const APT_TRUST: &str = "// The Kolla tier's Pulp publishes unsigned repositories.\n\
    Acquire::AllowInsecureRepositories \"true\";\n\
    APT::Get::AllowUnauthenticated \"true\";\n";

static LOCK: Mutex<()> = Mutex::new(());

/// The kolla venv (tests/kolla/requirements.txt), built once.
pub fn venv() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = crate::output(
        Command::new(tests.join("pulp/venv.sh"))
            .arg(tests.join("kolla/requirements.txt"))
            .arg("kolla")
            .env_clear()
            .env("PATH", crate::host_path()),
    );
    assert!(
        out.status.success(),
        "tests/pulp/venv.sh for kolla failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The upstream URLs Kolla's own Debian sources file names, read from the
/// installed kolla (so the test writes no mirror's name).
pub fn kolla_debian_uris(venv: &Path) -> Vec<String> {
    let lib = fs::read_dir(venv.join("lib"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("python3")
        })
        .expect("a python3.X directory in the kolla venv");
    let text =
        fs::read_to_string(lib.join("site-packages/kolla/docker/base/debian.sources")).unwrap();
    let mut uris: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("URIs:"))
        .flat_map(|v| v.split_whitespace().map(String::from))
        .collect();
    uris.dedup();
    assert!(uris.len() >= 2, "Kolla's debian.sources: {text}");
    uris
}

/// What the gathering made: the base system as a tar, and every `.deb` the
/// two images install.
pub struct Packages {
    /// mmdebstrap's minbase trixie, with [`APT_TRUST`].
    pub base_tar: PathBuf,
    /// The `.deb` files.
    pub debs: PathBuf,
}

/// Gathers the packages and the base system once (cached).
pub fn packages() -> Packages {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let source = crate::apt::host_debian_source();
    let key = {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        for part in [SUITE, &source, &PACKAGES.join(","), APT_TRUST] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        hex[..16].to_string()
    };
    let dir = Path::new(CACHE).join(format!("kolla-{SUITE}-{key}"));
    let packages = Packages {
        base_tar: dir.join("base.tar"),
        debs: dir.join("debs"),
    };
    if dir.is_dir() {
        return packages;
    }
    fs::create_dir_all(CACHE).unwrap();
    let started = Instant::now();
    let tmp = tempfile::tempdir_in(CACHE).unwrap();
    let line = format!("deb {source} {SUITE} main");
    // Everything the images install, with dependencies: an mmdebstrap run
    // that keeps what it downloaded.
    let root = tmp.path().join("root");
    run(
        Command::new("mmdebstrap")
            .args([
                "--variant=minbase",
                "--skip=download/empty",
                "--skip=essential/unlink",
                "--skip=cleanup/apt/cache",
                "--format=directory",
                "--quiet",
            ])
            .arg(format!("--include={}", PACKAGES.join(",")))
            .arg(SUITE)
            .arg(&root)
            .arg(&line),
        "mmdebstrap gathering the Kolla images' packages",
    );
    let debs = tmp.path().join("debs");
    fs::rename(root.join("var/cache/apt/archives"), &debs).unwrap();
    for e in fs::read_dir(&debs).unwrap().flatten() {
        if e.path().extension().is_none_or(|x| x != "deb") {
            let _ = fs::remove_file(e.path()).or_else(|_| fs::remove_dir_all(e.path()));
        }
    }
    fs::remove_dir_all(&root).unwrap();
    let trust = format!(
        "--customize-hook=printf '%s' '{}' >\"$1/etc/apt/apt.conf.d/99kolla-tier-unsigned\"",
        APT_TRUST.replace('\'', "")
    );
    run(
        Command::new("mmdebstrap")
            .args(["--variant=minbase", "--format=tar", "--quiet"])
            .arg(trust)
            .arg(SUITE)
            .arg(tmp.path().join("base.tar"))
            .arg(&line),
        "mmdebstrap making the debian:trixie base image",
    );
    let kept = tmp.keep();
    if fs::rename(&kept, &dir).is_err() {
        // Another test's copy landed first.
        fs::remove_dir_all(&kept).unwrap();
    }
    eprintln!(
        "gathered the Kolla packages and base system in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    packages
}

/// An APT repository of `debs` at `root` with `suites` (each holding every
/// package), as the Pulp remote syncs it.
pub fn repository(debs: &Path, root: &Path, suites: &[&str]) {
    let pool = root.join("pool/main");
    fs::create_dir_all(&pool).unwrap();
    for e in fs::read_dir(debs).unwrap().flatten() {
        fs::hard_link(e.path(), pool.join(e.file_name()))
            .or_else(|_| fs::copy(e.path(), pool.join(e.file_name())).map(drop))
            .unwrap();
    }
    let packages = crate::output(
        Command::new("apt-ftparchive")
            .args(["packages", "pool"])
            .current_dir(root),
    );
    assert!(packages.status.success(), "apt-ftparchive packages");
    for suite in suites {
        let bin = root.join(format!("dists/{suite}/main/binary-amd64"));
        fs::create_dir_all(&bin).unwrap();
        fs::write(bin.join("Packages"), &packages.stdout).unwrap();
        run(
            Command::new("gzip")
                .args(["-k9", "Packages"])
                .current_dir(&bin),
            "gzip Packages",
        );
        let release = crate::output(
            Command::new("apt-ftparchive")
                .args(["-o", &format!("APT::FTPArchive::Release::Suite={suite}")])
                .args(["-o", &format!("APT::FTPArchive::Release::Codename={suite}")])
                .args(["-o", "APT::FTPArchive::Release::Components=main"])
                .args(["-o", "APT::FTPArchive::Release::Architectures=amd64"])
                .arg("release")
                .arg(format!("dists/{suite}"))
                .current_dir(root),
        );
        assert!(release.status.success(), "apt-ftparchive release");
        fs::write(root.join(format!("dists/{suite}/Release")), &release.stdout).unwrap();
    }
}

/// A Docker daemon inside a network namespace, with its own data and
/// sockets (`--bridge=none --iptables=false`); stopped by its PID on drop.
pub struct Dockerd {
    child: std::process::Child,
    /// `unix://...`, for `DOCKER_HOST`.
    pub host: String,
    dir: tempfile::TempDir,
}

impl Dockerd {
    /// Starts it in `netns` and waits until it answers.
    pub fn start(netns: &str) -> Dockerd {
        let dir = tempfile::Builder::new()
            .prefix("pap-dockerd-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let d = dir.path();
        let sock = d.join("docker.sock");
        let log = fs::File::create(d.join("dockerd.log")).unwrap();
        // nsenter, not `ip netns exec`: that remounts /sys for the
        // namespace, which hides the cgroup file system dockerd needs.
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .arg("dockerd")
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .env_clear()
            .env("PATH", crate::host_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd (tests/run installs docker.io)");
        let mut daemon = Dockerd {
            child,
            host: format!("unix://{}", sock.display()),
            dir,
        };
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if daemon
                .docker(&["info", "--format", "{{.ServerVersion}}"])
                .status
                .success()
            {
                break;
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("dockerd in {netns} exited with {status}: {}", daemon.log());
            }
            assert!(
                Instant::now() < until,
                "dockerd in {netns} did not answer within 60 s: {}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        daemon
    }

    /// The daemon's log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// A docker client command for this daemon.
    pub fn command(&self) -> Command {
        let mut c = Command::new("docker");
        c.env_clear()
            .env("PATH", crate::host_path())
            .env("DOCKER_HOST", &self.host);
        c
    }

    /// Runs `docker ARGS` against this daemon.
    pub fn docker(&self, args: &[&str]) -> std::process::Output {
        crate::output(self.command().args(args))
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SIGTERM: dockerd stops its containerd and unmounts its layers.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
