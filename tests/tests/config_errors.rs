//! Start-up refusals of the real binary: each mistake gets a message that
//! names the key or file and the fix, exit code 78, and never the password.

use e2e::leak;
use e2e::pki::TestCa;
use e2e::proxy::{config, ConfigFile, Proxy, Scratch};
use std::os::unix::fs::PermissionsExt;

fn base(s: &Scratch) -> ConfigFile {
    TestCa::new().write_pem(&s.path("ca.pem"));
    config("https://127.0.0.1:9", &s.path("ca.pem"), &s.path("pw"))
}

fn refused(s: &Scratch, text: &(impl ToString + ?Sized), env: &[(&str, &str)], needles: &[&str]) {
    let cfg = s.write_config(text);
    let (status, log) = Proxy::run(&cfg, env);
    assert_eq!(status.code(), Some(78), "exit status {status}:\n{log}");
    for n in needles {
        assert!(log.contains(n), "`{n}` missing from:\n{log}");
    }
    assert!(
        !log.contains("panicked") && !log.contains("backtrace"),
        "{log}"
    );
    leak::assert_clean("a start-up error", log.as_bytes());
}

#[test]
fn wildcard_listen_is_refused() {
    let s = Scratch::new();
    for wild in ["0.0.0.0:8080", "[::]:8080"] {
        let mut text = base(&s);
        text.set("proxy", "listen", wild);
        refused(&s, &text, &[], &["proxy.listen", "every interface"]);
    }
}

#[test]
fn password_key_in_file_is_refused() {
    let s = Scratch::new();
    let mut text = base(&s);
    text.set("upstream", "password", e2e::PASSWORD);
    refused(&s, &text, &[], &["upstream.password", "password_file"]);
}

#[test]
fn loose_password_file_is_refused() {
    let s = Scratch::new();
    let text = base(&s);
    std::fs::set_permissions(s.path("pw"), std::fs::Permissions::from_mode(0o644)).unwrap();
    refused(&s, &text, &[], &["mode 0644", "chmod 600"]);
}

#[test]
fn password_file_that_is_not_a_regular_file_is_refused_at_once() {
    let s = Scratch::new();
    let text = base(&s);
    std::fs::remove_file(s.path("pw")).unwrap();
    let made = std::process::Command::new("mkfifo")
        .args(["-m", "600"])
        .arg(s.path("pw"))
        .status()
        .unwrap();
    assert!(made.success());
    // `Proxy::run` gives up after 10 s: a blocking open would hang here.
    refused(
        &s,
        &text,
        &[],
        &["password file", "FIFO", "not a regular file"],
    );
    let mut text = base(&s);
    text.set("upstream", "password_file", "/dev/zero");
    refused(
        &s,
        &text,
        &[],
        &["/dev/zero", "device", "not a regular file"],
    );
}

#[test]
fn config_or_ca_file_writable_by_others_is_refused() {
    let s = Scratch::new();
    let text = base(&s);
    let cfg = s.write_config(&text);
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (status, log) = Proxy::run(&cfg, &[]);
    assert_eq!(status.code(), Some(78), "{log}");
    assert!(
        log.contains("mode 0666") && log.contains("chmod go-w"),
        "{log}"
    );

    let text = base(&s);
    std::fs::set_permissions(s.path("ca.pem"), std::fs::Permissions::from_mode(0o664)).unwrap();
    // `refused` writes the config again, with a safe mode.
    refused(
        &s,
        &text,
        &[],
        &["upstream.ca_file", "mode 0664", "chmod go-w"],
    );
}

#[test]
fn plain_http_upstream_is_refused() {
    let s = Scratch::new();
    let mut text = base(&s);
    text.set("upstream", "url", "http://127.0.0.1:9");
    refused(&s, &text, &[], &["upstream.url", "allow_plaintext"]);
}

#[test]
fn userinfo_in_url_is_refused_without_echo() {
    let s = Scratch::new();
    let pw_enc = "fake%20pass%3A%40%2F%25%2B%20word";
    let mut text = base(&s);
    text.set(
        "upstream",
        "url",
        format!("https://ci-user:{pw_enc}@127.0.0.1:9"),
    );
    refused(&s, &text, &[], &["upstream.url", "user information"]);
}

#[test]
fn missing_password_names_every_source() {
    let s = Scratch::new();
    let mut text = base(&s);
    text.remove("upstream", "password_file");
    refused(
        &s,
        &text,
        &[],
        &["password_file", "pulp-password", "PULP_AUTH_PROXY_PASSWORD"],
    );
}

#[test]
fn unknown_key_and_bad_ca_file() {
    let s = Scratch::new();
    let mut text = base(&s);
    text.set("proxy", "listen_port", 80);
    refused(&s, &text, &[], &["listen_port"]);
    std::fs::write(s.path("ca.pem"), "not a certificate\n").unwrap();
    let text = config("https://127.0.0.1:9", &s.path("ca.pem"), &s.path("pw"));
    refused(&s, &text, &[], &["upstream.ca_file", "PEM"]);
}

#[test]
fn missing_config_file() {
    let s = Scratch::new();
    let (status, log) = Proxy::run(&s.path("nope.toml"), &[]);
    assert_eq!(status.code(), Some(78), "{log}");
    assert!(
        log.contains("nope.toml") && log.contains("--config"),
        "{log}"
    );
}

#[test]
fn password_from_environment_is_accepted() {
    let s = Scratch::new();
    let mut text = base(&s);
    text.remove("upstream", "password_file");
    let cfg = s.write_config(&text);
    let proxy = Proxy::start(&cfg, &[("PULP_AUTH_PROXY_PASSWORD", e2e::PASSWORD)]);
    let log = proxy.log_text();
    assert!(
        log.contains("environment variable PULP_AUTH_PROXY_PASSWORD"),
        "{log}"
    );
    let warning = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("/proc/"))
        .unwrap_or_else(|| panic!("no warning about /proc/PID/environ in:\n{log}"));
    assert!(warning.contains("password_file") && warning.contains("LoadCredential="));
    drop(proxy);
}

#[test]
fn help_and_version() {
    for (arg, needle) in [
        ("--help", "--config"),
        ("--version", env!("CARGO_PKG_VERSION")),
    ] {
        let out = e2e::output(std::process::Command::new(e2e::bin("pulp-auth-proxy")).arg(arg));
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains(needle));
    }
}
