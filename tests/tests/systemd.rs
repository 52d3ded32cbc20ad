//! The shipped units, unchanged, started by a real systemd (252, as on
//! Rocky Linux 9) from the installed `.deb`, in a container of their own
//! (see `e2e::systemd` for what the container needs and why). The upstream
//! is the stand-in, listening inside the container's network namespace;
//! the clients connect there too. Each test boots its own system.

use e2e::client::{self, Got};
use e2e::pki::TestCa;
use e2e::proxy::ConfigFile;
use e2e::systemd::Machine;
use e2e::upstream::{Content, Upstream, Versions};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const UNIT: &str = "pulp-auth-proxy.service";
const ACTIVATED: &str = "pulp-auth-proxy-activated.service";
const SOCKET: &str = "pulp-auth-proxy.socket";
/// The shipped configuration's `proxy.listen`.
const PROXY: &str = "192.168.33.3:80";
const UPSTREAM: &str = "127.0.0.1:8443";
const CONFIG: &str = "/etc/pulp-auth-proxy/config.toml";
const PASSWORD_FILE: &str = "/etc/pulp-auth-proxy/pulp-password";
const CA_FILE: &str = "/etc/pulp-auth-proxy/ca.pem";
/// The password rotated to: as fake, and as awkward to encode, as the first.
const ROTATED: &str = "fake rotated:@/%+ secret";
const PACKAGE: &str = "/pulp/content/debian/pool/main/h/hello/hello_2.10-3_amd64.deb";

/// Why `systemctl reload` cannot rotate a `LoadCredential=` password here.
const COPY_AT_START: &str = "systemd 252 (Rocky Linux 9; 257 behaves the same) copies a \
    LoadCredential= file once, when the service starts, and keeps that copy immutable while \
    it runs; only systemd 260 can refresh it on reload (RefreshOnReload=). So under the \
    shipped units SIGHUP re-reads the same copy, and rotating the password is a restart \
    (refusing nothing under socket activation)";

/// A booted system with the `.deb` installed, the shipped configuration
/// pointed at the stand-in upstream, the password in place and the bridge
/// made by `ci-builder net up`. No unit started yet.
struct Rig {
    m: Machine,
    upstream: Upstream,
    rt: tokio::runtime::Runtime,
    /// What the rig wrote to [`CA_FILE`].
    ca_pem: Vec<u8>,
}

impl Rig {
    fn new(edit: impl FnOnce(&mut ConfigFile)) -> Rig {
        let m = Machine::boot();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let ca = TestCa::new();
        let listener = m.bind(UPSTREAM.parse().unwrap());
        let upstream = {
            let _in = rt.enter();
            Upstream::start_on_listener(listener, ca.leaf(), Versions::Both)
        };
        upstream.put(PACKAGE, Content::Pattern(300_000));
        let ca_pem = ca.pem().into_bytes();
        m.write(CA_FILE, &ca_pem, "644");
        m.write(
            PASSWORD_FILE,
            format!("{}\n", e2e::PASSWORD).as_bytes(),
            "600",
        );
        let mut config = ConfigFile(m.sh(&format!("cat {CONFIG}")).parse().unwrap());
        config
            .set("upstream", "url", format!("https://{UPSTREAM}"))
            .set("upstream", "ca_file", CA_FILE);
        edit(&mut config);
        m.write(CONFIG, config.to_string().as_bytes(), "644");
        m.sh("ci-builder net up >/dev/null 2>&1");
        Rig {
            m,
            upstream,
            rt,
            ca_pem,
        }
    }

    fn get(&self, target: &str) -> Got {
        let got = self
            .m
            .connect(PROXY.parse().unwrap())
            .map_err(|e| format!("connect: {e}"))
            .and_then(|conn| self.rt.block_on(client::send_on(conn, "GET", target, &[])))
            .unwrap_or_else(|e| {
                panic!(
                    "GET {target}: {e}\n{}{}{}",
                    self.m.journal(UNIT),
                    self.m.journal(SOCKET),
                    self.m.journal(ACTIVATED)
                )
            });
        e2e::leak::assert_clean("a response", &got.body);
        assert_clean_of_rotated("a response", &got.body);
        got
    }

    /// Starts `unit`, failing with its journal.
    fn start(&self, unit: &str) {
        let (ok, text) = self.m.systemctl(&["start", unit]);
        assert!(
            ok,
            "systemctl start {unit}: {text}\n{}",
            self.m.journal(unit)
        );
    }

    /// The Authorization header of the upstream's last request.
    fn last_authorization(&self) -> String {
        let requests = self.upstream.requests();
        let last = requests.last().expect("the upstream saw a request");
        last.header("authorization").join(",")
    }

    /// Waits for the line `needle` in `unit`'s journal; the journal.
    fn wait_for_journal(&self, unit: &str, needle: &str) -> String {
        self.m.wait_for(Duration::from_secs(30), needle, unit, || {
            let j = self.m.journal(unit);
            j.contains(needle).then_some(j)
        })
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // The whole journal of the boot, every field of every entry
            // (the export format), for both passwords in every form.
            let journal = self.m.sh("journalctl -b --no-pager -o export");
            assert_clean_of_rotated("the journal", journal.as_bytes());
        }
    }
}

/// The leak check for [`ROTATED`] in every form, as every program's output
/// is checked for the first password.
fn assert_clean_of_rotated(what: &str, bytes: &[u8]) {
    let forms: Vec<(String, Vec<u8>)> = e2e::leak::forms_of(ROTATED)
        .into_iter()
        .map(|(name, bytes)| (format!("rotated, {name}"), bytes))
        .collect();
    e2e::leak::assert_lacks(what, bytes, &forms);
}

/// Asserts the overall exposure `systemd-analyze security` gives the
/// loaded `unit` is at most `max`.
fn assert_exposure_at_most(m: &Machine, unit: &str, max: f64) {
    let text = m.sh(&format!("systemd-analyze security --no-pager {unit}"));
    let score = e2e::exposure_score(&text).unwrap_or_else(|| panic!("no exposure in:\n{text}"));
    assert!(score <= max, "{unit}: exposure {score} > {max}:\n{text}");
}

/// The access lines (`request`) of the journal's text.
fn access_lines(journal: &str) -> Vec<&str> {
    journal
        .lines()
        .filter(|l| l.contains(" access: request "))
        .collect()
}

#[test]
fn the_bind_unit_starts_on_its_credential_once_ready_serves_and_logs_access_lines() {
    let r = Rig::new(|_| {});
    assert!(
        r.m.connect(PROXY.parse().unwrap()).is_err(),
        "something listens before the unit starts"
    );
    // Type=notify: `systemctl start` returns once READY=1 came, which the
    // proxy sends after its socket is bound, so a connection succeeds at
    // once (under Type=simple it would race the proxy's start).
    r.start(UNIT);
    let conn = r.m.connect(PROXY.parse().unwrap());
    assert!(
        conn.is_ok(),
        "not listening when the unit became active: {conn:?}"
    );
    assert_eq!(r.m.property(UNIT, "ActiveState"), "active");
    assert_eq!(r.m.property(UNIT, "SubState"), "running");
    assert_eq!(
        r.m.property(UNIT, "StatusText"),
        format!("serving on {PROXY}")
    );
    let journal = r.m.journal(UNIT);
    assert!(
        journal.contains("loaded the upstream password source=password file /run/credentials/pulp-auth-proxy.service/pulp-password"),
        "{journal}"
    );
    assert!(journal.contains("socket=\"bound\""), "{journal}");
    // The credential is systemd's read-only in-memory copy, and the
    // service's dynamic user reads it, not root.
    let mount =
        r.m.sh("findmnt -n -o FSTYPE,OPTIONS /run/credentials/pulp-auth-proxy.service");
    let mount: Vec<&str> = mount.split_whitespace().collect();
    assert!(
        matches!(mount[0], "ramfs" | "tmpfs") && mount[1].starts_with("ro,"),
        "{mount:?}"
    );
    let pid = r.m.property(UNIT, "MainPID");
    let uid = r.m.sh(&format!("ps -o uid= -p {pid}"));
    assert_ne!(uid.trim(), "0", "the proxy runs as root");
    assert_exposure_at_most(&r.m, UNIT, 1.5);

    let got = r.get(PACKAGE);
    assert_eq!(got.status, 200);
    assert_eq!(got.body.len(), 300_000);
    assert_eq!(r.last_authorization(), e2e::basic_header());
    let journal = r.wait_for_journal(UNIT, " access: request ");
    let line = access_lines(&journal)[0];
    for field in [
        "peer=192.168.33.3:",
        "method=GET",
        &format!("path={PACKAGE}"),
        "status=200",
        "bytes=300000",
        "duration_ms=",
        "upstream_ms=",
    ] {
        assert!(line.contains(field), "{field} missing: {line}");
    }

    // The same under log_format = "json": one object per journal entry.
    let mut config = ConfigFile(r.m.sh(&format!("cat {CONFIG}")).parse().unwrap());
    config.set("proxy", "log_format", "json");
    r.m.write(CONFIG, config.to_string().as_bytes(), "644");
    let (ok, text) = r.m.systemctl(&["restart", UNIT]);
    assert!(ok, "{text}");
    let pid = r.m.property(UNIT, "MainPID");
    assert_eq!(r.get(PACKAGE).status, 200);
    let access =
        r.m.wait_for(Duration::from_secs(30), "a JSON access line", UNIT, || {
            r.m.journal_entries(UNIT)
                .into_iter()
                .filter(|e| e["_PID"] == pid.as_str())
                .filter_map(|e| {
                    serde_json::from_str::<serde_json::Value>(e["MESSAGE"].as_str()?).ok()
                })
                .find(|v| v["fields"]["message"] == "request")
        });
    assert_eq!(access["target"], "access");
    assert_eq!(access["fields"]["status"], 200);
    assert_eq!(access["fields"]["path"], PACKAGE);
    assert_eq!(access["fields"]["bytes"], 300_000);

    // proxy.interface under the sandbox: the netlink check finds the
    // address gone, the start fails with 78, and systemd does not retry.
    r.m.sh("ip addr del 192.168.33.3/24 dev breth1");
    let (ok, _) = r.m.systemctl(&["restart", UNIT]);
    assert!(!ok, "started without its address");
    let journal = r.m.journal(UNIT);
    assert!(
        journal.contains("proxy.listen 192.168.33.3 is not assigned to interface breth1"),
        "{journal}"
    );
    assert_eq!(r.m.property(UNIT, "ActiveState"), "failed", "{journal}");
    assert_eq!(r.m.property(UNIT, "NRestarts"), "0", "{journal}");
}

#[test]
fn reload_rereads_what_it_can_keeps_the_old_on_failure_and_stop_drains() {
    let r = Rig::new(|_| {});
    let (open, gate) = tokio::sync::watch::channel(false);
    r.upstream.put(
        "/pulp/content/big.deb",
        Content::Gated {
            len: 2_000_000,
            gate: gate.clone(),
        },
    );
    r.start(UNIT);
    let pid = r.m.property(UNIT, "MainPID");
    let in_flight = |r: &Rig| {
        let conn = r.m.connect(PROXY.parse().unwrap()).unwrap();
        let before = r.upstream.count("/pulp/content/big.deb");
        let task =
            r.rt.spawn(client::send_on(conn, "GET", "/pulp/content/big.deb", &[]));
        r.m.wait_for(
            Duration::from_secs(10),
            "the transfer upstream",
            UNIT,
            || (r.upstream.count("/pulp/content/big.deb") > before).then_some(()),
        );
        task
    };
    let transfer = in_flight(&r);

    // A CA file that no longer loads: the reload fails, the trust anchors
    // in force stay (a new upstream connection is still verified), the
    // unit stays active.
    r.m.write(CA_FILE, b"not a certificate\n", "644");
    let (ok, text) = r.m.systemctl(&["reload", UNIT]);
    assert!(ok, "systemctl reload: {text}");
    r.wait_for_journal(
        UNIT,
        "SIGHUP: reload failed, the current password and trust anchors stay in force",
    );
    assert_eq!(r.m.property(UNIT, "ActiveState"), "active");
    assert_eq!(r.m.property(UNIT, "MainPID"), pid);
    assert_eq!(r.get(PACKAGE).status, 200);

    // A new password file and a good CA file: the reload succeeds, but
    // the password in force is still the copy systemd made at start.
    r.m.write(PASSWORD_FILE, format!("{ROTATED}\n").as_bytes(), "600");
    r.m.write(CA_FILE, &r.ca_pem, "644");
    let (ok, text) = r.m.systemctl(&["reload", UNIT]);
    assert!(ok, "systemctl reload: {text}");
    r.wait_for_journal(
        UNIT,
        "SIGHUP: reloaded the upstream password and trust anchors",
    );
    assert_eq!(r.get(PACKAGE).status, 200);
    assert_eq!(r.last_authorization(), e2e::basic_header());
    eprintln!("reload keeps the password it started with: {COPY_AT_START}");

    // The transfer that was in flight across both reloads ends whole.
    open.send(true).unwrap();
    let got = r.rt.block_on(transfer).unwrap().expect("the transfer");
    assert_eq!(got.status, 200);
    assert_eq!(got.body.len(), 2_000_000);

    // Rotation is a restart: the new copy is in force.
    r.upstream.expect_password(ROTATED);
    let (ok, text) = r.m.systemctl(&["restart", UNIT]);
    assert!(ok, "{text}");
    assert_eq!(r.get(PACKAGE).status, 200);
    assert_eq!(r.last_authorization(), e2e::basic_header_of(ROTATED));
    let pid = r.m.property(UNIT, "MainPID");

    // Stop drains: a transfer in flight when SIGTERM comes still ends
    // whole, and the proxy exits 0.
    let (open, gate) = tokio::sync::watch::channel(false);
    r.upstream.put(
        "/pulp/content/big.deb",
        Content::Gated {
            len: 2_000_000,
            gate,
        },
    );
    let transfer = in_flight(&r);
    let started = Instant::now();
    let stop = {
        let id = r.m.id().to_string();
        std::thread::spawn(move || {
            e2e::output(std::process::Command::new("docker").args([
                "exec",
                &id,
                "systemctl",
                "stop",
                UNIT,
            ]))
        })
    };
    // systemd has sent SIGTERM once the unit is deactivating; then this
    // run of the proxy says it received it.
    r.m.wait_for(
        Duration::from_secs(30),
        "the unit deactivating",
        UNIT,
        || (r.m.property(UNIT, "ActiveState") == "deactivating").then_some(()),
    );
    r.m.wait_for(Duration::from_secs(30), "SIGTERM received", UNIT, || {
        let said = r.m.journal_entries(UNIT).iter().any(|e| {
            e["_PID"] == pid.as_str()
                && e["MESSAGE"]
                    .as_str()
                    .is_some_and(|m| m.contains("SIGTERM received"))
        });
        said.then_some(())
    });
    open.send(true).unwrap();
    let got =
        r.rt.block_on(transfer)
            .unwrap()
            .expect("the draining transfer");
    assert_eq!(got.status, 200);
    assert_eq!(got.body.len(), 2_000_000);
    let out = stop.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "stop took {:?}",
        started.elapsed()
    );
    assert_eq!(r.m.property(UNIT, "ActiveState"), "inactive");
    assert_eq!(r.m.property(UNIT, "Result"), "success");
    assert_eq!(r.m.property(UNIT, "ExecMainStatus"), "0");
}

#[test]
fn the_socket_activated_service_restarts_without_refusing_a_connection() {
    // Under this unit the credential is in its own directory; without
    // password_file the proxy finds it through $CREDENTIALS_DIRECTORY.
    let r = Rig::new(|c| {
        c.remove("upstream", "password_file");
    });
    r.start(SOCKET);
    assert_eq!(r.m.property(ACTIVATED, "ActiveState"), "inactive");
    assert_eq!(r.get(PACKAGE).status, 200, "the first connection starts it");
    assert_eq!(r.m.property(ACTIVATED, "ActiveState"), "active");
    let journal = r.m.journal(ACTIVATED);
    assert!(
        journal.contains("socket=\"socket from systemd\""),
        "{journal}"
    );
    assert_exposure_at_most(&r.m, ACTIVATED, 1.1);

    // A client keeps connecting across two restarts; every connection
    // must get its whole answer.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let client = {
        let (stop, done) = (stop.clone(), done.clone());
        let addr: SocketAddr = PROXY.parse().unwrap();
        r.m.spawn_in_netns(move || {
            let mut failures = Vec::new();
            let mut slowest = Duration::ZERO;
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                match one_request(addr) {
                    Ok(200) => {
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(status) => failures.push(format!("status {status}")),
                    Err(e) => failures.push(e),
                }
                slowest = slowest.max(started.elapsed());
                if !failures.is_empty() {
                    break;
                }
            }
            (failures, slowest)
        })
    };
    let mut client = Stopping(stop, Some(client));
    for _ in 0..2 {
        let pid = r.m.property(ACTIVATED, "MainPID");
        let before = done.load(Ordering::SeqCst);
        r.m.wait_for(
            Duration::from_secs(10),
            "requests before the restart",
            ACTIVATED,
            || (done.load(Ordering::SeqCst) >= before + 5).then_some(()),
        );
        let (ok, text) = r.m.systemctl(&["restart", ACTIVATED]);
        assert!(ok, "{text}");
        assert_ne!(r.m.property(ACTIVATED, "MainPID"), pid);
        let after = done.load(Ordering::SeqCst);
        r.m.wait_for(
            Duration::from_secs(10),
            "requests after the restart",
            ACTIVATED,
            || (done.load(Ordering::SeqCst) >= after + 5).then_some(()),
        );
    }
    let (failures, slowest) = client.stop();
    assert!(
        failures.is_empty(),
        "refused or broken during restarts: {failures:?}"
    );
    eprintln!(
        "{} requests across two restarts, none refused; the slowest took {slowest:?}",
        done.load(Ordering::SeqCst)
    );

    // Rotating the password: a new file, then a restart.
    r.m.write(PASSWORD_FILE, format!("{ROTATED}\n").as_bytes(), "600");
    r.upstream.expect_password(ROTATED);
    let (ok, text) = r.m.systemctl(&["restart", ACTIVATED]);
    assert!(ok, "{text}");
    assert_eq!(r.get(PACKAGE).status, 200);
    assert_eq!(r.last_authorization(), e2e::basic_header_of(ROTATED));
}

/// A client thread told to stop, and joined, also when the test fails.
struct Stopping<T>(Arc<AtomicBool>, Option<std::thread::JoinHandle<T>>);

impl<T> Stopping<T> {
    fn stop(&mut self) -> T {
        self.0.store(true, Ordering::SeqCst);
        self.1.take().unwrap().join().unwrap()
    }
}

impl<T> Drop for Stopping<T> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
        if let Some(thread) = self.1.take() {
            let _ = thread.join();
        }
    }
}

/// One `GET` on a fresh connection, read to its end: the status, or why
/// the connection failed.
fn one_request(addr: SocketAddr) -> Result<u16, String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {PACKAGE} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut got = Vec::new();
    s.read_to_end(&mut got).map_err(|e| format!("read: {e}"))?;
    let status =
        e2e::first_status(&got).ok_or_else(|| format!("no response ({} bytes)", got.len()))?;
    let head_end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no head end")?
        + 4;
    if status == 200 && got.len() - head_end != 300_000 {
        return Err(format!("truncated body: {} bytes", got.len() - head_end));
    }
    Ok(status)
}

#[test]
fn a_wedged_worker_gets_the_service_restarted_by_the_watchdog() {
    // The switch exists in debug builds only: the packaged (release)
    // binary does not have it.
    let hook = "wedging worker 0 to test the watchdog";
    let r = Rig::new(|_| {});
    let has = |path: &str| r.m.exec(&["grep", "-qaF", hook, path]).status.success();
    assert!(
        !has("/usr/bin/pulp-auth-proxy"),
        "the packaged binary has the test switch"
    );
    let debug = e2e::bin("pulp-auth-proxy");
    r.m.copy_in(&debug, "/usr/bin/pulp-auth-proxy");
    assert!(
        has("/usr/bin/pulp-auth-proxy"),
        "the debug build lacks the test switch"
    );
    r.start(UNIT);
    let pid = r.m.property(UNIT, "MainPID");
    assert_eq!(r.m.property(UNIT, "WatchdogUSec"), "30s");
    r.m.sh(&format!("systemctl kill --kill-who=main -s SIGUSR2 {UNIT}"));
    r.wait_for_journal(UNIT, "wedging worker 0");
    // WatchdogSec=30s: the pings stop within 15 s, systemd gives up 30 s
    // after the last one.
    r.m.wait_for(
        Duration::from_secs(120),
        "a restart by the watchdog",
        UNIT,
        || {
            let again = r.m.property(UNIT, "NRestarts") == "1"
                && r.m.property(UNIT, "ActiveState") == "active"
                && r.m.property(UNIT, "MainPID") != pid;
            again.then_some(())
        },
    );
    let journal = r.m.journal(UNIT);
    assert!(
        journal.contains("withholding the watchdog ping"),
        "{journal}"
    );
    assert!(journal.contains("Watchdog timeout"), "{journal}");
    assert_eq!(r.get(PACKAGE).status, 200);
}

#[test]
fn the_cache_lives_in_the_state_directory_across_restarts() {
    let r = Rig::new(|c| {
        c.set("cache", "dir", "/var/lib/pulp-auth-proxy/cache")
            .set("cache", "max_size", "1 GiB");
    });
    r.start(UNIT);
    assert_eq!(r.get(PACKAGE).status, 200);
    let journal = r.wait_for_journal(UNIT, "cache=miss");
    assert!(!journal.contains("cache off"), "{journal}");
    // The fill lands its entry after the client has the body; restart
    // only once it is on disk. DynamicUser= keeps the state directory
    // under /var/lib/private.
    r.m.wait_for(
        Duration::from_secs(30),
        "the cache entry on disk",
        UNIT,
        || {
            let files =
                r.m.sh("find /var/lib/private/pulp-auth-proxy/cache -type f -size +290k | wc -l");
            (files.trim() != "0").then_some(())
        },
    );
    let (ok, text) = r.m.systemctl(&["restart", UNIT]);
    assert!(ok, "{text}");
    let got = r.get(PACKAGE);
    assert_eq!(got.status, 200);
    assert_eq!(got.body.len(), 300_000);
    r.wait_for_journal(UNIT, "cache=hit");
    assert_eq!(r.upstream.count(PACKAGE), 1, "asked the upstream again");
}

#[test]
fn networkd_makes_the_bridge_from_the_persisted_files_and_the_unit_binds_to_it() {
    let r = Rig::new(|_| {});
    // The rig's `ci-builder net up` made the bridge; networkd must make
    // it from nothing.
    r.m.sh("ci-builder net down >/dev/null 2>&1");
    assert!(
        !r.m.exec(&["ip", "link", "show", "breth1"]).status.success(),
        "ci-builder net down left breth1"
    );
    r.m.sh("ci-builder net persist --dir /etc/systemd/network");
    let (ok, text) = r.m.systemctl(&["start", "systemd-networkd.service"]);
    assert!(ok, "{text}");
    r.m.wait_for(
        Duration::from_secs(30),
        "192.168.33.3/24 on breth1",
        "systemd-networkd",
        || {
            let out = r.m.exec(&["ip", "-j", "addr", "show", "dev", "breth1"]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            let has = v[0]["addr_info"]
                .as_array()?
                .iter()
                .any(|a| a["local"] == "192.168.33.3" && a["prefixlen"] == 24);
            has.then_some(())
        },
    );
    r.start(UNIT);
    assert_eq!(r.get(PACKAGE).status, 200);
    // BindsTo= the device: the unit stops when the bridge goes away.
    r.m.sh("ip link del breth1");
    r.m.wait_for(
        Duration::from_secs(30),
        "the unit stopping with its device",
        UNIT,
        || (r.m.property(UNIT, "ActiveState") == "inactive").then_some(()),
    );
}
