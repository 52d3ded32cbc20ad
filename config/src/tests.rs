use super::*;

const GOOD: &str = r#"
[network]
bridge = "breth1"
address = "192.168.33.3/24"
ports = ["dummy1"]

[proxy]
listen = "192.168.33.3:80"
interface = "breth1"
allowed_clients = ["192.168.33.0/24", "127.0.0.0/8"]

[upstream]
url = "https://pulp.example.test/"
username = "ci-user"
password_file = "/run/pw"
"#;

/// No environment at all: tests never read or write the process's own.
const NO_ENV: [(&str, &str); 0] = [];

/// Loads `text` from a file of its own, with `env` as the environment.
fn load_with(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(&path, env.iter().copied())
}

fn load_in(text: &str) -> Result<Config, ConfigError> {
    load_with(text, &[])
}

#[test]
fn good_file_loads_with_defaults() {
    let c = load_in(GOOD).unwrap();
    let p = c.proxy().unwrap();
    assert_eq!(p.listen.to_string(), "192.168.33.3:80");
    assert_eq!(p.allowed_paths.len(), 2);
    assert_eq!(p.header_timeout, Duration::from_secs(10));
    let u = c.upstream().unwrap();
    assert_eq!(u.origin.prefix(), "");
    assert_eq!(u.connect_timeout, Duration::from_secs(10));
    assert_eq!(c.build.kayobe, "kayobe");
    assert_eq!(c.network().unwrap().ports[0].as_str(), "dummy1");
}

#[test]
fn environment_overrides_nested_keys() {
    let c = load_with(
        GOOD,
        &[
            ("PULP_AUTH_PROXY_PROXY__LISTEN", "127.0.0.1:8080"),
            (
                "pulp_auth_proxy_upstream__URL",
                "https://other.example.test/p",
            ),
            ("OTHER_PROXY__LISTEN", "0.0.0.0:1"),
        ],
    )
    .unwrap();
    assert_eq!(c.proxy().unwrap().listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.upstream().unwrap().origin.prefix(), "/p");
}

#[test]
fn password_env_is_not_a_config_key() {
    load_with(GOOD, &[("PULP_AUTH_PROXY_PASSWORD", "fake pw:@/%+")]).unwrap();
}

#[test]
fn password_key_in_file_is_refused_by_name() {
    // A value of the wrong type: a type check would quote it.
    let text = format!("{GOOD}password = [\"fake pw:@/%+\"]\n");
    let err = load_in(&text).unwrap_err().to_string();
    assert!(err.contains("`upstream.password` is not allowed"), "{err}");
    assert!(err.contains("password_file"), "{err}");
    assert!(!err.contains("fake"), "{err}");
    let text = GOOD.replace("[proxy]\n", "[proxy]\nPassword = 42\n");
    let err = load_in(&text).unwrap_err().to_string();
    assert!(err.contains("`proxy.Password` is not allowed"), "{err}");
    assert!(!err.contains("42"), "{err}");
}

#[test]
fn password_key_from_environment_is_refused() {
    let env = [("PULP_AUTH_PROXY_UPSTREAM__PASSWORD", "fake pw:@/%+")];
    let err = load_with(GOOD, &env).unwrap_err().to_string();
    assert!(err.contains("PULP_AUTH_PROXY_UPSTREAM__PASSWORD"), "{err}");
    assert!(!err.contains("fake"), "{err}");
}

#[test]
fn syntax_error_gives_position_not_the_line() {
    let err = load_in("[upstream]\nurl = \"https://h\nusername = \"fake pw:@\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2"), "{err}");
    assert!(!err.contains("fake"), "{err}");
}

#[test]
fn unknown_keys_are_named() {
    let err = load_in(&GOOD.replace("interface", "interfcae"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("interfcae"), "{err}");
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = GOOD
        .replace("192.168.33.3:80", "0.0.0.0:80")
        .replace("https://pulp", "http://pulp")
        .replace("\"127.0.0.0/8\"", "\"127.0.0.1/8\"");
    let err = load_in(&text).unwrap_err().to_string();
    for key in ["proxy.listen", "upstream.url", "proxy.allowed_clients"] {
        assert!(err.contains(key), "{key} missing from: {err}");
    }
}

#[test]
fn missing_file_says_what_to_do() {
    let err = Config::load(Path::new("/nonexistent/config.toml"), NO_ENV)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent/config.toml") && err.contains("--config"),
        "{err}"
    );
}

#[test]
fn missing_section_is_named() {
    let c = load_in("[network]\naddress = \"192.168.33.3/24\"\n").unwrap();
    assert_eq!(c.network().unwrap().bridge.as_str(), "breth1");
    let err = c.upstream().unwrap_err().to_string();
    assert!(err.contains("[upstream]"), "{err}");
}

#[test]
fn shipped_examples_load() {
    for name in ["example.toml", "example-loopback.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
        let c = Config::load(&path, NO_ENV).unwrap_or_else(|e| panic!("{name}: {e}"));
        c.proxy().unwrap();
        c.upstream().unwrap();
    }
}

#[test]
fn example_cache_section_loads_when_uncommented() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("example.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let text = ["[cache]", "dir =", "max_size ="]
        .iter()
        .fold(text, |t, key| t.replace(&format!("# {key}"), key));
    let c = load_in(&text).unwrap().cache.unwrap();
    assert_eq!(c.dir, Path::new("/var/lib/pulp-auth-proxy/cache"));
    assert_eq!(c.max_size, 20 << 30);
}

#[test]
fn cache_is_off_unless_configured() {
    assert!(load_in(GOOD).unwrap().cache.is_none());
    let text = format!(
        "{GOOD}\n[cache]\ndir = \"/var/lib/pulp-auth-proxy/cache\"\nmax_size = \"10 GiB\"\n"
    );
    let c = load_in(&text).unwrap().cache.unwrap();
    assert_eq!(c.dir, Path::new("/var/lib/pulp-auth-proxy/cache"));
    assert_eq!(c.max_size, 10 << 30);
    let env = [("PULP_AUTH_PROXY_CACHE__MAX_SIZE", "2097152")];
    assert_eq!(
        load_with(&text, &env).unwrap().cache.unwrap().max_size,
        2 << 20
    );
}

#[test]
fn cache_problems_are_named() {
    let text = format!("{GOOD}\n[cache]\ndir = \"cache\"\nmax_size = \"10 GB\"\n");
    let err = load_in(&text).unwrap_err().to_string();
    assert!(
        err.contains("cache.dir: `cache` is not an absolute path"),
        "{err}"
    );
    assert!(
        err.contains("cache.max_size: unit `GB` is not one of"),
        "{err}"
    );
    let text = format!("{GOOD}\n[cache]\ndir = \"/srv/../c\"\nmax_size = 1000\n");
    let err = load_in(&text).unwrap_err().to_string();
    assert!(
        err.contains("cache.dir: `/srv/../c` contains `..`"),
        "{err}"
    );
    assert!(
        err.contains("cache.max_size: 1000 bytes is below the minimum of 1 MiB"),
        "{err}"
    );
    let text = format!("{GOOD}\n[cache]\ndir = \"/srv/c\"\n");
    let err = load_in(&text).unwrap_err().to_string();
    assert!(err.contains("missing field `max_size`"), "{err}");
}

#[test]
fn sizes_parse_with_binary_units() {
    assert_eq!(parse_size("1048576"), Ok(1 << 20));
    assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
    assert_eq!(parse_size("3M"), Ok(3 << 20));
    assert_eq!(parse_size("1TiB"), Ok(1 << 40));
    assert!(parse_size("GiB").is_err());
    assert!(parse_size("-1 GiB").is_err());
    assert!(parse_size("99999999999 TiB")
        .unwrap_err()
        .contains("is not a size"));
}

#[test]
fn typed_values_and_named_defaults() {
    let c = load_in(GOOD).unwrap();
    let p = c.proxy().unwrap();
    assert_eq!(p.log_level, LogLevel::Info);
    assert_eq!(p.readiness_cache, Proxy::DEFAULT_READINESS_CACHE);
    assert_eq!(p.max_connections, Proxy::DEFAULT_MAX_CONNECTIONS);
    assert_eq!(c.build.distro, None, "no default: Kayobe decides");
    let text = GOOD.replace(
        "[proxy]\n",
        "[proxy]\nlog_level = \"debug\"\nreadiness_cache_secs = 0\n",
    ) + "[build]\ndistro = \"ubuntu\"\n";
    let c = load_in(&text).unwrap();
    assert_eq!(c.proxy().unwrap().log_level, LogLevel::Debug);
    assert_eq!(c.proxy().unwrap().readiness_cache, Duration::ZERO);
    assert_eq!(c.build.distro, Some(Distro::Ubuntu));
    let text = GOOD.replace("[proxy]\n", "[proxy]\nlog_level = \"loud\"\n")
        + "[build]\ndistro = \"gentoo\"\n";
    let err = load_in(&text).unwrap_err().to_string();
    assert!(
        err.contains("proxy.log_level: `loud` is not one of error, warn"),
        "{err}"
    );
    assert!(
        err.contains("build.distro: `gentoo` is not one of rocky, ubuntu, debian"),
        "{err}"
    );
}

#[test]
fn every_problem_in_one_section_is_reported() {
    let text = GOOD.replace(
        "[proxy]\n",
        "[proxy]\nmax_headers = 1\nheader_timeout_secs = 0\nlog_format = \"xml\"\n",
    );
    let err = load_in(&text).unwrap_err().to_string();
    for key in [
        "proxy.max_headers: must be between 8 and 1024",
        "proxy.header_timeout_secs: must be at least 1 second",
        "proxy.log_format: `xml` is not `text` or `json`",
    ] {
        assert!(err.contains(key), "{key} missing from: {err}");
    }
}

#[test]
fn send_timeout_and_per_client_limit_have_defaults_and_bounds() {
    let c = load_in(GOOD).unwrap();
    let p = c.proxy().unwrap();
    assert_eq!(p.send_timeout, Duration::from_secs(60));
    assert_eq!(p.max_connections_per_client, 512, "half of max_connections");
    let text = GOOD.replace(
        "[proxy]\n",
        "[proxy]\nmax_connections = 3\nsend_timeout_secs = 5\n",
    );
    let c = load_in(&text).unwrap();
    let p = c.proxy().unwrap();
    assert_eq!(
        (p.max_connections_per_client, p.send_timeout.as_secs()),
        (1, 5)
    );

    let text = GOOD.replace(
        "[proxy]\n",
        "[proxy]\nmax_connections = 8\nmax_connections_per_client = 9\nsend_timeout_secs = 0\n",
    );
    let err = load_in(&text).unwrap_err().to_string();
    for key in [
        "proxy.max_connections_per_client: 9 is more than proxy.max_connections (8)",
        "proxy.send_timeout_secs: must be at least 1 second",
    ] {
        assert!(err.contains(key), "{key} missing from: {err}");
    }
    let text = GOOD.replace("[proxy]\n", "[proxy]\nmax_connections_per_client = 0\n");
    let err = load_in(&text).unwrap_err().to_string();
    assert!(
        err.contains("proxy.max_connections_per_client: must be at least 1"),
        "{err}"
    );
}

#[test]
fn slash_only_allowed_paths_are_refused_not_a_panic() {
    for prefix in ["//", "///"] {
        let err = crate::PathPrefix::parse(prefix).unwrap_err();
        assert!(err.contains("whole REST API"), "{prefix}: {err}");
    }
}

#[test]
fn config_writable_by_group_or_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, GOOD).unwrap();
    for mode in [0o664, 0o646] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = Config::load(&path, NO_ENV).unwrap_err().to_string();
        assert!(err.starts_with("config file "), "{err}");
        assert!(err.contains(&format!("mode {mode:04o}")), "{err}");
        assert!(err.contains("chmod go-w"), "{err}");
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    Config::load(&path, NO_ENV).unwrap();
}

#[test]
fn config_that_is_a_fifo_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success());
    let err = Config::load(&path, NO_ENV).unwrap_err().to_string();
    assert!(err.contains("is a FIFO, not a regular file"), "{err}");
}

#[test]
fn plain_kolla_mode_settings() {
    let c = load_in(GOOD).unwrap();
    assert_eq!(c.build.tool, crate::Tool::Kayobe);
    assert_eq!(c.build.kolla_build, "kolla-build");
    assert!(c.build.mirrors.is_empty());
    let text = GOOD.to_string()
        + "[build]\ntool = \"kolla-build\"\ndistro = \"debian\"\n\
           kolla_config = \"/etc/kolla/kolla-build.conf\"\n\
           [build.mirrors]\n\"http://deb.debian.org/debian/\" = \"/pulp/content/debian/\"\n\
           \"https://dl.rockylinux.org/$contentdir\" = \"/pulp/content/rocky/\"\n";
    let c = load_in(&text).unwrap();
    assert_eq!(c.build.tool, crate::Tool::KollaBuild);
    assert_eq!(c.build.distro, Some(Distro::Debian));
    let mirrors: Vec<_> = c
        .build
        .mirrors
        .iter()
        .map(|m| (m.upstream.as_str(), m.path.as_str()))
        .collect();
    assert_eq!(
        mirrors,
        [
            ("http://deb.debian.org/debian", "/pulp/content/debian/"),
            (
                "https://dl.rockylinux.org/$contentdir",
                "/pulp/content/rocky/"
            ),
        ]
    );
    let text = GOOD.to_string()
        + "[build]\ntool = \"podman\"\nkolla_build = \"\"\n[build.mirrors]\n\
           \"ftp://x/y\" = \"/a/\"\n\"http://h/it's\" = \"/a/\"\n\"http://h/d\" = \"/a\"\n\
           \"http://h/e\" = \"a/\"\n";
    let err = load_in(&text).unwrap_err().to_string();
    for want in [
        "build.tool: `podman` is not one of kayobe, kolla-build",
        "build.kolla_build: is empty; name the program or its path",
        "build.mirrors: `ftp://x/y` is not an http(s) URL",
        "build.mirrors: `http://h/it's` is not an http(s) URL",
        "build.mirrors: `http://h/d`: the proxy path `/a` must end with `/`",
        "build.mirrors: `http://h/e`: `a/` must start with `/`",
    ] {
        assert!(err.contains(want), "{want}\nin\n{err}");
    }
}
