//! `ci-builder audit` against a real Docker daemon: one clean image and
//! one image per leak channel, each reported with the right location.

use base64::Engine as _;
use e2e::docker::Image;
use e2e::proxy::Scratch;
use e2e::{leak, PASSWORD, USERNAME};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

/// The proxy the audit's configuration names; no test connects to it.
const PROXY_LISTEN: &str = "127.0.0.1:8080";

const BASE: &str = "FROM scratch\nCOPY busybox /bin/busybox\n";

fn audit(images: &[&str]) -> (i32, Value, String) {
    audit_with(images)
}

/// `ci-builder audit --json ARGS`: exit code, report, stderr.
fn audit_with(args: &[&str]) -> (i32, Value, String) {
    let (code, stdout, stderr) = run_audit(&[&["--json"], args].concat());
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (code, json, stderr)
}

/// `ci-builder audit ARGS` with the test credentials and a proxy address:
/// exit code, stdout, stderr; neither output holds the password.
fn run_audit(args: &[&str]) -> (i32, String, String) {
    run_audit_env(args, &[])
}

/// [`run_audit`] with `env` set for ci-builder.
fn run_audit_env(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> (i32, String, String) {
    let s = Scratch::new();
    let cfg = s.write_config(&format!(
        "[proxy]\nlisten = \"{PROXY_LISTEN}\"\n\
         [upstream]\nurl = \"https://pulp.example.test\"\nusername = \"{USERNAME}\"\npassword_file = \"{}\"\n",
        s.path("pw").display()
    ));
    let out = e2e::output(
        Command::new(e2e::bin("ci-builder"))
            .arg("--config")
            .arg(&cfg)
            .arg("audit")
            .args(args)
            .envs(env.iter().copied()),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    leak::assert_clean("the audit's output", format!("{stdout}{stderr}").as_bytes());
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

fn findings(report: &Value) -> Vec<(String, Value)> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["form"].as_str().unwrap().to_string(),
                f["location"].clone(),
            )
        })
        .collect()
}

/// Presigned URLs as Pulp's object storage hands them out (fake keys).
const S3_URL: &str = "https://s3.example.test/pulp/artifact/ab/cdef?response-content-disposition=attachment\
    &X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAFAKEFAKEFAKE0000%2F20261203%2Fus-east-1%2Fs3%2Faws4_request\
    &X-Amz-Date=20261203T120000Z&X-Amz-Expires=600&X-Amz-SignedHeaders=host\
    &X-Amz-Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const SAS_URL: &str = "https://acct.blob.example.test/pulp/ab?sv=2022-11-02&sp=r\
    &se=2026-12-03T12:00:00Z&sig=AbCdEfGhIjKlMnOpQrStUvWxYz0123456789%2B%2FAbCd%3D";

fn tag(name: &str) -> String {
    format!("pap-audit-{name}:{}", std::process::id())
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn gz(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn clean_image_passes_and_missing_image_is_an_error() {
    let clean = Image::build(
        &tag("clean"),
        &format!(
            "{BASE}COPY sources.list /etc/apt/sources.list\nCOPY s3.py /usr/lib/s3.py\nENV LANG=C\n"
        ),
        &[
            (
                "sources.list",
                b"deb [trusted=yes] http://192.168.33.3/pulp/content/debian stable main\n",
            ),
            // An S3 client library names the parameters: no finding
            // without a signature's value.
            (
                "s3.py",
                b"SIGNATURE = 'X-Amz-Signature'\nurl += '&X-Amz-Signature=' + sig\n",
            ),
        ],
        &[],
    );
    let (code, json, stderr) = audit(&[&clean.tag]);
    assert_eq!(code, 0, "{json} {stderr}");
    assert_eq!(json[0]["verdict"], "clean");
    assert!(
        json[0]["export_bytes"].as_u64().unwrap() > 1_000_000,
        "the layers were not read"
    );

    let (code, _, stderr) = audit(&["pap-audit-no-such-image:none"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no such image"), "{stderr}");
}

struct Channel {
    name: &'static str,
    dockerfile: String,
    files: Vec<(&'static str, Vec<u8>)>,
    args: Vec<(&'static str, String)>,
    /// (form, location kind, field/path that must appear)
    expect: (&'static str, &'static str, &'static str),
}

fn zip(name: &str, data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    z.start_file(name, opts).unwrap();
    z.write_all(data).unwrap();
    z.finish().unwrap().into_inner()
}

#[test]
fn every_leak_channel_is_reported_where_it_is() {
    let userinfo = format!(
        "[pulp]\nbaseurl=https://{USERNAME}:{}@pulp.example.test/pulp/content/rocky/9/\n",
        "fake%20pass%3A%40%2F%25%2B%20word"
    );
    let channels = vec![
        Channel {
            name: "env",
            dockerfile: format!("{BASE}ENV PULP_PASSWORD=\"{PASSWORD}\"\n"),
            files: vec![],
            args: vec![],
            expect: ("password", "config", "config.Env["),
        },
        Channel {
            name: "label",
            dockerfile: format!("{BASE}LABEL creds=\"{USERNAME}:{PASSWORD}\"\n"),
            files: vec![],
            args: vec![],
            expect: ("user:password", "config", "config.Labels.creds"),
        },
        Channel {
            name: "arg",
            dockerfile: format!("{BASE}ARG PULP_PASS\nRUN [\"/bin/busybox\", \"true\"]\n"),
            files: vec![],
            args: vec![("PULP_PASS", PASSWORD.to_string())],
            expect: ("password", "history", "created_by"),
        },
        Channel {
            name: "file",
            dockerfile: format!("{BASE}COPY secret /etc/pulp/secret\n"),
            files: vec![("secret", format!("{PASSWORD}\n").into_bytes())],
            args: vec![],
            expect: ("password", "layer", "etc/pulp/secret"),
        },
        Channel {
            name: "header",
            dockerfile: format!("{BASE}COPY h /etc/pulp/header\n"),
            files: vec![(
                "h",
                format!(
                    "Authorization: Basic {}\n",
                    b64(&format!("{USERNAME}:{PASSWORD}"))
                )
                .into_bytes(),
            )],
            args: vec![],
            expect: ("base64(user:password)", "layer", "etc/pulp/header"),
        },
        Channel {
            name: "yumrepo",
            dockerfile: format!("{BASE}COPY r /etc/yum.repos.d/pulp.repo\n"),
            files: vec![("r", userinfo.into_bytes())],
            args: vec![],
            expect: ("URL userinfo", "layer", "etc/yum.repos.d/pulp.repo"),
        },
        Channel {
            name: "aptauth",
            dockerfile: format!("{BASE}COPY a /etc/apt/auth.conf.d/pulp.conf\n"),
            files: vec![(
                "a",
                format!("machine pulp.example.test login {USERNAME} password {PASSWORD}\n")
                    .into_bytes(),
            )],
            args: vec![],
            expect: ("password", "layer", "etc/apt/auth.conf.d/pulp.conf"),
        },
        Channel {
            name: "b64pw",
            dockerfile: format!("{BASE}COPY b /opt/token\n"),
            files: vec![(
                "b",
                format!("token={}\n", b64(&format!("xy{PASSWORD}"))).into_bytes(),
            )],
            args: vec![],
            expect: ("base64(password)", "layer", "opt/token"),
        },
        Channel {
            name: "deleted",
            dockerfile: format!(
                "{BASE}COPY s /tmp/s\nRUN [\"/bin/busybox\", \"rm\", \"/tmp/s\"]\n"
            ),
            files: vec![("s", PASSWORD.as_bytes().to_vec())],
            args: vec![],
            expect: ("password", "layer", "tmp/s"),
        },
        Channel {
            name: "presigned",
            dockerfile: format!("{BASE}COPY t /var/log/apt/term.log\n"),
            files: vec![("t", format!("Get:1 {S3_URL}\n").into_bytes())],
            args: vec![],
            expect: (
                "X-Amz-Signature (presigned URL)",
                "layer",
                "var/log/apt/term.log",
            ),
        },
        Channel {
            name: "sas",
            dockerfile: format!("{BASE}ENV BLOB=\"{SAS_URL}\"\n"),
            files: vec![],
            args: vec![],
            expect: ("Azure SAS sig= with se=", "config", "config.Env["),
        },
        Channel {
            name: "gz",
            dockerfile: format!("{BASE}COPY l.gz /var/log/pulp.log.gz\n"),
            files: vec![(
                "l.gz",
                gz(format!("GET with password {PASSWORD}\n").as_bytes()),
            )],
            args: vec![],
            expect: ("password", "layer", "var/log/pulp.log.gz"),
        },
        Channel {
            name: "wheel",
            dockerfile: format!(
                "{BASE}COPY w /usr/lib/python3/dist-packages/pulp-1.0-py3-none-any.whl\n"
            ),
            files: vec![(
                "w",
                zip(
                    "pulp/settings.py",
                    // Repeated, so deflate compresses it and only the
                    // decompressed member holds the password.
                    format!("PASSWORD = \"{PASSWORD}\"\n").repeat(50).as_bytes(),
                ),
            )],
            args: vec![],
            expect: (
                "password",
                "layer",
                "pulp-1.0-py3-none-any.whl!/pulp/settings.py",
            ),
        },
        Channel {
            name: "zst",
            dockerfile: format!("{BASE}COPY z /var/log/pulp.log.1.zst\n"),
            files: vec![(
                "z",
                zstd::stream::encode_all(
                    format!("GET with password {PASSWORD}\n")
                        .repeat(50)
                        .as_bytes(),
                    3,
                )
                .unwrap(),
            )],
            args: vec![],
            expect: ("password", "layer", "var/log/pulp.log.1.zst"),
        },
    ];
    let mut images = Vec::new();
    for c in &channels {
        let files: Vec<(&str, &[u8])> = c.files.iter().map(|(n, d)| (*n, d.as_slice())).collect();
        let args: Vec<(&str, &str)> = c.args.iter().map(|(k, v)| (*k, v.as_str())).collect();
        images.push(Image::build(&tag(c.name), &c.dockerfile, &files, &args));
    }
    let names: Vec<&str> = images.iter().map(|i| i.tag.as_str()).collect();
    let (code, json, stderr) = audit(&names);
    assert_eq!(code, 1, "{stderr}");
    assert_channels("the daemon", &channels, &json);

    // The same images in every other form: a docker save archive each, an
    // OCI archive with zstd layers, and the registry it is pushed to.
    let s = Scratch::new();
    let registry = e2e::registry::Registry::start(&e2e::pki::TestCa::new());
    let (mut archives, mut layouts, mut pushed) = (Vec::new(), Vec::new(), Vec::new());
    for (c, image) in channels.iter().zip(&images) {
        let tar = s.path(&format!("{}.tar", c.name));
        docker_save(&image.tag, &tar);
        let oci = format!(
            "oci-archive:{}",
            s.path(&format!("{}.oci.tar", c.name)).display()
        );
        zstd_copy(&tar, &oci);
        pushed.push(registry.push(&oci, &format!("pap/channels:{}", c.name), false));
        archives.push(format!("docker-archive:{}", tar.display()));
        layouts.push(oci);
    }
    let auth = registry.auth_file(s.dir.path());
    let ca = registry.ca_file();
    for (form, args) in [
        ("docker-archive", archives),
        ("oci-archive", layouts),
        ("docker://", pushed),
    ] {
        let mut all = vec![
            "--json".to_string(),
            "--ca-file".into(),
            ca.display().to_string(),
            "--authfile".into(),
            auth.display().to_string(),
        ];
        all.extend(args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let (code, stdout, stderr) = run_audit(&all);
        assert_eq!(code, 1, "{form}: {stderr}");
        assert_channels(form, &channels, &serde_json::from_str(&stdout).unwrap());
    }
}

/// Each channel's report has its finding where it was put, and only
/// findings of its class.
fn assert_channels(source: &str, channels: &[Channel], json: &Value) {
    assert_eq!(
        json.as_array().unwrap().len(),
        channels.len(),
        "{source}: {json}"
    );
    for (c, report) in channels.iter().zip(json.as_array().unwrap()) {
        assert_eq!(report["verdict"], "leaks", "{source} {}: {report}", c.name);
        let (form, kind, place) = c.expect;
        let hit = findings(report).into_iter().any(|(f, loc)| {
            f == form
                && loc["kind"] == kind
                && [&loc["field"], &loc["path"]]
                    .iter()
                    .any(|v| v.as_str().is_some_and(|s| s.contains(place)))
                && (!["gz", "wheel", "zst"].contains(&c.name) || loc["decompressed"] == true)
                && (kind != "layer"
                    || loc["layer"]
                        .as_str()
                        .is_some_and(|l| l.starts_with("sha256:")))
        });
        assert!(
            hit,
            "{source} {}: no {form} finding in {kind} at {place}: {}",
            c.name, report["findings"]
        );
        let class = if ["presigned", "sas"].contains(&c.name) {
            "storage-signature"
        } else {
            "credential"
        };
        for f in report["findings"].as_array().unwrap() {
            assert_eq!(f["class"], class, "{source} {}: {f}", c.name);
        }
    }
}

#[test]
fn a_decompression_bomb_makes_the_audit_incomplete_not_clean() {
    // 256 MiB of zeros as a zstd file of a few KiB.
    let zeros = vec![0u8; 256 << 20];
    let bomb = zstd::stream::encode_all(zeros.as_slice(), 3).unwrap();
    drop(zeros);
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let image = Image::build(
        &tag("bomb"),
        &format!("{BASE}COPY b /var/log/huge.log.zst\n"),
        &[("b", &bomb)],
        &[],
    );
    let started = std::time::Instant::now();
    let (code, json, stderr) = audit(&[&image.tag]);
    let took = started.elapsed();
    assert_eq!(code, 5, "{stderr} {json}");
    let report = &json[0];
    assert_eq!(report["verdict"], "incomplete", "{report}");
    let why = &report["incomplete"][0];
    assert_eq!(why["path"], "var/log/huge.log.zst", "{report}");
    assert!(
        why["reason"].as_str().unwrap().contains("100:1"),
        "{report}"
    );
    eprintln!("bomb of {} bytes reported in {took:?}", bomb.len());

    let (code, json, stderr) = audit_with(&["--allow-incomplete", &image.tag]);
    assert_eq!(code, 0, "{stderr} {json}");
    assert_eq!(json[0]["verdict"], "incomplete");
}

/// An image with the password in /etc/pulp/secret (and `extra` Dockerfile
/// lines), saved to `image.tar` in the scratch directory it returns.
fn saved(name: &str, extra: &str) -> (Image, Scratch, PathBuf) {
    let image = Image::build(
        &tag(name),
        &format!("{BASE}COPY s /etc/pulp/secret\n{extra}"),
        &[("s", format!("{PASSWORD}\n").as_bytes())],
        &[],
    );
    let s = Scratch::new();
    let tar = s.path("image.tar");
    docker_save(&image.tag, &tar);
    (image, s, tar)
}

/// `docker save -o tar image`.
fn docker_save(image: &str, tar: &std::path::Path) {
    let out = e2e::output(
        Command::new("docker")
            .args(["save", "-o"])
            .arg(tar)
            .arg(image),
    );
    assert!(out.status.success(), "docker save {image}: {out:?}");
}

fn assert_secret_file_found(arg: &str, found: &[(String, Value)]) {
    assert!(
        found.iter().any(|(form, loc)| form == "password"
            && loc["kind"] == "layer"
            && loc["path"] == "etc/pulp/secret"
            && loc["layer"]
                .as_str()
                .is_some_and(|l| l.starts_with("sha256:"))),
        "{arg}: {found:?}"
    );
}

/// The image config is read by field in every form, not as bytes.
fn assert_config_env_found(arg: &str, found: &[(String, Value)]) {
    assert!(
        found.iter().any(|(form, loc)| form == "password"
            && loc["kind"] == "config"
            && loc["field"]
                .as_str()
                .is_some_and(|f| f.starts_with("config.Env["))),
        "{arg}: the config's Env: {found:?}"
    );
}

#[test]
fn docker_archives_are_audited_without_the_daemon() {
    let (_image, s, tar) = saved("archive", &format!("ENV X=\"{PASSWORD}\"\n"));
    let gz_tar = s.path("image.tar.gz");
    std::fs::write(&gz_tar, gz(&std::fs::read(&tar).unwrap())).unwrap();
    for path in [&tar, &gz_tar] {
        let arg = format!("docker-archive:{}", path.display());
        let (code, json, stderr) = audit(&[&arg]);
        assert_eq!(code, 1, "{arg}: {stderr} {json}");
        let found = findings(&json[0]);
        assert_secret_file_found(&arg, &found);
        assert_config_env_found(&arg, &found);
    }
    let (code, _, stderr) = audit(&[&format!("docker-archive:{}", s.path("nope.tar").display())]);
    assert_eq!(code, 2);
    assert!(stderr.contains("is not a file"), "{stderr}");
}

/// What Docker 25+ with the containerd store, registries and skopeo hand
/// out: OCI layouts, here with zstd layers that only a decompressing search
/// sees into.
/// `docker save` archive -> skopeo `dest`, every layer zstd.
fn zstd_copy(tar: &std::path::Path, dest: &str) {
    skopeo_copy(
        tar,
        dest,
        &["--dest-compress", "--dest-compress-format", "zstd"],
    );
}

/// `skopeo copy FLAGS docker-archive:TAR DEST`.
fn skopeo_copy(tar: &std::path::Path, dest: &str, flags: &[&str]) {
    let out = e2e::output(
        Command::new("skopeo")
            .args(["copy", "-q"])
            .args(flags)
            .arg(format!("docker-archive:{}", tar.display()))
            .arg(dest),
    );
    assert!(out.status.success(), "skopeo copy to {dest}: {out:?}");
}

#[test]
fn oci_layouts_with_zstd_layers_are_audited() {
    let (_image, s, tar) = saved("oci", &format!("ENV X=\"{PASSWORD}\"\n"));
    let archive = format!("oci-archive:{}", s.path("oci.tar").display());
    let dir = format!("oci:{}", s.path("oci").display());
    for dest in [&archive, &dir] {
        zstd_copy(&tar, dest);
    }
    let blobs = s.path("oci/blobs/sha256");
    let zstd_layers = std::fs::read_dir(&blobs)
        .unwrap()
        .filter(|e| {
            let head = std::fs::read(e.as_ref().unwrap().path()).unwrap();
            head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        })
        .count();
    assert!(zstd_layers >= 1, "skopeo wrote no zstd layer in {blobs:?}");
    for arg in [&archive, &dir] {
        let (code, json, stderr) = audit(&[arg]);
        assert_eq!(code, 1, "{arg}: {stderr} {json}");
        let found = findings(&json[0]);
        assert_secret_file_found(arg, &found);
        assert_config_env_found(arg, &found);
    }
    let (code, _, stderr) = audit(&[&format!("oci:{}", s.path("image.tar").display())]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("index.json"), "{stderr}");
}

#[test]
fn a_repository_file_left_naming_the_proxy_is_a_warning_in_every_form() {
    let proxy = format!("http://{PROXY_LISTEN}");
    let repo = format!("[pulp]\nbaseurl={proxy}/pulp/content/rocky/9/\n");
    let image = Image::build(
        &tag("repos"),
        &format!(
            "{BASE}COPY left.repo /etc/yum.repos.d/pulp.repo\n\
             COPY left.list /opt/keep/sources.list.d/pulp.list\n\
             COPY left.repo /etc/yum.repos.d/restored.repo\n\
             COPY other.repo /etc/yum.repos.d/other.repo\n\
             RUN [\"/bin/busybox\", \"rm\", \"/etc/yum.repos.d/restored.repo\"]\n"
        ),
        &[
            ("left.repo", repo.as_bytes()),
            (
                "left.list",
                format!("deb {proxy}/debian trixie main\n").as_bytes(),
            ),
            // Another port on the same host is not the proxy.
            ("other.repo", format!("baseurl={proxy}1/x/\n").as_bytes()),
        ],
        &[],
    );
    let s = Scratch::new();
    let tar = s.path("image.tar");
    docker_save(&image.tag, &tar);
    let oci = format!("oci-archive:{}", s.path("oci.tar").display());
    zstd_copy(&tar, &oci);
    for arg in [
        image.tag.clone(),
        format!("docker-archive:{}", tar.display()),
        oci,
    ] {
        let (code, json, stderr) = audit(&[&arg]);
        assert_eq!(
            code, 0,
            "{arg}: a warning does not fail the audit: {stderr} {json}"
        );
        let report = &json[0];
        assert_eq!(report["verdict"], "clean", "{arg}: {report}");
        let mut paths: Vec<&str> = report["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .inspect(|w| {
                assert_eq!(w["class"], "proxy-url", "{arg}: {w}");
                assert!(
                    w["layer"].as_str().unwrap().starts_with("sha256:"),
                    "{arg}: {w}"
                );
            })
            .map(|w| w["path"].as_str().unwrap())
            .collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                "etc/yum.repos.d/pulp.repo",
                "opt/keep/sources.list.d/pulp.list"
            ],
            "{arg}: {report}"
        );
    }
}

/// Microsoft's SARIF Multitool, installed by tests/sarif/validator.sh.
fn sarif_validator() -> PathBuf {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sarif/validator.sh");
    // The machine's environment stays: npm may need its registry settings.
    let out = e2e::output(&mut Command::new(&script));
    assert!(
        out.status.success(),
        "{}: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

#[test]
fn the_sarif_log_is_valid_sarif_2_1_0_with_a_rule_per_class() {
    let mut nested = PASSWORD.as_bytes().to_vec();
    for _ in 0..8 {
        nested = gz(&nested);
    }
    let header = format!(
        "Authorization: Basic {}\n",
        b64(&format!("{USERNAME}:{PASSWORD}"))
    );
    let userinfo = format!(
        "baseurl=https://{USERNAME}:fake%20pass%3A%40%2F%25%2B%20word@pulp.example.test/\n"
    );
    let image = Image::build(
        &tag("sarif"),
        &format!(
            "{BASE}ENV PULP_PASSWORD=\"{PASSWORD}\"\nARG PAIR\nRUN [\"/bin/busybox\", \"true\"]\n\
             COPY h /etc/pulp/header\nCOPY u /etc/yum.repos.d/pulp.repo\n\
             COPY t /var/log/apt/term.log\nCOPY n /var/log/deep.gz\n\
             COPY p /etc/apt/sources.list.d/pulp.list\n"
        ),
        &[
            ("h", header.as_bytes()),
            ("u", userinfo.as_bytes()),
            ("t", format!("Get:1 {S3_URL}\n").as_bytes()),
            ("n", &nested),
            (
                "p",
                format!("deb http://{PROXY_LISTEN}/debian trixie main\n").as_bytes(),
            ),
        ],
        &[("PAIR", &format!("{USERNAME}:{PASSWORD}"))],
    );
    let (code, text, stderr) = run_audit(&["--format", "sarif", &image.tag]);
    assert_eq!(code, 1, "{stderr}");
    let log: Value = serde_json::from_str(&text).unwrap();
    let s = Scratch::new();
    let (input, output) = (s.path("audit.sarif"), s.path("validation.sarif"));
    std::fs::write(&input, &text).unwrap();
    let out = e2e::output(
        Command::new(sarif_validator())
            .arg("validate")
            .arg(&input)
            .arg("-o")
            .arg(&output),
    );
    assert!(out.status.success(), "the SARIF Multitool: {out:?}");
    let validation: Value = serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap();
    // Schema violations are errors (JSON1xxx); of the spec's advice, only
    // the tool's missing web page is left (the project has none).
    let problems: Vec<String> = validation["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{} {} {}", r["level"], r["ruleId"], r["message"]))
        .filter(|p| !p.contains("SARIF2005"))
        .collect();
    assert!(problems.is_empty(), "{problems:#?}\n{text}");

    let run = &log["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    let mut seen: Vec<&str> = Vec::new();
    for r in run["results"].as_array().unwrap() {
        let rule = &rules[r["ruleIndex"].as_u64().unwrap() as usize];
        assert_eq!(r["ruleId"], rule["id"], "{r}");
        let logical = &r["locations"][0]["logicalLocations"][0];
        assert!(
            logical["fullyQualifiedName"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{}/", image.tag)),
            "{r}"
        );
        if let Some(uri) = r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].as_str()
        {
            assert!(!uri.starts_with('/') && !uri.contains(' '), "{r}");
        }
        seen.push(rule["id"].as_str().unwrap());
    }
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen,
        [
            "credential-base64",
            "credential-password",
            "credential-url-encoded",
            "credential-user-password",
            "proxy-url-in-repository-file",
            "search-incomplete",
            "storage-signature",
        ],
        "{text}"
    );
    let warning = run["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ruleId"] == "proxy-url-in-repository-file")
        .unwrap();
    assert_eq!(warning["level"], "warning", "{warning}");
    assert_eq!(
        warning["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "etc/apt/sources.list.d/pulp.list"
    );
    let incomplete: Vec<&Value> = run["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["ruleId"] == "search-incomplete")
        .collect();
    assert!(
        incomplete.iter().any(|r| r["message"]["text"]
            .as_str()
            .unwrap()
            .contains("var/log/deep.gz")),
        "what a bound kept from the search is a result: {text}"
    );
    assert_eq!(run["properties"]["images"][0]["verdict"], "leaks");
}

/// Adds to the layout in `dir` an index `name` of the images `platforms`
/// names (their `ref.name` -> architecture), as a multi-platform push has.
fn add_index(dir: &std::path::Path, name: &str, platforms: &[(&str, &str)]) {
    use sha2::{Digest, Sha256};
    let index_path = dir.join("index.json");
    let mut index: Value = serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let entries: Vec<Value> = platforms
        .iter()
        .map(|(image, arch)| {
            let m = index["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == *image)
                .unwrap();
            serde_json::json!({
                "mediaType": m["mediaType"], "digest": m["digest"], "size": m["size"],
                "platform": { "os": "linux", "architecture": arch },
            })
        })
        .collect();
    let blob = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    }))
    .unwrap();
    let hex: String = Sha256::digest(&blob)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(dir.join("blobs/sha256").join(&hex), &blob).unwrap();
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{hex}"), "size": blob.len(),
            "annotations": { "org.opencontainers.image.ref.name": name },
        }));
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
fn registry_images_are_read_over_the_distribution_api_every_platform_verified() {
    use e2e::registry::Registry;
    let ca = e2e::pki::TestCa::new();
    let registry = Registry::start(&ca);
    let (_a, s, tar_a) = saved("registry-a", &format!("ENV X=\"{PASSWORD}\"\n"));
    let (_b, _sb, tar_b) = saved("registry-b", &format!("ENV X=\"{PASSWORD}\"\nLABEL b=1\n"));
    let single = registry.push(
        &format!("docker-archive:{}", tar_a.display()),
        "pap/audit:single",
        false,
    );
    let layout = s.path("layout");
    for (tar, name) in [(&tar_a, "a"), (&tar_b, "b")] {
        skopeo_copy(tar, &format!("oci:{}:{name}", layout.display()), &[]);
    }
    add_index(&layout, "multi", &[("a", "amd64"), ("b", "arm64")]);
    let multi = registry.push(
        &format!("oci:{}:multi", layout.display()),
        "pap/audit:multi",
        true,
    );

    let auth = registry.auth_file(s.dir.path());
    let ca_file = registry.ca_file();
    let (ca_arg, auth_arg) = (ca_file.to_str().unwrap(), auth.to_str().unwrap());
    let forbidden = [
        (
            "the registry password".to_string(),
            e2e::registry::PASSWORD.as_bytes().to_vec(),
        ),
        (
            "the registry auth".to_string(),
            std::fs::read(&auth).unwrap()[20..60].to_vec(),
        ),
    ];
    let (code, stdout, stderr) = run_audit(&[
        "--json",
        "--ca-file",
        ca_arg,
        "--authfile",
        auth_arg,
        &single,
        &multi,
    ]);
    leak::assert_lacks(
        "the audit's output",
        format!("{stdout}{stderr}").as_bytes(),
        &forbidden,
    );
    assert_eq!(code, 1, "{stderr}\n{}", registry.log());
    let json: Value = serde_json::from_str(&stdout).unwrap();
    let names: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["image"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            single.clone(),
            format!("{multi} [linux/amd64]"),
            format!("{multi} [linux/arm64]")
        ],
        "every platform of the index is an image of its own"
    );
    for report in json.as_array().unwrap() {
        let found = findings(report);
        assert_secret_file_found(report["image"].as_str().unwrap(), &found);
        assert_config_env_found(report["image"].as_str().unwrap(), &found);
        assert!(
            report["id"].as_str().unwrap().starts_with("sha256:"),
            "{report}"
        );
    }
    assert_ne!(json[1]["id"], json[2]["id"], "two images, not one twice");

    // A credential helper, as `credHelpers` names it; one that fails is
    // named, and what it printed is not.
    let helpers = tempfile::tempdir().unwrap();
    let helper = |name: &str, script: String| {
        e2e::write_script(
            &helpers.path().join(format!("docker-credential-{name}")),
            &script,
        );
    };
    let secret = serde_json::to_string(e2e::registry::PASSWORD).unwrap();
    helper(
        "pap",
        format!(
            "#!/bin/sh\nread server\ncat <<'EOF'\n{{\"ServerURL\":\"{}\",\"Username\":\"{}\",\"Secret\":{secret}}}\nEOF\n",
            registry.addr,
            e2e::registry::USER
        ),
    );
    helper(
        "broken",
        format!("#!/bin/sh\ncat <<'EOF'\n{secret}\nEOF\nexit 1\n"),
    );
    let path =
        std::ffi::OsString::from(format!("{}:{}", helpers.path().display(), e2e::host_path()));
    for (name, want) in [("pap", 1), ("broken", 2)] {
        let file = s.path(&format!("helper-{name}.json"));
        std::fs::write(
            &file,
            format!("{{\"credHelpers\":{{\"{}\":\"{name}\"}}}}", registry.addr),
        )
        .unwrap();
        let (code, stdout, stderr) = run_audit_env(
            &[
                "--ca-file",
                ca_arg,
                "--authfile",
                file.to_str().unwrap(),
                &single,
            ],
            &[("PATH", &path)],
        );
        leak::assert_lacks(
            "the audit's output",
            format!("{stdout}{stderr}").as_bytes(),
            &forbidden,
        );
        assert_eq!(code, want, "helper {name}: {stderr}");
        if name == "broken" {
            assert!(
                stderr.contains("docker-credential-broken failed"),
                "{stderr}"
            );
        }
    }

    // TLS is verified: without the CA the registry is not trusted.
    let (code, _, stderr) = run_audit(&["--authfile", auth_arg, &single]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&single) && stderr.to_lowercase().contains("certificate"),
        "{stderr}"
    );
    // Without credentials the registry refuses.
    let empty = s.path("empty.json");
    std::fs::write(&empty, "{}").unwrap();
    let (code, _, stderr) = run_audit(&[
        "--ca-file",
        ca_arg,
        "--authfile",
        empty.to_str().unwrap(),
        &single,
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&single) && stderr.to_lowercase().contains("not authorized"),
        "{stderr}"
    );
    let (code, _, stderr) = run_audit(&["--ca-file", auth_arg, &single]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no PEM certificate"), "{stderr}");

    // A blob the registry serves changed is refused, not audited.
    let manifest = registry.manifest(&single);
    let data = registry.blob_file(manifest["layers"][0]["digest"].as_str().unwrap());
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    let (code, _, stderr) = run_audit(&["--ca-file", ca_arg, "--authfile", auth_arg, &single]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.to_lowercase().contains("digest"), "{stderr}");
    eprintln!("a changed blob: {stderr}");
}

#[test]
fn audit_by_tag_and_human_table() {
    let t = format!("t{}", std::process::id());
    let a = Image::build(
        &format!("pap-audit-tag-a:{t}"),
        &format!("{BASE}ENV X=\"{PASSWORD}\"\n"),
        &[],
        &[],
    );
    let _b = Image::build(&format!("pap-audit-tag-b:{t}"), BASE, &[], &[]);
    let (code, text, _) = run_audit(&["--tag", &t]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(&a.tag) && text.contains("LEAKS"), "{text}");
    assert!(
        text.contains(&format!("pap-audit-tag-b:{t}")) && text.contains("clean"),
        "{text}"
    );
    assert!(text.contains("config config.Env["), "{text}");
}

#[test]
fn unreadable_password_is_an_error() {
    let s = Scratch::new();
    let cfg = s.write_config(&format!(
        "[upstream]\nurl = \"https://pulp.example.test\"\nusername = \"{USERNAME}\"\npassword_file = \"{}\"\n",
        s.path("nope").display()
    ));
    let out = e2e::output(
        Command::new(e2e::bin("ci-builder"))
            .arg("--config")
            .arg(&cfg)
            .args(["audit", "x:y"]),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot load the password"));
}
