//! No configuration input panics the loader: whatever the file and the
//! `PULP_AUTH_PROXY_*` overrides hold, `Config::load` gives a config or an
//! error, and so do the section accessors the binaries call next.
//!
//! Random TOML is almost always refused at the first key, so most inputs
//! are built from the schema's own sections and keys with values drawn
//! from the edges of every type the checks parse: that is where the
//! checks' arithmetic and slicing live.

use proptest::prelude::*;
use pulp_auth_config::Config;
use std::path::Path;

/// Every section and key of the schema (unknown keys come from `value()`
/// tables and the free-form overrides).
const KEYS: &[(&str, &[&str])] = &[
    ("network", &["bridge", "address", "ports"]),
    (
        "proxy",
        &[
            "listen",
            "interface",
            "allowed_clients",
            "allowed_paths",
            "log_level",
            "log_format",
            "metrics_listen",
            "max_connections",
            "max_connections_per_client",
            "max_header_bytes",
            "max_headers",
            "max_url_bytes",
            "header_timeout_secs",
            "idle_timeout_secs",
            "send_timeout_secs",
            "shutdown_grace_secs",
            "readiness_cache_secs",
        ],
    ),
    (
        "upstream",
        &[
            "url",
            "username",
            "password_file",
            "ca_file",
            "allow_plaintext",
            "connect_timeout_secs",
            "response_timeout_secs",
            "body_timeout_secs",
            "max_redirects",
            "redirect_hosts",
        ],
    ),
    (
        "build",
        &["kayobe", "kayobe_config_path", "environment", "distro"],
    ),
    ("cache", &["dir", "max_size"]),
];

/// Strings at the edges of what the checks parse: addresses, prefixes,
/// URLs, sizes, paths and names, empty and over-long, with the bytes that
/// need escaping.
fn edge_string() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        "",
        " ",
        "/",
        "//",
        "///",
        "/./",
        "/../",
        "/%",
        "/%2",
        "/%zz",
        "%00",
        "\0",
        "\u{202e}",
        "..",
        ".",
        "0",
        "-1",
        "65536",
        "18446744073709551616",
        "1e400",
        "NaN",
        "127.0.0.1",
        "127.0.0.1:0",
        "127.0.0.1:65535",
        "127.0.0.1:65536",
        "[::1]:80",
        "::1",
        "[::1",
        "0.0.0.0:80",
        "192.168.33.3/24",
        "192.168.33.3/33",
        "::/0",
        "0.0.0.0/0",
        "10.0.0.0/-1",
        "fe80::1%eth0",
        "https://",
        "https://:0/",
        "https://[::1]:443/p/",
        "https://user:pw@h/",
        "http://h/",
        "https://h/%2e%2e/",
        "https://h?q#f",
        "ftp://h/",
        "https://ü.example/",
        "10 GiB",
        "1 B",
        "0",
        "0 B",
        "18446744073709551615 EiB",
        "1.5 GiB",
        " GiB",
        "GiB",
        "1 XiB",
        "debug",
        "json",
        "text",
        "TRACE",
        "breth1",
        "eth0.100",
        "a-very-long-interface-name",
        "lo",
        "rocky",
        "ubuntu",
        "relative/path",
        "/etc/passwd",
        "/dev/null",
        "/proc/self/mem",
    ])
    .prop_map(str::to_string);
    prop_oneof![
        3 => fixed,
        1 => "\\PC{0,24}",
        1 => "[/.%a-f0-9:;\\[\\]]{0,16}",
        1 => (0usize..4).prop_map(|n| "/".repeat(n) + &"a".repeat(n * 1000)),
    ]
}

fn value() -> impl Strategy<Value = toml::Value> {
    let leaf = prop_oneof![
        4 => edge_string().prop_map(toml::Value::String),
        2 => prop_oneof![
            Just(0i64),
            Just(1),
            Just(-1),
            Just(i64::MAX),
            Just(i64::MIN),
            Just(u32::MAX as i64),
            Just(u32::MAX as i64 + 1),
            any::<i64>(),
        ]
        .prop_map(toml::Value::Integer),
        1 => any::<f64>().prop_map(toml::Value::Float),
        1 => any::<bool>().prop_map(toml::Value::Boolean),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..3)
                .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
        ]
    })
}

/// Keys the schema needs in their section: without them nothing further
/// is checked, so they are nearly always present.
const REQUIRED: &[&str] = &["address", "listen", "url", "username", "dir", "max_size"];
/// Keys that hold a list of strings.
const LISTS: &[&str] = &[
    "ports",
    "allowed_clients",
    "allowed_paths",
    "redirect_hosts",
];

/// A value for `key`: nearly always of the type the schema wants, since one
/// mistyped key refuses the whole file before the checks behind
/// deserialisation are reached; sometimes anything at all.
fn value_for(key: &'static str) -> BoxedStrategy<toml::Value> {
    let string = || edge_string().prop_map(toml::Value::String);
    let typed = if LISTS.contains(&key) {
        prop::collection::vec(string(), 0..4)
            .prop_map(toml::Value::Array)
            .boxed()
    } else if key.ends_with("_secs") || key.starts_with("max_") {
        prop_oneof![
            Just(0i64),
            Just(1),
            Just(u32::MAX as i64),
            Just(u32::MAX as i64 + 1),
            Just(i64::MAX),
            0i64..100_000,
        ]
        .prop_map(toml::Value::Integer)
        .boxed()
    } else if key == "allow_plaintext" {
        any::<bool>().prop_map(toml::Value::Boolean).boxed()
    } else {
        string().boxed()
    };
    prop_oneof![9 => typed, 1 => value()].boxed()
}

/// A document made of the schema's sections, each with some of its keys.
fn document() -> impl Strategy<Value = String> {
    let section = (0..KEYS.len()).prop_flat_map(|i| {
        let (name, keys) = KEYS[i];
        let entry = prop::sample::select(keys.to_vec()).prop_flat_map(|k| (Just(k), value_for(k)));
        let required: Vec<_> = keys
            .iter()
            .filter(|k| REQUIRED.contains(k))
            .map(|&k| prop::option::weighted(0.9, (Just(k), edge_string())))
            .collect();
        (Just(name), required, prop::collection::vec(entry, 0..8))
    });
    prop::collection::vec(section, 0..6).prop_map(|sections| {
        let mut doc = toml::Table::new();
        for (name, required, entries) in sections {
            let table = doc
                .entry(name)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(t) = table {
                for (k, v) in required.into_iter().flatten() {
                    t.insert(k.to_string(), toml::Value::String(v));
                }
                for (k, v) in entries {
                    t.insert(k.to_string(), v);
                }
            }
        }
        toml::to_string(&doc).unwrap_or_default()
    })
}

/// `PULP_AUTH_PROXY_*` overrides for schema keys (and the credential's own
/// variable, which the loader must leave alone), in any case.
fn overrides() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = (0..KEYS.len()).prop_flat_map(|i| {
        let (section, keys) = KEYS[i];
        (prop::sample::select(keys.to_vec()), any::<bool>()).prop_map(move |(key, upper)| {
            let var = format!("PULP_AUTH_PROXY_{section}__{key}");
            if upper {
                var.to_ascii_uppercase()
            } else {
                var
            }
        })
    });
    let name = prop_oneof![
        8 => name,
        1 => Just("PULP_AUTH_PROXY_PASSWORD".to_string()),
        1 => "PULP_AUTH_PROXY_[A-Za-z_]{0,12}",
    ];
    let value = prop_oneof![
        3 => edge_string(),
        1 => value().prop_map(|v| v.to_string()),
    ];
    prop::collection::vec((name, value), 0..4)
}

/// Loads and then asks for every section, as the binaries do.
fn exercise(path: &Path, env: &[(String, String)]) {
    if let Ok(config) = Config::load(path, env.iter().map(|(k, v)| (k, v))) {
        let _ = config.proxy();
        let _ = config.upstream();
        let _ = config.network();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn schema_shaped_input_never_panics(doc in document(), env in overrides()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, doc).unwrap();
        exercise(&path, &env);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}", env in overrides()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        exercise(&path, &env);
    }
}

/// Overrides that once panicked inside figment's unescaping, kept as
/// fixed cases.
#[test]
fn an_override_with_a_backslash_and_non_ascii_text_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "[proxy]\nlisten = \"127.0.0.1:80\"\n").unwrap();
    for value in [
        "['\u{1130f}\u{1f0ed}\\\u{11d3a}'''2:\u{10d8f}",
        "[\"\u{e9}\\n\"]",
    ] {
        let env = [(
            "PULP_AUTH_PROXY_PROXY__LISTEN".to_string(),
            value.to_string(),
        )];
        exercise(&path, &env);
        // Taken as the literal text, which is no listen address.
        let err = Config::load(&path, env.iter().map(|(k, v)| (k, v)))
            .and_then(|c| c.proxy().map(|_| ()))
            .expect_err(value);
        assert!(err.to_string().contains("proxy.listen"), "{err}");
    }
}

/// The input that once panicked, kept as a fixed case.
#[test]
fn slash_only_prefix_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        "[proxy]\nlisten = \"127.0.0.1:8080\"\nallowed_paths = [\"//\"]\n",
    )
    .unwrap();
    assert!(Config::load(&path, std::iter::empty::<(&str, &str)>()).is_err());
}
