//! A real systemd for the unit tests: Debian bookworm (systemd 252, the
//! version Rocky Linux 9 runs) made with mmdebstrap from this machine's own
//! Debian source, booted under Docker as PID 1 in a network namespace of
//! its own (`--network none`), with the project's `.deb` installed.
//!
//! What the container gets, and why each is needed:
//! - `--cap-add SYS_ADMIN`: the units' sandbox (`PrivateTmp=`,
//!   `ProtectSystem=`, `PrivateUsers=`, ...) and the credentials file
//!   system are mounts and namespaces systemd makes per service.
//! - `--cap-add SYS_PTRACE`: for `PrivateUsers=` (the socket-activated
//!   unit) systemd writes the service's user namespace mapping into its
//!   `/proc` entry, which `ProtectProc=invisible` hides from a process that
//!   may not ptrace it; PID 1 on a host has the capability, Docker's
//!   default set lacks it (the start fails with 217/USER, ENOENT).
//! - `--security-opt seccomp=unconfined`: Docker 20.10's profile lacks
//!   some of the mount system calls systemd 252 makes for them.
//! - `--cap-add NET_ADMIN`: `ci-builder net up` and systemd-networkd make
//!   the bridge, in the container's own network namespace only.
//! - `/run`, `/run/lock`, `/tmp` as tmpfs and `container=docker`: systemd's
//!   container interface.
//! - `--ulimit core=0`: the watchdog test ends a proxy with SIGABRT, and
//!   the machine's core handler must never get its memory, which holds the
//!   test password (the units also say `LimitCORE=0`).
//! - The label: `tests/run` removes containers a killed run left behind.
//!
//! What the boot script (`/usr/local/sbin/pap-boot`) does before it execs
//! systemd, and why:
//! - The cgroup file systems remounted read-write: systemd must create its
//!   cgroups, and Docker mounts them read-only. The container has its own
//!   cgroup namespace, so it sees and writes only its own subtree.
//! - `mount --make-rshared /`: systemd 252 builds a unit's credentials file
//!   system in a helper's mount namespace and moves it onto
//!   `/run/credentials/UNIT`; that reaches PID 1's namespace only through
//!   shared propagation, which systemd sets up itself on a host but leaves
//!   to the container manager in a container, and Docker's mounts are
//!   private. Without it, `LoadCredential=` under `DynamicUser=` leaves the
//!   service an empty root-owned directory it cannot read (EACCES).
//! - `/sys` read-write, and `/run/udev/control` present: systemd supports
//!   device units only on a writable `/sys`, and its udev monitor listens
//!   only if udev's control socket exists when PID 1 starts (else it
//!   decides udev is absent). The units bind to
//!   `sys-subsystem-net-devices-breth1.device`, which udev makes. Every
//!   directory under `/sys` but `fs` is bound read-only again, so nothing
//!   in the container can change the machine's devices.
//! - The container's udev also receives the kernel's events for the
//!   machine's devices that belong to no network namespace (since Linux
//!   4.18 they go to every namespace of the initial user namespace). So
//!   the image's udev has a single rule, the `systemd` tag on network
//!   interfaces (whose events stay in their own namespace), and
//!   `systemd-udev-trigger.service` is masked: it acts on nothing and
//!   triggers no event for the machine's devices.

use crate::pulp::CACHE;
use std::net::SocketAddr;
use std::os::fd::AsFd as _;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The release the test system runs.
pub const SUITE: &str = "bookworm";
/// What the image holds beyond mmdebstrap's `apt` variant. procps gives
/// the units' `kill`; the `.deb` depends on it, so `dpkg -i` checks that.
pub const PACKAGES: [&str; 6] = [
    "systemd",
    "systemd-sysv",
    "dbus",
    "udev",
    "iproute2",
    "procps",
];

/// Run by mmdebstrap in the new system's root (`$1`).
const CUSTOMIZE: &str = r#"set -e
rm -f "$1"/usr/lib/udev/rules.d/*.rules
printf '%s\n' 'SUBSYSTEM=="net", KERNEL!="lo", TAG+="systemd", ENV{SYSTEMD_ALIAS}+="/sys/subsystem/net/devices/$name"' >"$1"/etc/udev/rules.d/99-net-only.rules
for u in systemd-udev-trigger.service apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer; do
    ln -sf /dev/null "$1/etc/systemd/system/$u"
done
cat >"$1"/usr/local/sbin/pap-boot <<'EOF'
#!/bin/sh
set -e
mount --make-rshared /
for m in $(findmnt -rn -o TARGET -R /sys/fs/cgroup); do
    mount -o remount,bind,rw "$m"
done
mount -o remount,rw /sys
for d in block bus class dev devices firmware kernel module power; do
    mount --bind "/sys/$d" "/sys/$d"
    mount -o remount,bind,ro "/sys/$d"
done
mkdir -p /run/udev
: >/run/udev/control
exec /lib/systemd/systemd
EOF
chmod 755 "$1"/usr/local/sbin/pap-boot
"#;

static LOCK: Mutex<()> = Mutex::new(());

fn key() -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for part in [SUITE, &PACKAGES.join(","), CUSTOMIZE] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    hex[..16].to_string()
}

/// The image in Docker, made once (its tar is cached outside the checkout).
pub fn image() -> String {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    crate::docker::ensure_daemon();
    let key = key();
    let tag = format!("pap-e2e-systemd:{key}");
    let have = Command::new("docker")
        .args(["image", "inspect", &tag])
        .output()
        .unwrap()
        .status
        .success();
    if have {
        return tag;
    }
    std::fs::create_dir_all(CACHE).unwrap();
    let tar = Path::new(CACHE).join(format!("systemd-{SUITE}-{key}.tar"));
    if !tar.exists() {
        // Tars of earlier keys are not used again.
        for e in std::fs::read_dir(CACHE).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("systemd-{SUITE}-")) && name.ends_with(".tar") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let started = Instant::now();
        let tmp = tar.with_extension(format!("tar.{}", std::process::id()));
        let source = crate::apt::host_debian_source();
        crate::run(
            Command::new("mmdebstrap")
                .args(["--variant=apt", "--format=tar", "--quiet"])
                .arg(format!("--include={}", PACKAGES.join(",")))
                .arg(format!("--customize-hook={CUSTOMIZE}"))
                .arg(SUITE)
                .arg(&tmp)
                .arg(format!("deb {source} {SUITE} main")),
            "mmdebstrap making the systemd test system",
        );
        std::fs::rename(&tmp, &tar).unwrap();
        eprintln!(
            "made the systemd test system in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    crate::run(
        Command::new("docker").arg("import").arg(&tar).arg(&tag),
        "docker import",
    );
    tag
}

/// The label of the tests' containers.
pub const LABEL: &str = "pap-e2e-systemd";

/// A created container, removed (with everything in it) on drop.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

/// A booted container.
pub struct Machine {
    container: Container,
    /// Its network namespace, held open for [`Machine::in_netns`].
    netns: std::fs::File,
}

impl Machine {
    /// Boots a fresh system and waits until systemd says it is running,
    /// with the `.deb` installed (by `dpkg -i`, so its dependencies must
    /// already be there).
    pub fn boot() -> Machine {
        let image = image();
        let out = crate::output(Command::new("docker").args([
            "create",
            "--network",
            "none",
            "--cap-add",
            "SYS_ADMIN",
            "--cap-add",
            "NET_ADMIN",
            "--cap-add",
            "SYS_PTRACE",
            "--security-opt",
            "seccomp=unconfined",
            "--cgroupns=private",
            "--ulimit",
            "core=0",
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/run/lock",
            "--tmpfs",
            "/tmp",
            "-e",
            "container=docker",
            "--label",
            LABEL,
            &image,
            "/usr/local/sbin/pap-boot",
        ]));
        assert!(
            out.status.success(),
            "docker create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // From here on the guard removes the container, also on failure.
        let container = Container(String::from_utf8_lossy(&out.stdout).trim().to_string());
        crate::run(
            Command::new("docker").args(["start", &container.0]),
            "docker start",
        );
        let pid = crate::run(
            Command::new("docker").args(["inspect", "-f", "{{.State.Pid}}", &container.0]),
            "docker inspect",
        );
        let netns = std::fs::File::open(format!("/proc/{}/ns/net", pid.trim()))
            .unwrap_or_else(|e| panic!("the container's network namespace: {e}"));
        let m = Machine { container, netns };
        // PID 1's socket comes up a moment after the container starts;
        // until then systemctl cannot ask, and says "offline" or nothing.
        let deadline = Instant::now() + Duration::from_secs(60);
        let state = loop {
            let out = m.exec(&["timeout", "60", "systemctl", "is-system-running", "--wait"]);
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !matches!(state.as_str(), "" | "offline") || Instant::now() > deadline {
                break state;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if state != "running" {
            let why = m.exec(&[
                "sh",
                "-c",
                "systemctl --failed --no-legend; journalctl -b --no-pager | tail -30",
            ]);
            let logs = crate::output(Command::new("docker").args(["logs", "--tail", "20", m.id()]));
            panic!(
                "systemd in the container is {state:?}, not running:\n{}{}{}",
                String::from_utf8_lossy(&why.stdout),
                String::from_utf8_lossy(&why.stderr),
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        m.copy_in(
            &crate::package("debian", "deb"),
            "/root/pulp-auth-proxy.deb",
        );
        m.sh("dpkg -i /root/pulp-auth-proxy.deb >/dev/null");
        m
    }

    /// The container's ID.
    pub fn id(&self) -> &str {
        &self.container.0
    }

    /// `docker exec` (what it prints is scanned for the credentials).
    pub fn exec(&self, args: &[&str]) -> Output {
        crate::output(Command::new("docker").arg("exec").arg(self.id()).args(args))
    }

    /// Runs `script` with `sh -e` and insists it succeeds; its stdout.
    pub fn sh(&self, script: &str) -> String {
        let out = self.exec(&["sh", "-ec", script]);
        assert!(
            out.status.success(),
            "in the container: {script}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `systemctl ARGS`: (success, stdout and stderr).
    pub fn systemctl(&self, args: &[&str]) -> (bool, String) {
        let out = self.exec(&[&["systemctl"], args].concat());
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// One property of a unit (`systemctl show -P`).
    pub fn property(&self, unit: &str, name: &str) -> String {
        self.sh(&format!("systemctl show -P {name} {unit}"))
            .trim()
            .to_string()
    }

    /// Copies a host file into the container (not under a tmpfs).
    pub fn copy_in(&self, from: &Path, to: &str) {
        crate::run(
            Command::new("docker")
                .arg("cp")
                .arg(from)
                .arg(format!("{}:{to}", self.id())),
            "docker cp",
        );
    }

    /// Writes `data` to `path` with `mode`, through stdin: a secret never
    /// appears on a command line.
    pub fn write(&self, path: &str, data: &[u8], mode: &str) {
        let out = crate::output_with_input(
            Command::new("docker")
                .args(["exec", "-i", self.id(), "sh", "-ec"])
                .arg("umask 077; cat >\"$1.new\"; chmod \"$2\" \"$1.new\"; mv \"$1.new\" \"$1\"")
                .args(["sh", path, mode]),
            data,
        );
        assert!(
            out.status.success(),
            "writing {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The journal of `unit` since boot, one message per line.
    pub fn journal(&self, unit: &str) -> String {
        self.sh(&format!("journalctl --no-pager -o cat -u {unit}"))
    }

    /// The journal of `unit` as journald's JSON entries.
    pub fn journal_entries(&self, unit: &str) -> Vec<serde_json::Value> {
        self.sh(&format!("journalctl --no-pager -o json -u {unit}"))
            .lines()
            .map(|l| serde_json::from_str(l).expect("journalctl -o json"))
            .collect()
    }

    /// Polls `check` every 100 ms until it yields a value; fails with
    /// `what` and the journal of `unit` after `within`.
    pub fn wait_for<T>(
        &self,
        within: Duration,
        what: &str,
        unit: &str,
        mut check: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = check() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {within:?}; journal of {unit}:\n{}",
                self.journal(unit)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `f` on a thread inside the container's network namespace:
    /// sockets it makes stay there.
    pub fn in_netns<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn_in_netns(f)
            .join()
            .expect("a thread in the container's namespace")
    }

    /// [`Machine::in_netns`] without waiting.
    pub fn spawn_in_netns<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let ns = self.netns.try_clone().unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("setns into the container's network namespace (the tests need root)");
            f()
        })
    }

    /// A listener inside the container's network namespace.
    pub fn bind(&self, addr: SocketAddr) -> std::net::TcpListener {
        self.in_netns(move || std::net::TcpListener::bind(addr).expect("bind in the container"))
    }

    /// A connection made inside the container's network namespace.
    pub fn connect(&self, addr: SocketAddr) -> std::io::Result<std::net::TcpStream> {
        self.in_netns(move || std::net::TcpStream::connect(addr))
    }
}
