//! `ci-builder build` with a fake kayobe that records its arguments and
//! environment: the command, the proxy URL, the tag, the password kept out,
//! exit status and signals passed through, and each preflight failure
//! against the real proxy binary.

use e2e::netns::Netns;
use e2e::proxy::Scratch;
use e2e::upstream::Versions;
use e2e::{leak, Setup, PASSWORD, USERNAME};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const FAKE_KAYOBE: &str = r#"#!/bin/sh
printf '%s\n' "$@" > "$FAKE_OUT/argv"
env > "$FAKE_OUT/env"
if [ -n "$FAKE_CONF" ]; then
    # As Kayobe does: the tag its configuration computed, in the
    # kolla-build.conf it generates.
    mkdir -p "$(dirname "$FAKE_CONF")"
    printf '[DEFAULT]\nbase = rocky\ntag = %s\n' "$FAKE_CONF_TAG" > "$FAKE_CONF"
    [ -n "$FAKE_TAG_FROM" ] && docker tag "$FAKE_TAG_FROM" "pap-kolla-built:$FAKE_CONF_TAG"
fi
if [ -n "$FAKE_BUILD_IMAGE" ]; then
    printf 'FROM scratch\nLABEL made-by=fake-kayobe-%s\n' "$$" |
        docker build -q -t "$FAKE_BUILD_IMAGE" - >/dev/null
fi
if [ -n "$FAKE_TAG_FROM" ]; then
    for a in "$@"; do
        case "$a" in kolla_tag=*) docker tag "$FAKE_TAG_FROM" "pap-kolla-built:${a#kolla_tag=}" ;; esac
    done
fi
for url in $FAKE_FETCH; do
    curl -fsS -o /dev/null "$url" || exit 9
done
if [ -n "$FAKE_WAIT" ]; then
    trap 'echo TERM > "$FAKE_OUT/signal"; exit 143' TERM
    trap 'echo INT > "$FAKE_OUT/signal"; exit 130' INT
    echo started > "$FAKE_OUT/started"
    i=0
    while [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
fi
exit "${FAKE_EXIT:-0}"
"#;

fn fake_kayobe(dir: &Path) -> String {
    let p = dir.join("kayobe");
    e2e::write_script(&p, FAKE_KAYOBE);
    p.to_str().unwrap().to_string()
}

/// A config for the proxy of `s` (or `listen`) with the fake kayobe.
fn config(s: &Scratch, listen: &str, extra: &str) -> std::path::PathBuf {
    let kayobe = fake_kayobe(s.dir.path());
    s.write_config(&format!(
        "[proxy]\nlisten = \"{listen}\"\n\n[upstream]\nurl = \"https://pulp.example.test\"\nusername = \"{USERNAME}\"\npassword_file = \"{}\"\n\n[build]\nkayobe = \"{kayobe}\"\n{extra}",
        s.path("pw").display()
    ))
}

fn builder(cfg: &Path, args: &[&str], env: &[(&str, &str)], out: &Path) -> Output {
    let mut cmd = Command::new(e2e::bin("ci-builder"));
    // In `out`: a build writes its fetch manifest into the current
    // directory, which must not be the checkout.
    cmd.arg("--config")
        .arg(cfg)
        .args(args)
        .env("FAKE_OUT", out)
        .current_dir(out);
    for (k, v) in env {
        cmd.env(k, v);
    }
    e2e::output(&mut cmd)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn argv(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out.join("argv"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn basic_value() -> String {
    e2e::basic_header()
}

#[tokio::test]
async fn the_build_writes_its_fetch_manifest_and_a_diff_flags_a_republished_package() {
    use bytes::Bytes;
    use e2e::upstream::Content;
    const DEB: &str = "/pulp/content/debian/pool/main/h/hello/hello_2.10-3_amd64.deb";
    const PACKAGES: &str = "/pulp/content/debian/dists/stable/main/binary-amd64/Packages";
    let s = Setup::start().await;
    let cfg = config(&s.scratch, &s.proxy.addr.to_string(), "");
    let dir = tempfile::tempdir().unwrap();
    let urls = format!("{0}{DEB} {0}{PACKAGES}", s.proxy.url());
    let build = |tag: &'static str| {
        let (cfg, dir, urls) = (cfg.clone(), dir.path().to_path_buf(), urls.clone());
        tokio::task::spawn_blocking(move || {
            let fetches_dir = dir.to_str().unwrap().to_string();
            builder(
                &cfg,
                &[
                    "build",
                    "overcloud",
                    "--tag",
                    tag,
                    "--fetches-dir",
                    &fetches_dir,
                ],
                &[("FAKE_FETCH", &urls)],
                &dir,
            )
        })
    };
    for (deb, packages) in [
        (&b"deb one"[..], &b"Package: hello\n"[..]),
        (b"deb two", b"Package: hello\nVersion: 2\n"),
    ] {
        s.upstream.put(DEB, Content::Bytes(Bytes::from_static(deb)));
        s.upstream
            .put(PACKAGES, Content::Bytes(Bytes::from_static(packages)));
        // Not the build's: before its cursor.
        e2e::client::get(s.proxy.addr, PACKAGES).await;
        let tag = if deb == b"deb one" { "t1" } else { "t2" };
        let o = build(tag).await.unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert!(
            text(&o).contains(&format!(
                "2 fetches through the proxy recorded in {}",
                dir.path().join(format!("{tag}.fetches.json")).display()
            )),
            "{}",
            text(&o)
        );
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("t1.fetches.json")).unwrap())
            .unwrap();
    let paths: Vec<&str> = manifest["fetches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, [DEB, PACKAGES], "{manifest}");
    assert_eq!(manifest["lost"], 0);

    let diff = |a: &str, b: &str| {
        builder(
            &cfg,
            &[
                "fetches",
                "diff",
                dir.path().join(a).to_str().unwrap(),
                dir.path().join(b).to_str().unwrap(),
            ],
            &[],
            dir.path(),
        )
    };
    let o = diff("t1.fetches.json", "t2.fetches.json");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("REPUBLISHED {DEB}"))
            && text(&o).contains(&format!("~ {PACKAGES}")),
        "{}",
        text(&o)
    );
    let o = diff("t1.fetches.json", "t1.fetches.json");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = diff("t1.fetches.json", "missing.json");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("missing.json"), "{}", text(&o));

    // A missing directory stops the build before it starts.
    let o = builder(
        &cfg,
        &[
            "build",
            "overcloud",
            "--fetches-dir",
            "/nonexistent/fetches",
        ],
        &[],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("/nonexistent/fetches"), "{}", text(&o));
    for name in ["t1.fetches.json", "t2.fetches.json"] {
        leak::assert_clean(name, &std::fs::read(dir.path().join(name)).unwrap());
    }
    s.assert_no_leaks();
}

#[tokio::test]
async fn runs_kayobe_pointed_at_the_proxy_without_the_password() {
    let s = Setup::start().await;
    let cfg = config(
        &s.scratch,
        &s.proxy.addr.to_string(),
        "environment = \"ci-builder\"\nkayobe_config_path = \"/srv/kc\"\n",
    );
    let out_dir = tempfile::tempdir().unwrap();
    let env = [
        ("PULP_AUTH_PROXY_PASSWORD", PASSWORD),
        (
            "SNEAKY",
            &*Box::leak(format!("Authorization: {}", basic_value()).into_boxed_str()),
        ),
        ("KEEP_ME", "yes"),
    ];
    let o = tokio::task::spawn_blocking({
        let (cfg, dir) = (cfg.clone(), out_dir.path().to_path_buf());
        move || {
            builder(
                &cfg,
                &[
                    "build",
                    "overcloud",
                    "--push",
                    "--distro",
                    "ubuntu",
                    "--tag",
                    "t1",
                    "^nova",
                    "keystone",
                ],
                &env,
                &dir,
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let port = s.proxy.addr.port();
    assert_eq!(
        argv(out_dir.path()),
        [
            "overcloud",
            "container",
            "image",
            "build",
            "--push",
            "-e",
            "stackhpc_repo_mirror_auth_proxy_enabled=true",
            "-e",
            &format!("stackhpc_repo_mirror_auth_proxy_url=http://127.0.0.1:{port}"),
            "-e",
            "kolla_base_distro=ubuntu",
            "-e",
            "kolla_tag=t1",
            "^nova",
            "keystone",
        ]
    );
    let env = std::fs::read_to_string(out_dir.path().join("env")).unwrap();
    assert!(env.contains("KEEP_ME=yes"));
    assert!(
        env.contains("KAYOBE_ENVIRONMENT=ci-builder") && env.contains("KAYOBE_CONFIG_PATH=/srv/kc")
    );
    assert!(
        !env.contains("PULP_AUTH_PROXY_PASSWORD") && !env.contains("SNEAKY"),
        "{env}"
    );
    leak::assert_clean("kayobe's environment", env.as_bytes());
    leak::assert_clean(
        "kayobe's arguments",
        std::fs::read(out_dir.path().join("argv"))
            .unwrap()
            .as_slice(),
    );
    leak::assert_clean("ci-builder's output", text(&o).as_bytes());
    assert!(text(&o).contains("images tagged t1"), "{}", text(&o));
    // The preflight went through the proxy to the upstream's status endpoint.
    assert!(s
        .upstream
        .requests()
        .iter()
        .any(|r| r.target == "/pulp/api/v3/status/"));
    s.assert_no_leaks();
}

#[test]
fn dry_run_prints_the_command_and_removed_names_only() {
    let s = Scratch::new();
    let cfg = config(&s, "[::1]:80", "distro = \"ubuntu\"\n");
    let out_dir = tempfile::tempdir().unwrap();
    let o = builder(
        &cfg,
        &["build", "seed", "--dry-run", "a b"],
        &[("PULP_AUTH_PROXY_PASSWORD", PASSWORD)],
        out_dir.path(),
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(
        t.contains("-e 'stackhpc_repo_mirror_auth_proxy_url=http://[::1]'"),
        "IPv6 not bracketed or port shown: {t}"
    );
    // `[build] distro` and no --distro/--tag: Kayobe's configuration
    // decides both, so neither is passed (extra vars would beat it).
    assert!(
        !t.contains("kolla_base_distro") && !t.contains("kolla_tag"),
        "{t}"
    );
    assert!(t.contains("'a b'"), "{t}");
    assert!(
        t.contains("removes from the environment: PULP_AUTH_PROXY_PASSWORD"),
        "{t}"
    );
    assert!(!out_dir.path().join("argv").exists(), "dry run ran kayobe");
    leak::assert_clean("the dry run", t.as_bytes());
    let o = builder(
        &cfg,
        &["build", "seed", "--dry-run", "--distro", "rocky"],
        &[],
        out_dir.path(),
    );
    let t = text(&o);
    assert!(
        t.contains("-e kolla_base_distro=rocky") && !t.contains("kolla_tag"),
        "{t}"
    );

    let cfg = config(&s, "[2001:db8::3]:8080", "");
    let o = builder(&cfg, &["build", "seed", "--dry-run"], &[], out_dir.path());
    assert!(
        text(&o).contains("http://[2001:db8::3]:8080'"),
        "{}",
        text(&o)
    );
    let o = builder(
        &cfg,
        &["build", "seed", "--dry-run", "--tag", "no good"],
        &[],
        out_dir.path(),
    );
    assert_eq!(o.status.code(), Some(2));
}

#[tokio::test]
async fn a_failed_build_tool_exits_4_and_signals_pass_through() {
    let s = Setup::start().await;
    let cfg = config(&s.scratch, &s.proxy.addr.to_string(), "");
    let out_dir = tempfile::tempdir().unwrap();
    let dir = out_dir.path().to_path_buf();
    let o = tokio::task::spawn_blocking({
        let (cfg, dir) = (cfg.clone(), dir.clone());
        move || {
            builder(
                &cfg,
                &["build", "seed", "--tag", "x"],
                &[("FAKE_EXIT", "7")],
                &dir,
            )
        }
    })
    .await
    .unwrap();
    // Kayobe's own status is in the summary; the builder's code says which
    // side failed.
    let t = text(&o);
    assert_eq!(o.status.code(), Some(4), "{t}");
    assert!(
        t.contains("exit status 7") && t.contains("the build failed"),
        "{t}"
    );

    for (sig, code, name) in [("TERM", 143, "TERM"), ("INT", 130, "INT")] {
        let _ = std::fs::remove_file(dir.join("started"));
        let _ = std::fs::remove_file(dir.join("signal"));
        // Started with both signals ignored, as a script's background job
        // is: ci-builder must still forward them and the tool receive them.
        let mut child = Command::new("sh")
            .args(["-c", "trap '' INT TERM; exec \"$0\" \"$@\""])
            .arg(e2e::bin("ci-builder"))
            .arg("--config")
            .arg(&cfg)
            .args(["build", "seed", "--tag", "x"])
            .current_dir(&dir)
            .env("FAKE_OUT", &dir)
            .env("FAKE_WAIT", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !dir.join("started").exists() {
            assert!(Instant::now() < deadline, "fake kayobe never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(child.id().to_string())
            .status()
            .unwrap()
            .success());
        let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        assert_eq!(status.code(), Some(code), "{sig}");
        assert_eq!(
            std::fs::read_to_string(dir.join("signal")).unwrap().trim(),
            name
        );
    }
    s.assert_no_leaks();
}

#[test]
fn preflight_without_a_proxy() {
    let s = Scratch::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = config(&s, &format!("127.0.0.1:{port}"), "");
    let out_dir = tempfile::tempdir().unwrap();
    let o = builder(&cfg, &["build", "seed"], &[], out_dir.path());
    assert_eq!(o.status.code(), Some(3), "a failed preflight exits 3");
    let t = text(&o);
    assert_eq!(t.lines().count(), 1, "{t}");
    assert!(
        t.contains("nothing answers at") && t.contains("start pulp-auth-proxy"),
        "{t}"
    );
    assert!(
        !out_dir.path().join("argv").exists(),
        "kayobe ran despite the failed preflight"
    );
}

#[tokio::test]
async fn preflight_with_the_upstream_refusing_credentials() {
    let s = Setup::start_with(Versions::Both, "", |_| {}).await;
    s.upstream.refuse_credentials(true);
    let cfg = config(&s.scratch, &s.proxy.addr.to_string(), "");
    let out_dir = tempfile::tempdir().unwrap();
    let o = tokio::task::spawn_blocking({
        let (cfg, dir) = (cfg.clone(), out_dir.path().to_path_buf());
        move || builder(&cfg, &["build", "seed"], &[], &dir)
    })
    .await
    .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(3), "{t}");
    assert!(
        t.contains("503") && t.contains("credentials-refused") && t.contains("check the password"),
        "{t}"
    );
    assert!(!out_dir.path().join("argv").exists());
    leak::assert_clean("ci-builder's output", t.as_bytes());
}

#[tokio::test]
async fn preflight_docker_and_kayobe_missing() {
    let s = Setup::start().await;
    let out_dir = tempfile::tempdir().unwrap();
    let cfg = config(&s.scratch, &s.proxy.addr.to_string(), "");
    let o = tokio::task::spawn_blocking({
        let (cfg, dir) = (cfg.clone(), out_dir.path().to_path_buf());
        move || {
            builder(
                &cfg,
                &["build", "seed"],
                &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
                &dir,
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("Docker daemon does not answer"),
        "{}",
        text(&o)
    );

    let mut edited =
        e2e::proxy::ConfigFile(std::fs::read_to_string(&cfg).unwrap().parse().unwrap());
    edited.set("build", "kayobe", "/nonexistent/kayobe");
    let cfg = s.scratch.write_config(&edited);
    let o = tokio::task::spawn_blocking({
        let dir = out_dir.path().to_path_buf();
        move || builder(&cfg, &["build", "seed"], &[], &dir)
    })
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(3));
    assert!(
        text(&o).contains("build.kayobe `/nonexistent/kayobe` is not an executable program"),
        "{}",
        text(&o)
    );
}

#[test]
fn preflight_names_the_missing_bridge() {
    // In a namespace of its own: 192.168.33.3 exists nowhere, and no packet
    // can leave.
    let ns = Netns::new();
    let s = Scratch::new();
    let cfg = config(
        &s,
        "192.168.33.3:80",
        "\n[network]\nbridge = \"breth1\"\naddress = \"192.168.33.3/24\"\n",
    );
    let bin = e2e::bin("ci-builder");
    let o = ns.run(
        bin.to_str().unwrap(),
        &["--config", cfg.to_str().unwrap(), "build", "seed"],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(3), "{t}");
    assert!(
        t.contains("proxy.listen 192.168.33.3 is not an address of this host"),
        "{t}"
    );
    assert!(
        t.contains("breth1 is missing") && t.contains("ci-builder net up"),
        "{t}"
    );
}

#[tokio::test]
async fn audit_after_the_build_fails_it_on_a_leak() {
    use e2e::docker::Image;
    let s = Setup::start().await;
    let cfg = config(&s.scratch, &s.proxy.addr.to_string(), "");
    let out_dir = tempfile::tempdir().unwrap();
    let pid = std::process::id();
    let clean = Image::build(
        &format!("pap-build-clean:{pid}"),
        "FROM scratch\nCOPY busybox /bin/busybox\n",
        &[],
        &[],
    );
    let leaky = Image::build(
        &format!("pap-build-leaky:{pid}"),
        &format!("FROM scratch\nCOPY busybox /bin/busybox\nENV P=\"{PASSWORD}\"\n"),
        &[],
        &[],
    );
    for (from, tag, want) in [
        (&clean.tag, format!("c{pid}"), 0),
        (&leaky.tag, format!("l{pid}"), 1),
    ] {
        let _built = Image {
            tag: format!("pap-kolla-built:{tag}"),
        };
        let o = tokio::task::spawn_blocking({
            let (cfg, dir, from, tag) = (
                cfg.clone(),
                out_dir.path().to_path_buf(),
                from.clone(),
                tag.clone(),
            );
            move || {
                builder(
                    &cfg,
                    &["build", "seed", "--audit", "--tag", &tag],
                    &[("FAKE_TAG_FROM", &from)],
                    &dir,
                )
            }
        })
        .await
        .unwrap();
        let t = text(&o);
        assert_eq!(o.status.code(), Some(want), "{t}");
        assert!(
            t.contains(&format!("1 images tagged {tag}")) && t.contains("MiB"),
            "{t}"
        );
        assert!(t.contains(if want == 0 { "clean" } else { "LEAKS" }), "{t}");
        leak::assert_clean("ci-builder's output", t.as_bytes());
    }
}

/// Without --tag, the images are the ones tagged as Kayobe's configuration
/// decided (read from the kolla-build.conf it wrote, under the
/// configuration's `base_path`); without that file, the images Docker
/// created since the build started.
#[tokio::test]
async fn without_a_tag_the_build_finds_the_tag_kayobe_chose() {
    use e2e::docker::Image;
    let s = Setup::start().await;
    let kayobe_config = tempfile::tempdir().unwrap();
    let base = tempfile::tempdir().unwrap();
    std::fs::write(
        kayobe_config.path().join("globals.yml"),
        format!("---\nbase_path: {}\n", base.path().display()),
    )
    .unwrap();
    let cfg = config(
        &s.scratch,
        &s.proxy.addr.to_string(),
        &format!(
            "kayobe_config_path = \"{}\"\ndistro = \"ubuntu\"\n",
            kayobe_config.path().display()
        ),
    );
    let pid = std::process::id();
    let from = Image::build(
        &format!("pap-build-kayobe-tag:{pid}"),
        "FROM scratch\nCOPY busybox /bin/busybox\n",
        &[],
        &[],
    );
    let chosen = format!("master-ubuntu-noble-{pid}");
    let _built = Image {
        tag: format!("pap-kolla-built:{chosen}"),
    };
    let conf = base.path().join("etc/kolla/kolla-build.conf");
    let out_dir = tempfile::tempdir().unwrap();
    let run = |env: Vec<(String, String)>| {
        let (cfg, dir) = (cfg.clone(), out_dir.path().to_path_buf());
        tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (&**k, &**v)).collect();
            builder(&cfg, &["build", "seed"], &env, &dir)
        })
    };
    let o = run(vec![
        ("FAKE_CONF".into(), conf.to_str().unwrap().into()),
        ("FAKE_CONF_TAG".into(), chosen.clone()),
        ("FAKE_TAG_FROM".into(), from.tag.clone()),
    ])
    .await
    .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    let args = argv(out_dir.path());
    assert!(
        !args
            .iter()
            .any(|a| a.starts_with("kolla_tag=") || a.starts_with("kolla_base_distro=")),
        "{args:?}"
    );
    assert!(t.contains(&format!("1 images tagged {chosen}:")), "{t}");
    assert!(t.contains(&format!("pap-kolla-built:{chosen}")), "{t}");

    // A conf file from an earlier build is not trusted: the images created
    // since this build started are its images.
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&conf)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let made = format!("pap-kolla-made:{pid}");
    let _made = Image { tag: made.clone() };
    let o = run(vec![("FAKE_BUILD_IMAGE".into(), made.clone())])
        .await
        .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("the tag the build used is unknown"), "{t}");
    assert!(t.contains("was not written by this build"), "{t}");
    assert!(t.contains("images created since the build started"), "{t}");
    assert!(t.contains(&made), "{t}");
}

/// `tags` sets the built tag in kolla-image-tags.yml, one value, the rest
/// byte for byte; `--dry-run` shows the diff and writes nothing; without
/// `--tag` the tag comes from the kolla-build.conf of the last build; a
/// shape it does not know is refused and left alone.
#[test]
fn tags_sets_the_built_tag_in_the_kayobe_configuration() {
    let s = Scratch::new();
    let cfg = config(&s, "127.0.0.1:80", "");
    let kayobe = tempfile::tempdir().unwrap();
    let base = tempfile::tempdir().unwrap();
    std::fs::write(
        kayobe.path().join("globals.yml"),
        format!("base_path: {}\n", base.path().display()),
    )
    .unwrap();
    let file = kayobe.path().join("kolla-image-tags.yml");
    let original = "---\n# tags\nkolla_image_tags:\n  openstack:\n    rocky-9: 2025.1-rocky-9-20260101T000000\n    ubuntu-noble: 2025.1-ubuntu-noble-20260101T000000 # keep\n";
    std::fs::write(&file, original).unwrap();
    let tags = |args: &[&str]| {
        let mut all = vec!["tags", "--kayobe-config", kayobe.path().to_str().unwrap()];
        all.extend_from_slice(args);
        builder(&cfg, &all, &[], s.dir.path())
    };

    let new = "2025.1-rocky-9-20261203T120000";
    let o = tags(&["--tag", new, "--dry-run"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(
        t.contains("-    rocky-9: 2025.1-rocky-9-20260101T000000"),
        "{t}"
    );
    assert!(t.contains(&format!("+    rocky-9: {new}")), "{t}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        original,
        "dry run wrote"
    );

    let conf = base.path().join("etc/kolla/kolla-build.conf");
    std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
    std::fs::write(&conf, format!("[DEFAULT]\ntag = {new}\n")).unwrap();
    let o = tags(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        original.replace(
            "rocky-9: 2025.1-rocky-9-20260101T000000",
            &format!("rocky-9: {new}")
        )
    );

    let odd = "kolla_image_tags: {openstack: {rocky-9: x}}\n";
    std::fs::write(&file, odd).unwrap();
    let o = tags(&["--tag", new]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains("not a block mapping") && t.contains("set the tag by hand"),
        "{t}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), odd);
}

const FAKE_KOLLA_BUILD: &str = r#"#!/bin/sh
printf '%s\n' "$@" > "$FAKE_OUT/argv"
env > "$FAKE_OUT/env"
# What kolla-build would read: its --config-file and the overrides it names.
cp "$2" "$FAKE_OUT/kolla-build.conf"
sed -n 's/^template_override = //p' "$2" > "$FAKE_OUT/overrides"
head -n 1 "$FAKE_OUT/overrides" | xargs -I{} cp {} "$FAKE_OUT/override.j2"
dirname "$2" > "$FAKE_OUT/dir"
exit "${FAKE_EXIT:-0}"
"#;

/// Plain Kolla mode: kolla-build gets only `--config-file`, `--push` and
/// the regexes; the file holds ours (distro, tag, network mode, both
/// overrides) then the operator's without the keys we set; the private
/// directory is gone afterwards; the password is nowhere.
#[tokio::test]
async fn plain_kolla_mode_runs_kolla_build_with_its_own_config_and_override() {
    let s = Setup::start().await;
    let dir = s.scratch.dir.path();
    let kb = dir.join("kolla-build");
    e2e::write_script(&kb, FAKE_KOLLA_BUILD);
    std::fs::write(
        dir.join("mine.conf"),
        "[DEFAULT]\nbase = ubuntu\npull = false\n[cron]\ntag = x\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("mine.j2"),
        "{% extends parent_template %}\n{% block cron_footer %}RUN true{% endblock %}\n",
    )
    .unwrap();
    let cfg = config(
        &s.scratch,
        &s.proxy.addr.to_string(),
        &format!(
            "tool = \"kolla-build\"\nkolla_build = {:?}\nkolla_config = {:?}\ntemplate_override = {:?}\n\
             [build.mirrors]\n\"http://deb.debian.org/debian\" = \"/pulp/content/debian/\"\n",
            kb,
            dir.join("mine.conf"),
            dir.join("mine.j2")
        ),
    );
    let out_dir = tempfile::tempdir().unwrap();
    let o = tokio::task::spawn_blocking({
        let (cfg, out) = (cfg.clone(), out_dir.path().to_path_buf());
        move || {
            builder(
                &cfg,
                &[
                    "build", "--push", "--distro", "debian", "--tag", "t2", "^base$",
                ],
                &[("PULP_AUTH_PROXY_PASSWORD", PASSWORD)],
                &out,
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = out_dir.path();
    let private = std::fs::read_to_string(out.join("dir")).unwrap();
    let private = private.trim();
    let conf_path = format!("{private}/kolla-build.conf");
    assert_eq!(
        argv(out),
        ["--config-file", conf_path.as_str(), "--push", "^base$"]
    );
    assert!(!Path::new(private).exists(), "{private} was left behind");
    let conf = std::fs::read_to_string(out.join("kolla-build.conf")).unwrap();
    assert_eq!(
        conf,
        format!(
            "# Written by ci-builder for one build.\n[DEFAULT]\nbase = debian\ntag = t2\n\
             network_mode = host\ntemplate_override = {private}/ci-builder-override.j2\n\
             template_override = {}\n\n# The operator's kolla_config follows.\n\
             [DEFAULT]\npull = false\n[cron]\ntag = x\n",
            dir.join("mine.j2").display()
        )
    );
    let ours = std::fs::read_to_string(out.join("override.j2")).unwrap();
    let port = s.proxy.addr.port();
    assert!(
        ours.starts_with("{% extends parent_template %}\n"),
        "{ours}"
    );
    assert!(
        ours.contains(&format!("p='http://127.0.0.1:{port}'")),
        "{ours}"
    );
    assert!(
        ours.contains(&format!(r"(http://deb\.debian\.org/debian)(/+|([[:space:]]|$))#\1http://127.0.0.1:{port}/pulp/content/debian/\4#g")),
        "{ours}"
    );
    let env = std::fs::read_to_string(out.join("env")).unwrap();
    assert!(!env.contains("PULP_AUTH_PROXY_PASSWORD"), "{env}");
    leak::assert_clean("kolla-build's environment", env.as_bytes());
    leak::assert_clean("ci-builder's output", text(&o).as_bytes());
    assert!(text(&o).contains("images tagged t2"), "{}", text(&o));
    s.assert_no_leaks();
}

/// Words that do not fit the tool, an operator override that takes one
/// of ci-builder's blocks, and a kolla_config that would cut the way to
/// the proxy: each refused before anything runs (exit 2), naming what to
/// change; without --tag the tag is `<base>-<UTC time>`.
#[test]
fn plain_kolla_mode_refusals_and_the_generated_tag() {
    let s = Scratch::new();
    let dir = s.dir.path();
    let out = tempfile::tempdir().unwrap();
    let kayobe = config(&s, "127.0.0.1:9", "");
    let o = builder(&kayobe, &["build", "^nova"], &[], out.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("ci-builder: error: build with build.tool = \"kayobe\" starts with seed or overcloud, not `^nova`"),
        "{}",
        text(&o)
    );
    let plain = |extra: &str| {
        let s2 = Scratch::new();
        let cfg = config(
            &s2,
            "127.0.0.1:9",
            &format!("tool = \"kolla-build\"\n{extra}"),
        );
        (s2, cfg)
    };
    let (_s2, cfg) = plain("");
    let o = builder(&cfg, &["build", "seed"], &[], out.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains(
            "`seed` is a Kayobe target; with build.tool = \"kolla-build\" give only image regexes"
        ),
        "{}",
        text(&o)
    );
    let o = builder(&cfg, &["build", "--dry-run", "^cron$"], &[], out.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = text(&o);
    let tag = t
        .lines()
        .find_map(|l| l.strip_prefix("tag = "))
        .unwrap_or_else(|| panic!("{t}"));
    assert!(
        tag.len() == "rocky-20261204T064000".len()
            && tag.starts_with("rocky-20")
            && tag.as_bytes()[14] == b'T',
        "{tag}"
    );
    std::fs::write(
        dir.join("bad.j2"),
        "{% extends parent_template %}\n{% block footer %}{% endblock %}\n",
    )
    .unwrap();
    let (_s3, cfg) = plain(&format!("template_override = {:?}\n", dir.join("bad.j2")));
    let o = builder(&cfg, &["build", "^cron$"], &[], out.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains(&format!(
            "build.template_override {}, line 2: block `footer` is ci-builder's",
            dir.join("bad.j2").display()
        )),
        "{}",
        text(&o)
    );
    std::fs::write(dir.join("bad.conf"), "[DEFAULT]\nnetwork_mode = bridge\n").unwrap();
    let (_s4, cfg) = plain(&format!("kolla_config = {:?}\n", dir.join("bad.conf")));
    let o = builder(&cfg, &["build", "^cron$"], &[], out.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("line 2: network_mode = bridge: builds reach the proxy on the host's address only with network_mode = host"),
        "{}",
        text(&o)
    );
    assert!(
        !out.path().join("argv").exists(),
        "a refused build ran a program"
    );
}
