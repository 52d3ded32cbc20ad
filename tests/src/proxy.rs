//! The real `pulp-auth-proxy` binary, run as operators run it: a config
//! file, a 0600 password file, logs on stderr (kept in a file at trace
//! level so the leak scanner can read them).

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A config for a proxy on `127.0.0.1:0` in front of `upstream_url`,
/// trusting `ca_file`, reading the password from `password_file`.
pub fn config(upstream_url: &str, ca_file: &Path, password_file: &Path) -> String {
    format!(
        r#"[proxy]
listen = "127.0.0.1:0"

[upstream]
url = "{upstream_url}"
username = "{user}"
password_file = "{pw}"
ca_file = "{ca}"
"#,
        user = crate::USERNAME,
        pw = password_file.display(),
        ca = ca_file.display(),
    )
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

    /// Writes `text` as `config.toml` and returns its path.
    pub fn write_config(&self, text: &str) -> PathBuf {
        let p = self.path("config.toml");
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// A running proxy; killed on drop.
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The child process.
    pub child: Child,
    /// Its stderr.
    pub log: PathBuf,
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
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

impl Proxy {
    /// Starts the binary and waits for its "listening" line.
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

    /// Like [`Proxy::start`], run by `wrapper` (see [`command`]).
    pub fn start_wrapped(wrapper: &[&str], config: &Path, env: &[(&str, &str)]) -> Proxy {
        let log = config.with_extension("log");
        let mut child = command(config, &log, env, wrapper).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            // Text (`listen=ADDR`) and JSON (`"listen":"ADDR"`) log lines.
            if let Some(addr) = text
                .lines()
                .find(|l| l.contains("listening"))
                .and_then(|l| {
                    l.split("listen=")
                        .nth(1)
                        .or_else(|| l.split("\"listen\":\"").nth(1))
                })
                .and_then(|rest| rest.split([' ', '"']).next())
            {
                return Proxy {
                    addr: addr.parse().unwrap(),
                    child,
                    log,
                };
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("proxy exited with {status} before listening:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "proxy did not listen in 10 s:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs the binary to completion (for start-up failures).
    pub fn run(config: &Path, env: &[(&str, &str)]) -> (ExitStatus, String) {
        let log = config.with_extension("log");
        let mut child = command(config, &log, env, &[]).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, std::fs::read_to_string(&log).unwrap_or_default());
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
    }
}
