//! The real `pulp-auth-proxy` binary, run as operators run it: a config
//! file, a 0600 password file, logs on stderr (kept in a file at trace
//! level). It is ready when it says `READY=1` on a notify socket, as under
//! systemd. When a [`Proxy`] goes away its log is scanned for the
//! credentials, unless the test is already failing.

use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A configuration file as a TOML table: edits name their section and
/// key, and one that finds nothing to change fails instead of doing
/// nothing.
#[derive(Debug, Clone)]
pub struct ConfigFile(pub toml::Table);

impl ConfigFile {
    /// Sets `section.key`, creating the section if needed.
    pub fn set(&mut self, section: &str, key: &str, value: impl Into<toml::Value>) -> &mut Self {
        self.section(section).insert(key.to_string(), value.into());
        self
    }

    /// Sets every key of `lines` (TOML `key = value` lines) in `section`.
    pub fn keys(&mut self, section: &str, lines: &str) -> &mut Self {
        let table: toml::Table = lines
            .parse()
            .unwrap_or_else(|e| panic!("not TOML key lines ({e}): {lines}"));
        self.section(section).extend(table);
        self
    }

    /// Removes `section.key`, which must be there.
    pub fn remove(&mut self, section: &str, key: &str) -> &mut Self {
        assert!(
            self.section(section).remove(key).is_some(),
            "no {section}.{key} to remove in:\n{self}"
        );
        self
    }

    /// `section.key` as a string, which must be there.
    pub fn get(&self, section: &str, key: &str) -> &str {
        self.0
            .get(section)
            .and_then(|s| s.get(key))
            .and_then(|v| v.as_str())
            .unwrap_or_else(|| panic!("no string {section}.{key} in:\n{self}"))
    }

    fn section(&mut self, name: &str) -> &mut toml::Table {
        self.0
            .entry(name)
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .unwrap_or_else(|| panic!("{name} is not a section"))
    }
}

impl fmt::Display for ConfigFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&toml::to_string(&self.0).map_err(|_| fmt::Error)?)
    }
}

/// A config for a proxy on `127.0.0.1:0` in front of `upstream_url`,
/// trusting `ca_file`, reading the password from `password_file`.
pub fn config(upstream_url: &str, ca_file: &Path, password_file: &Path) -> ConfigFile {
    let mut c = ConfigFile(toml::Table::new());
    c.set("proxy", "listen", "127.0.0.1:0")
        .set("upstream", "url", upstream_url)
        .set("upstream", "username", crate::USERNAME)
        .set("upstream", "password_file", path(password_file))
        .set("upstream", "ca_file", path(ca_file));
    c
}

fn path(p: &Path) -> String {
    p.to_str().expect("a UTF-8 path").to_string()
}

/// A scratch directory with a password file (mode 0600) in it.
pub struct Scratch {
    /// The directory; removed on drop.
    pub dir: tempfile::TempDir,
}

impl Scratch {
    /// Creates the directory and `pw` holding [`crate::PASSWORD`].
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let s = Self { dir };
        s.write_password(crate::PASSWORD);
        s
    }

    /// Path of a file in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Replaces the password file's content.
    pub fn write_password(&self, password: &str) {
        let p = self.path("pw");
        std::fs::write(&p, format!("{password}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// Writes `config` (a [`ConfigFile`], or text for a deliberately
    /// broken one) as `config.toml` and returns its path.
    pub fn write_config(&self, config: &(impl ToString + ?Sized)) -> PathBuf {
        let p = self.path("config.toml");
        std::fs::write(&p, config.to_string()).unwrap();
        // Whatever the umask: the proxy refuses a config others may change.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        p
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// A running proxy; killed on drop, and its log scanned for the
/// credentials then.
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The child process.
    pub child: Child,
    /// Its stderr.
    pub log: PathBuf,
    /// Its `NOTIFY_SOCKET`; `READY=1` has been read from it already.
    pub notify: UnixDatagram,
}

/// `wrapper` runs the binary (its path is appended as the last argument),
/// e.g. `ip netns exec NS`; empty runs it directly.
fn command(config: &Path, log: &Path, env: &[(&str, &str)], wrapper: &[&str]) -> Command {
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(crate::bin("pulp-auth-proxy"));
            c
        }
        None => Command::new(crate::bin("pulp-auth-proxy")),
    };
    cmd.arg("--config")
        .arg(config)
        .env_clear()
        .env("PATH", crate::host_path())
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// How long a proxy may take to say `READY=1`.
const READY_WITHIN: Duration = Duration::from_secs(10);

impl Proxy {
    /// Starts the binary and waits for its `READY=1`.
    pub fn start(config: &Path, env: &[(&str, &str)]) -> Proxy {
        Self::start_in(None, config, env)
    }

    /// Like [`Proxy::start`], inside network namespace `netns` when given.
    pub fn start_in(netns: Option<&str>, config: &Path, env: &[(&str, &str)]) -> Proxy {
        match netns {
            Some(ns) => Self::start_wrapped(&["ip", "netns", "exec", ns], config, env),
            None => Self::start_wrapped(&[], config, env),
        }
    }

    /// Like [`Proxy::start`], run by `wrapper` (see [`command`]). The
    /// address comes from the `STATUS=serving on ADDR` that accompanies
    /// `READY=1`.
    pub fn start_wrapped(wrapper: &[&str], config: &Path, env: &[(&str, &str)]) -> Proxy {
        let log = config.with_extension("log");
        let socket_path = config.with_extension("notify");
        let _ = std::fs::remove_file(&socket_path);
        let notify = UnixDatagram::bind(&socket_path).unwrap();
        let socket = path(&socket_path);
        let mut env = env.to_vec();
        env.push(("NOTIFY_SOCKET", &socket));
        let mut child = command(config, &log, &env, wrapper).spawn().unwrap();
        let deadline = Instant::now() + READY_WITHIN;
        let mut buf = [0u8; 4096];
        loop {
            // Short reads, so a proxy that exits early is seen at once.
            notify
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            if let Ok(n) = notify.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                if message.lines().any(|l| l == "READY=1") {
                    let addr = message
                        .lines()
                        .find_map(|l| l.strip_prefix("STATUS=serving on "))
                        .unwrap_or_else(|| panic!("READY=1 without the address: {message}"));
                    return Proxy {
                        addr: addr.parse().unwrap(),
                        child,
                        log,
                        notify,
                    };
                }
            }
            if let Some(status) = child.try_wait().unwrap() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("proxy exited with {status} before READY=1:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "proxy sent no READY=1 in {READY_WITHIN:?}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    }

    /// The next message on its notify socket, within `within`.
    pub fn next_notification(&self, within: Duration) -> String {
        let mut buf = [0u8; 4096];
        self.notify.set_read_timeout(Some(within)).unwrap();
        match self.notify.recv(&mut buf) {
            Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            Err(e) => panic!(
                "no sd_notify message within {within:?} ({e}); proxy log:\n{}",
                self.log_text()
            ),
        }
    }

    /// Runs the binary to completion (for start-up failures); its log is
    /// scanned for the credentials before it is returned.
    pub fn run(config: &Path, env: &[(&str, &str)]) -> (ExitStatus, String) {
        let log = config.with_extension("log");
        let mut child = command(config, &log, env, &[]).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                crate::leak::assert_clean("a start-up log", text.as_bytes());
                return (status, text);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "proxy still running after 10 s:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal by name (`TERM`, `HUP`, ...).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// Waits, up to 10 s, until its log holds `needle`; returns the log.
    pub async fn wait_for_log(&self, needle: &str) -> String {
        let what = format!("`{needle}` in the proxy's log");
        crate::wait_for(Duration::from_secs(10), &what, || async {
            let text = self.log_text();
            text.contains(needle).then_some(text)
        })
        .await
    }

    /// Waits, up to 10 s, until its log holds `count` lines with `needle`.
    pub async fn wait_for_log_count(&self, needle: &str, count: usize) {
        let what = format!("{count} lines with `{needle}` in the proxy's log");
        crate::wait_for(Duration::from_secs(10), &what, || async {
            let found = self
                .log_text()
                .lines()
                .filter(|l| l.contains(needle))
                .count();
            (found >= count).then_some(())
        })
        .await
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Peak resident memory so far, in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test keeps its own message; a second panic would abort.
        if !std::thread::panicking() {
            crate::leak::assert_clean("the proxy's log", self.log_text().as_bytes());
        }
    }
}
