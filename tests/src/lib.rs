//! Test support for the end-to-end suite: a certificate authority made per
//! run, a recording HTTPS upstream that checks the exact Basic header, the
//! real `pulp-auth-proxy` binary run as a child, a plain HTTP client, and a
//! leak scanner that runs when a test's proxy goes away.

pub mod apt;
pub mod client;
pub mod docker;
pub mod kolla;
pub mod leak;
pub mod netns;
pub mod pki;
pub mod proxy;
pub mod pulp;
pub mod registry;
pub mod rpm;
pub mod storage;
pub mod systemd;
pub mod upstream;

/// The test credentials. The password is obviously fake and holds every
/// character that changes under some encoding (`:`, `@`, `/`, `%`, `+`,
/// space), so encoding bugs and leaks show up in any form.
pub const USERNAME: &str = "ci-user";
/// See [`USERNAME`].
pub const PASSWORD: &str = "fake pass:@/%+ word";

/// The `Authorization` value the upstream requires.
pub fn basic_header() -> String {
    basic_header_of(PASSWORD)
}

/// The `Authorization` value for the test user with `password` (one a
/// test rotates to).
pub fn basic_header_of(password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USERNAME}:{password}"))
    )
}

/// The overall exposure `systemd-analyze security` printed in `text`.
pub fn exposure_score(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.split("Overall exposure level for ").nth(1))
        .and_then(|rest| rest.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// `PATH` for the children tests start: fixed, since tests never read the
/// process environment.
pub fn host_path() -> &'static str {
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
}

/// Polls `check` every 20 ms until it yields a value, failing the test
/// with `what` after `within`; never blocks the runtime, which may be
/// serving the test's upstream.
pub async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    within: std::time::Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {what} within {within:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Runs `cmd` to completion and scans what it printed for the
/// credentials: every program a test runs goes through here (or through
/// [`netns::Netns::run`], which does the same).
pub fn output(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()));
    leak::assert_clean(&format!("{:?}'s stdout", cmd.get_program()), &out.stdout);
    leak::assert_clean(&format!("{:?}'s stderr", cmd.get_program()), &out.stderr);
    out
}

/// [`output`] for a program that reads `input` on stdin (a secret a test
/// hands over stays off the command line).
pub fn output_with_input(cmd: &mut std::process::Command, input: &[u8]) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()));
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    leak::assert_clean(&format!("{:?}'s stdout", cmd.get_program()), &out.stdout);
    leak::assert_clean(&format!("{:?}'s stderr", cmd.get_program()), &out.stderr);
    out
}

/// The one package `dir` (under target/, where tests/packaging/build.sh
/// puts them) holds with extension `ext`.
pub fn package(dir: &str, ext: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target")
        .join(dir);
    let found: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; build the packages with tests/packaging/build.sh (tests/run does)",
                dir.display()
            )
        })
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    assert_eq!(found.len(), 1, "one .{ext} in {}: {found:?}", dir.display());
    found.into_iter().next().unwrap()
}

/// Writes an executable script that the test then runs. This process never
/// holds it open for writing: a child another test thread forks meanwhile
/// would inherit that descriptor until its exec, and running the script
/// then fails with ETXTBSY ("Text file busy").
pub fn write_script(path: &std::path::Path, text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("cat > \"$1\" && chmod 755 \"$1\"")
        .arg("sh")
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sh");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "writing {}: {status}", path.display());
}

/// Runs `cmd` through [`output`], failing the test with `what`, the exit
/// status and the output when it does not succeed; returns its stdout.
pub fn run(cmd: &mut std::process::Command, what: &str) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ci-builder --config CFG audit IMAGE`: its exit code and output, which
/// is scanned for the credentials.
pub fn audit(cfg: &std::path::Path, image: &str) -> (i32, String) {
    let out = output(
        std::process::Command::new(bin("ci-builder"))
            .arg("--config")
            .arg(cfg)
            .args(["audit", image]),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Where cargo put the workspace's binaries, next to this test executable.
pub fn bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`)",
        path.display()
    );
    path
}

/// A trusted upstream and a proxy in front of it, the usual test set-up.
pub struct Setup {
    /// The recording upstream.
    pub upstream: upstream::Upstream,
    /// Config, password file and logs.
    pub scratch: proxy::Scratch,
    /// The running proxy.
    pub proxy: proxy::Proxy,
    /// Every response a test wants leak-checked; scanned on drop.
    pub seen: std::sync::Mutex<Vec<u8>>,
    /// The CA the upstream's certificate is from (and `ca.pem`).
    pub ca: pki::TestCa,
}

impl Setup {
    /// The default: upstream with TLS 1.2 and 1.3, proxy with defaults.
    pub async fn start() -> Setup {
        Self::start_with(upstream::Versions::Both, "", |_| {}).await
    }

    /// With `prefix` appended to the upstream URL and `edit` applied to the
    /// config.
    pub async fn start_with(
        versions: upstream::Versions,
        prefix: &str,
        edit: impl FnOnce(&mut proxy::ConfigFile),
    ) -> Setup {
        let ca = pki::TestCa::new();
        let upstream = upstream::Upstream::start(ca.leaf(), versions).await;
        let scratch = proxy::Scratch::new();
        ca.write_pem(&scratch.path("ca.pem"));
        let mut config = proxy::config(
            &format!("{}{prefix}", upstream.url()),
            &scratch.path("ca.pem"),
            &scratch.path("pw"),
        );
        edit(&mut config);
        let config = scratch.write_config(&config);
        let proxy = tokio::task::spawn_blocking(move || proxy::Proxy::start(&config, &[]))
            .await
            .unwrap();
        Setup {
            upstream,
            scratch,
            proxy,
            seen: Default::default(),
            ca,
        }
    }

    /// The config the proxy was started with.
    pub fn config(&self) -> proxy::ConfigFile {
        let text = std::fs::read_to_string(self.scratch.path("config.toml")).unwrap();
        proxy::ConfigFile(text.parse().unwrap())
    }

    /// Remembers a response for the final leak check.
    pub fn saw(&self, got: &client::Got) {
        let mut seen = self.seen.lock().unwrap();
        seen.extend_from_slice(format!("{:?}", got.headers).as_bytes());
        seen.extend_from_slice(&got.body);
    }

    /// Checks now what the drop checks anyway: no credential in any
    /// response or log line so far.
    pub fn assert_no_leaks(&self) {
        leak::assert_clean("a response", &self.seen.lock().unwrap());
        leak::assert_clean("the proxy's log", self.proxy.log_text().as_bytes());
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        // The proxy's own drop scans its log.
        if !std::thread::panicking() {
            leak::assert_clean("a response", &self.seen.lock().unwrap());
        }
    }
}

/// A config edit that sets `keys` (TOML lines) in the `[proxy]` section.
pub fn proxy_keys(keys: &str) -> impl FnOnce(&mut proxy::ConfigFile) + '_ {
    move |c| {
        c.keys("proxy", keys);
    }
}

/// A config edit that sets `keys` (TOML lines) in the `[upstream]` section.
pub fn upstream_keys(keys: &str) -> impl FnOnce(&mut proxy::ConfigFile) + '_ {
    move |c| {
        c.keys("upstream", keys);
    }
}

/// A config edit that turns the cache on in `dir`, bounded by `max_size`.
pub fn cache_section(dir: &std::path::Path, max_size: &str) -> impl FnOnce(&mut proxy::ConfigFile) {
    let dir = dir.to_str().expect("a UTF-8 path").to_string();
    let max_size = max_size.to_string();
    move |c| {
        c.set("cache", "dir", dir)
            .set("cache", "max_size", max_size);
    }
}

/// How many connections wait in the kernel's accept queue of the TCP
/// listener on `addr` (IPv4), from `/proc/net/tcp`.
pub fn accept_queue(addr: std::net::SocketAddr) -> usize {
    let std::net::IpAddr::V4(ip) = addr.ip() else {
        panic!("accept_queue reads IPv4 listeners only")
    };
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(ip.octets()),
        addr.port()
    );
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        // Fields: sl, local, remote, state (0A = LISTEN), tx_queue:rx_queue;
        // for a listener rx_queue is the accept queue's length.
        .find(|f| f.len() > 4 && f[1] == local && f[3] == "0A")
        .and_then(|f| f[4].split(':').nth(1).map(str::to_string))
        .and_then(|rx| usize::from_str_radix(&rx, 16).ok())
        .unwrap_or_else(|| panic!("no listener on {addr} in /proc/net/tcp"))
}

/// The value of one series (`name{labels}` exactly) in a Prometheus text
/// exposition; 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l[series.len()..].trim().parse().ok())
        .unwrap_or(0.0)
}

/// The status code of the first response in raw response bytes.
pub fn first_status(raw: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(raw.get(..12)?).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// How many responses raw response bytes hold.
pub fn count_responses(raw: &[u8]) -> usize {
    raw.windows(9).filter(|w| w == b"HTTP/1.1 ").count()
}

/// A child process killed and reaped on drop, also when a test panics.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
