// figment::Jail fixes the closure type; its error is figment's own.
#![allow(clippy::result_large_err)]

use super::*;
use figment::Jail;

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

fn load_in(jail: &mut Jail, text: &str) -> Result<Config, ConfigError> {
    jail.create_file("config.toml", text).unwrap();
    Config::load(&jail.directory().join("config.toml"))
}

#[test]
fn good_file_loads_with_defaults() {
    Jail::expect_with(|jail| {
        let c = load_in(jail, GOOD).unwrap();
        let p = c.proxy().unwrap();
        assert_eq!(p.listen.to_string(), "192.168.33.3:80");
        assert_eq!(p.allowed_paths.len(), 2);
        assert_eq!(p.header_timeout, Duration::from_secs(10));
        let u = c.upstream().unwrap();
        assert_eq!(u.origin.prefix(), "");
        assert_eq!(u.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.build.kayobe, "kayobe");
        assert_eq!(c.network().unwrap().ports[0].as_str(), "dummy1");
        Ok(())
    });
}

#[test]
fn environment_overrides_nested_keys() {
    Jail::expect_with(|jail| {
        jail.set_env("PULP_AUTH_PROXY_PROXY__LISTEN", "127.0.0.1:8080");
        jail.set_env(
            "PULP_AUTH_PROXY_UPSTREAM__URL",
            "https://other.example.test/p",
        );
        let c = load_in(jail, GOOD).unwrap();
        assert_eq!(c.proxy().unwrap().listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.upstream().unwrap().origin.prefix(), "/p");
        Ok(())
    });
}

#[test]
fn password_env_is_not_a_config_key() {
    Jail::expect_with(|jail| {
        jail.set_env("PULP_AUTH_PROXY_PASSWORD", "fake pw:@/%+");
        load_in(jail, GOOD).unwrap();
        Ok(())
    });
}

#[test]
fn password_key_in_file_is_refused_by_name() {
    Jail::expect_with(|jail| {
        // A value of the wrong type: a type check would quote it.
        let text = format!("{GOOD}password = [\"fake pw:@/%+\"]\n");
        let err = load_in(jail, &text).unwrap_err().to_string();
        assert!(err.contains("`upstream.password` is not allowed"), "{err}");
        assert!(err.contains("password_file"), "{err}");
        assert!(!err.contains("fake"), "{err}");
        let text = GOOD.replace("[proxy]\n", "[proxy]\nPassword = 42\n");
        let err = load_in(jail, &text).unwrap_err().to_string();
        assert!(err.contains("`proxy.Password` is not allowed"), "{err}");
        assert!(!err.contains("42"), "{err}");
        Ok(())
    });
}

#[test]
fn password_key_from_environment_is_refused() {
    Jail::expect_with(|jail| {
        jail.set_env("PULP_AUTH_PROXY_UPSTREAM__PASSWORD", "fake pw:@/%+");
        let err = load_in(jail, GOOD).unwrap_err().to_string();
        assert!(err.contains("PULP_AUTH_PROXY_UPSTREAM__PASSWORD"), "{err}");
        assert!(!err.contains("fake"), "{err}");
        Ok(())
    });
}

#[test]
fn syntax_error_gives_position_not_the_line() {
    Jail::expect_with(|jail| {
        let err = load_in(
            jail,
            "[upstream]\nurl = \"https://h\nusername = \"fake pw:@\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(!err.contains("fake"), "{err}");
        Ok(())
    });
}

#[test]
fn unknown_keys_are_named() {
    Jail::expect_with(|jail| {
        let err = load_in(jail, &GOOD.replace("interface", "interfcae"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("interfcae"), "{err}");
        Ok(())
    });
}

#[test]
fn all_problems_are_reported_at_once() {
    Jail::expect_with(|jail| {
        let text = GOOD
            .replace("192.168.33.3:80", "0.0.0.0:80")
            .replace("https://pulp", "http://pulp")
            .replace("\"127.0.0.0/8\"", "\"127.0.0.1/8\"");
        let err = load_in(jail, &text).unwrap_err().to_string();
        for key in ["proxy.listen", "upstream.url", "proxy.allowed_clients"] {
            assert!(err.contains(key), "{key} missing from: {err}");
        }
        Ok(())
    });
}

#[test]
fn missing_file_says_what_to_do() {
    let err = Config::load(Path::new("/nonexistent/config.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent/config.toml") && err.contains("--config"),
        "{err}"
    );
}

#[test]
fn missing_section_is_named() {
    Jail::expect_with(|jail| {
        let c = load_in(jail, "[network]\naddress = \"192.168.33.3/24\"\n").unwrap();
        assert_eq!(c.network().unwrap().bridge.as_str(), "breth1");
        let err = c.upstream().unwrap_err().to_string();
        assert!(err.contains("[upstream]"), "{err}");
        Ok(())
    });
}

#[test]
fn shipped_examples_load() {
    for name in ["example.toml", "example-loopback.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
        let c = Config::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
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
    Jail::expect_with(|jail| {
        let c = load_in(jail, &text).unwrap().cache.unwrap();
        assert_eq!(c.dir, Path::new("/var/lib/pulp-auth-proxy/cache"));
        assert_eq!(c.max_size, 20 << 30);
        Ok(())
    });
}

#[test]
fn cache_is_off_unless_configured() {
    Jail::expect_with(|jail| {
        assert!(load_in(jail, GOOD).unwrap().cache.is_none());
        let text = format!(
            "{GOOD}\n[cache]\ndir = \"/var/lib/pulp-auth-proxy/cache\"\nmax_size = \"10 GiB\"\n"
        );
        let c = load_in(jail, &text).unwrap().cache.unwrap();
        assert_eq!(c.dir, Path::new("/var/lib/pulp-auth-proxy/cache"));
        assert_eq!(c.max_size, 10 << 30);
        jail.set_env("PULP_AUTH_PROXY_CACHE__MAX_SIZE", "2097152");
        assert_eq!(
            load_in(jail, &text).unwrap().cache.unwrap().max_size,
            2 << 20
        );
        Ok(())
    });
}

#[test]
fn cache_problems_are_named() {
    Jail::expect_with(|jail| {
        let text = format!("{GOOD}\n[cache]\ndir = \"cache\"\nmax_size = \"10 GB\"\n");
        let err = load_in(jail, &text).unwrap_err().to_string();
        assert!(
            err.contains("cache.dir: `cache` is not an absolute path"),
            "{err}"
        );
        assert!(
            err.contains("cache.max_size: unit `GB` is not one of"),
            "{err}"
        );
        let text = format!("{GOOD}\n[cache]\ndir = \"/srv/../c\"\nmax_size = 1000\n");
        let err = load_in(jail, &text).unwrap_err().to_string();
        assert!(
            err.contains("cache.dir: `/srv/../c` contains `..`"),
            "{err}"
        );
        assert!(
            err.contains("cache.max_size: 1000 bytes is below the minimum of 1 MiB"),
            "{err}"
        );
        let text = format!("{GOOD}\n[cache]\ndir = \"/srv/c\"\n");
        let err = load_in(jail, &text).unwrap_err().to_string();
        assert!(err.contains("missing field `max_size`"), "{err}");
        Ok(())
    });
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
