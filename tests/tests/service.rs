//! The proxy as a systemd service: the shipped units' sandbox, readiness
//! and watchdog over a real notify socket, socket activation, --check-config,
//! SIGHUP credential rotation, health, readiness, metrics and JSON logs.

use e2e::client::{get, get_hashed, pattern_sha256};
use e2e::proxy::{Proxy, Scratch};
use e2e::upstream::Content;
use e2e::{leak, metric, proxy_keys, Setup};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn unit_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd")
}

/// The shipped units with the binary path pointed at the built binary.
fn staged_units() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let bin = e2e::bin("pulp-auth-proxy");
    for entry in std::fs::read_dir(unit_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with(".service") || name.ends_with(".socket") {
            let text = std::fs::read_to_string(&path).unwrap();
            let text = text.replace("/usr/bin/pulp-auth-proxy", bin.to_str().unwrap());
            std::fs::write(dir.path().join(name), text).unwrap();
        }
    }
    dir
}

#[test]
fn shipped_units_are_sandboxed_to_exposure_1_5_or_lower() {
    let dir = staged_units();
    for unit in [
        "pulp-auth-proxy.service",
        "pulp-auth-proxy-activated.service",
    ] {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(dir.path().join(unit))
            .output()
            .expect("systemd-analyze is missing: install Debian's systemd package");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let score =
            e2e::exposure_score(&text).unwrap_or_else(|| panic!("no exposure score in:\n{text}"));
        assert!(score <= 1.5, "{unit}: exposure {score} > 1.5:\n{text}");
    }
}

#[test]
fn shipped_units_verify() {
    let dir = staged_units();
    let out = Command::new("systemd-analyze")
        .current_dir(dir.path())
        .args([
            "verify",
            "pulp-auth-proxy.service",
            "pulp-auth-proxy.socket",
            "pulp-auth-proxy-activated.service",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn notifies_ready_watchdog_and_stopping() {
    let s = Setup::start().await;
    let cfg = s.scratch.path("notify.toml");
    std::fs::copy(s.scratch.path("config.toml"), &cfg).unwrap();
    // The harness itself waits for READY=1 with STATUS=serving on ADDR on
    // the notify socket; here the watchdog and stop messages follow.
    let mut p = tokio::task::block_in_place(|| Proxy::start(&cfg, &[("WATCHDOG_USEC", "200000")]));
    // Listening before READY: a request right now succeeds.
    s.upstream
        .put("/pulp/content/a", Content::Bytes("a".into()));
    assert_eq!(get(p.addr, "/pulp/content/a").await.status, 200);
    let started = Instant::now();
    let mut pings = 0;
    while pings < 3 {
        if p.next_notification(Duration::from_secs(10))
            .contains("WATCHDOG=1")
        {
            pings += 1;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "watchdog pings too slow"
    );
    p.signal("TERM");
    let stopping = loop {
        let m = p.next_notification(Duration::from_secs(10));
        if !m.contains("WATCHDOG=1") {
            break m;
        }
    };
    assert!(stopping.contains("STOPPING=1"), "{stopping}");
    let exit = tokio::task::block_in_place(|| p.wait(Duration::from_secs(10)));
    assert_eq!(exit.and_then(|e| e.code()), Some(0));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn inherited_socket_is_used_and_checked() {
    let s = Setup::start().await;
    s.upstream
        .put("/pulp/content/a", Content::Bytes("a".into()));
    let port = free_port();
    let mut text = s.config();
    text.set("proxy", "listen", format!("127.0.0.1:{port}"));
    let cfg = s.scratch.write_config(&text);
    let log = s.scratch.path("activated.log");
    // systemd-socket-activate passes the socket exactly as systemd does:
    // fd 3, LISTEN_FDS=1, LISTEN_PID of the program; it starts the program on
    // the first connection, which waits in the backlog meanwhile.
    let mut child = Command::new("systemd-socket-activate")
        .args(["-l", &format!("127.0.0.1:{port}"), "-E", "RUST_LOG=debug"])
        .arg(e2e::bin("pulp-auth-proxy"))
        .arg("--config")
        .arg(&cfg)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("systemd-socket-activate is missing: install Debian's systemd package");
    wait_for_port(port);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let got = get(addr, "/pulp/content/a").await;
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(got.status, 200, "{text}");
    assert!(text.contains("socket=\"socket from systemd\""), "{text}");

    // A socket on another address than proxy.listen is refused.
    let other = free_port();
    let mut child = Command::new("systemd-socket-activate")
        .args(["-l", &format!("127.0.0.1:{other}")])
        .arg(e2e::bin("pulp-auth-proxy"))
        .arg("--config")
        .arg(&cfg)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for_port(other);
    let _ = tokio::net::TcpStream::connect(("127.0.0.1", other)).await;
    let status = wait_exit(&mut child);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status, Some(78), "{text}");
    assert!(
        text.contains(&format!(
            "listens on 127.0.0.1:{other} but proxy.listen is 127.0.0.1:{port}"
        )),
        "{text}"
    );
    leak::assert_clean("the proxy's log", text.as_bytes());
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_exit(child: &mut std::process::Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

#[test]
fn check_config_validates_without_listening() {
    let s = Scratch::new();
    e2e::pki::TestCa::new().write_pem(&s.path("ca.pem"));
    let port = free_port();
    let mut text = e2e::proxy::config("https://127.0.0.1:9", &s.path("ca.pem"), &s.path("pw"));
    text.set("proxy", "listen", format!("127.0.0.1:{port}"));
    let cfg = s.write_config(&text);
    let out = e2e::output(
        Command::new(e2e::bin("pulp-auth-proxy"))
            .args(["--check-config", "--config"])
            .arg(&cfg),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("configuration is valid"), "{stdout}");
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "--check-config listened"
    );
    std::fs::write(s.path("ca.pem"), "junk").unwrap();
    let out = e2e::output(
        Command::new(e2e::bin("pulp-auth-proxy"))
            .args(["--check-config", "--config"])
            .arg(&cfg),
    );
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("upstream.ca_file"));
}

const NEW_PASSWORD: &str = "rotated fake:@/%+ pass";

#[tokio::test]
async fn sighup_rotates_credentials_without_interrupting_transfers() {
    let s = Setup::start().await;
    s.upstream
        .put("/pulp/content/a", Content::Bytes("a".into()));
    let len = 4 * 1024 * 1024;
    s.upstream.put(
        "/pulp/content/slow",
        Content::Slow {
            len,
            chunks: 10,
            delay: Duration::from_millis(150),
        },
    );
    let addr = s.proxy.addr;
    let transfer = tokio::spawn(async move { get_hashed(addr, "/pulp/content/slow").await });
    // The transfer is under way once the upstream has its request.
    e2e::wait_for(
        Duration::from_secs(10),
        "the slow request upstream",
        || async { (s.upstream.count("/pulp/content/slow") == 1).then_some(()) },
    )
    .await;

    s.scratch.write_password(NEW_PASSWORD);
    s.upstream.expect_password(NEW_PASSWORD);
    s.proxy.signal("HUP");
    s.proxy.wait_for_log("reloaded the upstream password").await;
    assert_eq!(
        get(addr, "/pulp/content/a").await.status,
        200,
        "new password not in use"
    );
    let last = s
        .upstream
        .requests()
        .last()
        .unwrap()
        .header("authorization");
    assert_ne!(last, vec![e2e::basic_header()], "old password still sent");

    // A broken new value is refused; the current one stays in force.
    std::fs::write(s.scratch.path("pw"), "\n").unwrap();
    s.proxy.signal("HUP");
    s.proxy.wait_for_log("reload failed").await;
    assert_eq!(get(addr, "/pulp/content/a").await.status, 200);

    let (status, n, digest) = transfer.await.unwrap().expect("in-flight transfer broke");
    assert_eq!((status.as_u16(), n), (200, len));
    assert_eq!(digest, pattern_sha256(len));
    s.assert_no_leaks();
    let log = s.proxy.log_text();
    assert!(
        !log.contains(NEW_PASSWORD) && !log.contains("rotated"),
        "new password in the log"
    );
}

/// A password file replaced by a FIFO (no writer, ever) must neither hang
/// the reload nor, with it, the signal handling: the reload is refused at
/// once, the old credential stays in force, and SIGTERM still stops the
/// proxy.
#[tokio::test]
async fn a_password_file_turned_fifo_blocks_neither_reload_nor_shutdown() {
    let mut s = Setup::start().await;
    s.upstream
        .put("/pulp/content/a", Content::Bytes("a".into()));
    let pw = s.scratch.path("pw");
    std::fs::remove_file(&pw).unwrap();
    let made = Command::new("mkfifo")
        .args(["-m", "600"])
        .arg(&pw)
        .status()
        .unwrap();
    assert!(made.success());
    s.proxy.signal("HUP");
    let log = s.proxy.wait_for_log("reload failed").await;
    assert!(log.contains("is a FIFO, not a regular file"), "{log}");
    assert_eq!(get(s.proxy.addr, "/pulp/content/a").await.status, 200);
    let last = s
        .upstream
        .requests()
        .last()
        .unwrap()
        .header("authorization");
    assert_eq!(last, vec![e2e::basic_header()], "the old password left");
    s.assert_no_leaks();
    s.proxy.signal("TERM");
    let status = s.proxy.wait(Duration::from_secs(10));
    assert_eq!(
        status.and_then(|st| st.code()),
        Some(0),
        "SIGTERM not obeyed"
    );
}

#[tokio::test]
async fn healthz_and_readyz_follow_the_upstream() {
    let s = Setup::start_with(
        Default::default(),
        "",
        proxy_keys("allowed_paths = [\"/pulp/content/\"]"),
    )
    .await;
    let health = get(s.proxy.addr, "/healthz").await;
    assert_eq!(health.status, 200);
    let ready = get(s.proxy.addr, "/readyz").await;
    assert_eq!(ready.status, 200, "{:?}", ready.body);
    let probes = s.upstream.requests();
    assert_eq!(probes.len(), 1, "healthz must not reach the upstream");
    assert_eq!(probes[0].target, "/pulp/api/v3/status/");
    assert_eq!(probes[0].header("authorization"), vec![e2e::basic_header()]);
    // Reused for proxy.readiness_cache_secs (5 by default): a second
    // readyz right away does not probe again, even when the answer would
    // differ now.
    s.upstream.refuse_credentials(true);
    assert_eq!(get(s.proxy.addr, "/readyz").await.status, 200);
    assert_eq!(s.upstream.requests().len(), 1);
    s.assert_no_leaks();

    // With no reuse, every readyz probes and follows the upstream at once.
    let s = Setup::start_with(
        Default::default(),
        "",
        proxy_keys("readiness_cache_secs = 0"),
    )
    .await;
    s.upstream.refuse_credentials(true);
    let down = get(s.proxy.addr, "/readyz").await;
    assert_eq!(down.status, 503);
    assert_eq!(down.body, "not ready: credentials-refused\n");
    s.upstream.refuse_credentials(false);
    assert_eq!(get(s.proxy.addr, "/readyz").await.status, 200);
    assert_eq!(s.upstream.requests().len(), 2);
    s.saw(&down);
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let s = Setup::start().await;
    s.upstream
        .put("/pulp/content/a", Content::Bytes("abcd".into()));
    for _ in 0..3 {
        get(s.proxy.addr, "/pulp/content/a").await;
    }
    get(s.proxy.addr, "/pulp/api/v3/users/").await;
    e2e::client::send(s.proxy.addr, "POST", "/pulp/content/a", &[]).await;
    s.upstream.refuse_credentials(true);
    get(s.proxy.addr, "/pulp/content/a").await;
    // A request is counted when its response body is done, which may be
    // just after the client has read it.
    let text = e2e::wait_for(Duration::from_secs(10), "six counted requests", || async {
        let m = get(s.proxy.addr, "/metrics").await;
        assert_eq!(m.status, 200);
        let text = String::from_utf8_lossy(&m.body).into_owned();
        let total: f64 = [
            "GET\",status=\"2xx",
            "GET\",status=\"4xx",
            "other\",status=\"4xx",
            "GET\",status=\"5xx",
        ]
        .iter()
        .map(|l| {
            metric(
                &text,
                &format!("pulp_auth_proxy_requests_total{{method=\"{l}\"}}"),
            )
        })
        .sum();
        (total >= 6.0).then_some(text)
    })
    .await;
    let p = "pulp_auth_proxy_";
    assert_eq!(
        metric(
            &text,
            &format!("{p}requests_total{{method=\"GET\",status=\"2xx\"}}")
        ),
        3.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            &format!("{p}requests_total{{method=\"GET\",status=\"4xx\"}}")
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            &format!("{p}requests_total{{method=\"other\",status=\"4xx\"}}")
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            &format!("{p}requests_total{{method=\"GET\",status=\"5xx\"}}")
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, &format!("{p}response_body_bytes_total")),
        12.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            &format!("{p}refusals_total{{rule=\"path-not-allowed\"}}")
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, &format!("{p}refusals_total{{rule=\"method\"}}")),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            &format!("{p}upstream_errors_total{{kind=\"credentials-refused\"}}")
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, &format!("{p}upstream_response_seconds_count")),
        3.0,
        "{text}"
    );
    assert!(
        metric(&text, &format!("{p}open_connections")) >= 1.0,
        "{text}"
    );
    leak::assert_clean("the metrics", text.as_bytes());
    s.assert_no_leaks();
}

#[tokio::test]
async fn metrics_can_move_to_their_own_listener() {
    let port = free_port();
    let keys = format!("metrics_listen = \"127.0.0.1:{port}\"");
    let s = Setup::start_with(Default::default(), "", proxy_keys(&keys)).await;
    assert_eq!(get(s.proxy.addr, "/metrics").await.status, 403);
    wait_for_port(port);
    let m = get(format!("127.0.0.1:{port}").parse().unwrap(), "/metrics").await;
    assert_eq!(m.status, 200);
    assert!(String::from_utf8_lossy(&m.body).contains("pulp_auth_proxy_requests_total"));
    s.assert_no_leaks();
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let s = Setup::start_with(Default::default(), "", proxy_keys("log_format = \"json\"")).await;
    s.upstream
        .put("/pulp/content/a", Content::Bytes("a".into()));
    get(s.proxy.addr, "/pulp/content/a").await;
    let log = s.proxy.wait_for_log("\"message\":\"request\"").await;
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access = lines
        .iter()
        .find(|v| v["fields"]["message"] == "request")
        .unwrap_or_else(|| panic!("no access line:\n{log}"));
    assert_eq!(access["fields"]["status"], 200);
    assert_eq!(access["fields"]["path"], "/pulp/content/a");
    s.assert_no_leaks();
}

#[tokio::test]
async fn no_secret_in_argv_or_environment_of_the_process() {
    let s = Setup::start().await;
    let pid = s.proxy.child.id();
    for file in ["cmdline", "environ"] {
        let bytes = std::fs::read(format!("/proc/{pid}/{file}")).unwrap();
        leak::assert_clean(&format!("/proc/PID/{file}"), &bytes);
    }
    s.assert_no_leaks();
}
