//! `ci-builder net` against real kernel objects, each test in a network
//! namespace of its own.

use e2e::netns::Netns;
use std::process::Output;

const CONFIG: &str = r#"
[network]
bridge = "breth1"
address = "192.168.33.3/24"
ports = ["dummy1"]
"#;

struct Case {
    ns: Netns,
    dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Case {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.toml"), CONFIG).unwrap();
        Case {
            ns: Netns::new(),
            dir,
        }
    }

    fn builder(&self, args: &[&str]) -> Output {
        let bin = e2e::bin("ci-builder");
        let cfg = self.dir.path().join("config.toml");
        let mut all = vec!["--config", cfg.to_str().unwrap()];
        all.extend_from_slice(args);
        self.ns.run(bin.to_str().unwrap(), &all)
    }

    fn links(&self) -> serde_json::Value {
        serde_json::from_str(&self.ns.ip(&["-j", "link"])).unwrap()
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn link<'a>(links: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    links
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["ifname"] == name)
}

#[test]
fn up_from_scratch_then_twice_changes_nothing() {
    let c = Case::new();
    let dummy = c.ns.dummy_supported();
    let first = c.builder(&["net", "up"]);
    assert_eq!(code(&first), 0, "{}", text(&first));
    assert!(text(&first).contains("created bridge breth1"));
    let addrs = c.ns.addr_json();
    let br = link(&addrs, "breth1").expect("no breth1");
    assert!(
        br["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{br}"
    );
    assert!(br["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["local"] == "192.168.33.3" && a["prefixlen"] == 24));
    let links = c.links();
    if dummy {
        eprintln!("path: dummy supported, port enslaved");
        let port = link(&links, "dummy1").expect("no dummy1");
        assert_eq!(port["master"], "breth1");
    } else {
        eprintln!("path: no dummy support, port-less bridge with a warning");
        assert!(link(&links, "dummy1").is_none());
        let warnings: Vec<_> = text(&first)
            .lines()
            .filter(|l| l.contains("warning"))
            .map(String::from)
            .collect();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("no dummy interface support"));
    }

    let second = c.builder(&["net", "up"]);
    assert_eq!(code(&second), 0, "{}", text(&second));
    assert!(
        text(&second).contains("nothing to change"),
        "{}",
        text(&second)
    );
    assert_eq!(c.links(), links, "second up changed links");
}

#[test]
fn conflicting_link_kind_is_refused_and_nothing_changes() {
    let c = Case::new();
    c.ns.ip(&[
        "link", "add", "breth1", "type", "veth", "peer", "name", "other0",
    ]);
    let before = (c.links(), c.ns.addr_json());
    let out = c.builder(&["net", "up"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("a link named breth1 exists but is a veth, not a bridge"),
        "{}",
        text(&out)
    );
    assert_eq!((c.links(), c.ns.addr_json()), before);
}

#[test]
fn address_on_another_interface_is_refused_and_nothing_changes() {
    let c = Case::new();
    c.ns.ip(&["link", "add", "other0", "type", "bridge"]);
    c.ns.ip(&["addr", "add", "192.168.33.3/24", "dev", "other0"]);
    let before = c.links();
    let out = c.builder(&["net", "up"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("192.168.33.3 is already assigned to other0"),
        "{}",
        text(&out)
    );
    assert_eq!(c.links(), before);
}

#[test]
fn down_removes_what_up_made_and_is_idempotent() {
    let c = Case::new();
    assert_eq!(code(&c.builder(&["net", "up"])), 0);
    let out = c.builder(&["net", "down"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("deleted bridge breth1"));
    let links = c.links();
    assert!(link(&links, "breth1").is_none() && link(&links, "dummy1").is_none());
    let again = c.builder(&["net", "down"]);
    assert_eq!(code(&again), 0, "{}", text(&again));
    assert!(text(&again).contains("nothing to remove"));
    // A same-named link of another kind is not ours: left alone, reported.
    c.ns.ip(&[
        "link", "add", "breth1", "type", "veth", "peer", "name", "other0",
    ]);
    let out = c.builder(&["net", "down"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("left alone"));
    assert!(link(&c.links(), "breth1").is_some());
}

#[test]
fn status_agrees_with_ip() {
    let c = Case::new();
    let before = c.builder(&["net", "status"]);
    assert_eq!(code(&before), 1, "{}", text(&before));
    assert!(text(&before).contains("differs: breth1 is missing"));
    assert_eq!(code(&c.builder(&["net", "up"])), 0);
    let out = c.builder(&["net", "status", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["matches"], true);
    let ip = c.ns.addr_json();
    for row in status["links"].as_array().unwrap() {
        let name = row["name"].as_str().unwrap();
        match link(&ip, name) {
            None => assert_eq!(row["state"], "missing", "{name}"),
            Some(l) => {
                let mut want: Vec<String> = l["addr_info"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
                    .collect();
                let mut got: Vec<String> = row["addresses"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_string())
                    .collect();
                want.sort();
                got.sort();
                assert_eq!(got, want, "{name}");
                let up = l["flags"].as_array().unwrap().iter().any(|f| f == "UP");
                assert_eq!(row["state"], if up { "up" } else { "down" }, "{name}");
            }
        }
    }
    // Take the address away: status notices.
    c.ns.ip(&["addr", "del", "192.168.33.3/24", "dev", "breth1"]);
    let out = c.builder(&["net", "status"]);
    assert_eq!(code(&out), 1);
    assert!(
        text(&out).contains("differs: breth1 lacks 192.168.33.3/24"),
        "{}",
        text(&out)
    );
}

#[test]
fn without_cap_net_admin_one_clear_line_and_exit_2() {
    let c = Case::new();
    let bin = e2e::bin("ci-builder");
    let cfg = c.dir.path().join("config.toml");
    let out = c.ns.run(
        "setpriv",
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            bin.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
            "net",
            "up",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("needs root or CAP_NET_ADMIN"), "{stderr}");
    assert!(link(&c.links(), "breth1").is_none());
}

fn parse_ini(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
        } else {
            let (k, v) = line.split_once('=').expect("key=value");
            out.push((section.clone(), k.to_string(), v.to_string()));
        }
    }
    out
}

fn kv(items: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    items
        .iter()
        .map(|(s, k, v)| (s.to_string(), k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn persist_writes_networkd_files_and_refuses_to_clobber() {
    let c = Case::new();
    let out_dir = tempfile::tempdir().unwrap();
    let dir = out_dir.path().to_str().unwrap();
    let run = |extra: &[&str]| {
        let bin = e2e::bin("ci-builder");
        let cfg = c.dir.path().join("config.toml");
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("--config")
            .arg(cfg)
            .args(["net", "persist", "--dir", dir])
            .args(extra);
        e2e::output(&mut cmd)
    };
    let out = run(&[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let read = |name: &str| parse_ini(&std::fs::read_to_string(out_dir.path().join(name)).unwrap());
    assert_eq!(
        read("50-breth1.netdev"),
        kv(&[("NetDev", "Name", "breth1"), ("NetDev", "Kind", "bridge")])
    );
    assert_eq!(
        read("50-breth1.network"),
        kv(&[
            ("Match", "Name", "breth1"),
            ("Network", "Address", "192.168.33.3/24"),
            ("Network", "ConfigureWithoutCarrier", "yes"),
            ("Network", "LinkLocalAddressing", "no"),
            ("Network", "IPv6AcceptRA", "no"),
            ("Link", "RequiredForOnline", "no"),
        ])
    );
    assert_eq!(
        read("50-dummy1.netdev"),
        kv(&[("NetDev", "Name", "dummy1"), ("NetDev", "Kind", "dummy")])
    );
    assert_eq!(
        read("50-dummy1.network"),
        kv(&[
            ("Match", "Name", "dummy1"),
            ("Network", "Bridge", "breth1"),
            ("Link", "RequiredForOnline", "no")
        ])
    );
    // The reference copies in systemd/networkd are exactly what it writes.
    let reference = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/networkd");
    for name in [
        "50-breth1.netdev",
        "50-breth1.network",
        "50-dummy1.netdev",
        "50-dummy1.network",
    ] {
        assert_eq!(
            std::fs::read_to_string(reference.join(name)).unwrap(),
            std::fs::read_to_string(out_dir.path().join(name)).unwrap(),
            "systemd/networkd/{name} is stale"
        );
    }

    let again = run(&[]);
    assert!(text(&again).contains("unchanged"), "{}", text(&again));
    std::fs::write(
        out_dir.path().join("50-breth1.network"),
        "[Match]\nName=mine\n",
    )
    .unwrap();
    std::fs::remove_file(out_dir.path().join("50-dummy1.netdev")).unwrap();
    let refused = run(&[]);
    assert_eq!(code(&refused), 2, "{}", text(&refused));
    assert!(text(&refused).contains("--force"));
    assert!(
        !out_dir.path().join("50-dummy1.netdev").exists(),
        "a refusal wrote files"
    );
    let forced = run(&["--force"]);
    assert_eq!(code(&forced), 0, "{}", text(&forced));
    assert!(text(&forced).contains("replaced"));
    assert_eq!(
        read("50-breth1.network")[0],
        ("Match".into(), "Name".into(), "breth1".into())
    );
}

#[test]
fn builder_help_version_and_bad_config() {
    for (arg, needle) in [("--help", "net"), ("--version", env!("CARGO_PKG_VERSION"))] {
        let out = e2e::output(std::process::Command::new(e2e::bin("ci-builder")).arg(arg));
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains(needle));
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[network]\naddress = \"192.168.33.3\"\n").unwrap();
    let out = e2e::output(
        std::process::Command::new(e2e::bin("ci-builder"))
            .arg("--config")
            .arg(&cfg)
            .args(["net", "status"]),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("network.address") && stderr.contains("IP/PREFIX"),
        "{stderr}"
    );
    let out = e2e::output(
        std::process::Command::new(e2e::bin("ci-builder"))
            .arg("--config")
            .arg(dir.path().join("missing.toml"))
            .args(["net", "up"]),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}
