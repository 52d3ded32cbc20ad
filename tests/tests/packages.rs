//! The .deb and the .rpm `tests/packaging/build.sh` makes (tests/run runs
//! it before the tests): what an operator installs, read back with the
//! package managers' own tools: every file where it belongs, the
//! configuration as a file the package manager keeps, no password, nothing
//! enabled or started on install, metadata from the workspace, and
//! binaries that run on the seed's oldest host (Rocky Linux 9, glibc 2.34).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Rocky Linux 9's glibc: no symbol may need a newer one.
const GLIBC_MAX: (u32, u32) = (2, 34);

const FILES: [&str; 12] = [
    "/etc/pulp-auth-proxy/config.toml",
    "/usr/bin/ci-builder",
    "/usr/bin/pulp-auth-proxy",
    "/usr/lib/systemd/system/pulp-auth-proxy-activated.service",
    "/usr/lib/systemd/system/pulp-auth-proxy.service",
    "/usr/lib/systemd/system/pulp-auth-proxy.socket",
    "/usr/share/doc/pulp-auth-proxy/README.md",
    "/usr/share/doc/pulp-auth-proxy/examples/example-loopback.toml",
    "/usr/share/doc/pulp-auth-proxy/examples/networkd/50-breth1.netdev",
    "/usr/share/doc/pulp-auth-proxy/examples/networkd/50-breth1.network",
    "/usr/share/doc/pulp-auth-proxy/examples/networkd/50-dummy1.netdev",
    "/usr/share/doc/pulp-auth-proxy/examples/networkd/50-dummy1.network",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(program: &str, args: &[&str], what: &str) -> String {
    e2e::run(Command::new(program).args(args), what)
}

/// The newest GLIBC_x.y version `binary` needs (readelf, binutils).
fn glibc_needed(binary: &Path) -> (u32, u32) {
    let text = run(
        "readelf",
        &["-V", "-W", binary.to_str().unwrap()],
        "readelf -V",
    );
    text.split("GLIBC_")
        .skip(1)
        .filter_map(|rest| {
            let v: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
            Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
        })
        .max()
        .expect("a binary linked against glibc")
}

fn assert_units_name_the_packaged_binary(unit_text: &str, name: &str) {
    for line in unit_text.lines().filter(|l| l.starts_with("ExecStart")) {
        assert!(
            line.contains("=/usr/bin/pulp-auth-proxy "),
            "{name}: {line} must run the packaged binary"
        );
    }
}

#[test]
fn the_deb_holds_what_an_operator_installs_and_starts_nothing() {
    let deb = e2e::package("debian", "deb");
    let deb_arg = deb.to_str().unwrap();
    let field = |name: &str| run("dpkg-deb", &["-f", deb_arg, name], "dpkg-deb -f");
    assert_eq!(field("Package").trim(), "pulp-auth-proxy");
    assert_eq!(
        field("Version").trim(),
        format!("{}-1", env!("CARGO_PKG_VERSION"))
    );
    assert!(
        field("Description").starts_with("A reverse proxy that adds Pulp's basic-auth credentials"),
        "{}",
        field("Description")
    );
    assert!(field("Depends").contains("libc6"), "{}", field("Depends"));
    // The units' ExecReload= runs kill, which a minimal system lacks.
    assert!(field("Depends").contains("procps"), "{}", field("Depends"));
    assert_eq!(field("Recommends").trim(), "ca-certificates");

    let listing = run("dpkg-deb", &["-c", deb_arg], "dpkg-deb -c");
    let mut files: Vec<String> = listing
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.').to_string())
        .collect();
    files.sort();
    let mut want: Vec<String> = FILES.iter().map(|f| f.to_string()).collect();
    want.push("/usr/share/doc/pulp-auth-proxy/copyright".into());
    want.sort();
    assert_eq!(files, want, "{listing}");
    assert!(!listing.contains("password"), "no password file: {listing}");

    let dir = tempfile::tempdir().unwrap();
    let (control, tree) = (dir.path().join("control"), dir.path().join("tree"));
    run(
        "dpkg-deb",
        &["-e", deb_arg, control.to_str().unwrap()],
        "dpkg-deb -e",
    );
    run(
        "dpkg-deb",
        &["-x", deb_arg, tree.to_str().unwrap()],
        "dpkg-deb -x",
    );
    assert_eq!(
        std::fs::read_to_string(control.join("conffiles")).unwrap(),
        "/etc/pulp-auth-proxy/config.toml\n"
    );
    assert_eq!(
        std::fs::read(tree.join("etc/pulp-auth-proxy/config.toml")).unwrap(),
        std::fs::read(root().join("config/example.toml")).unwrap()
    );
    // The generated scripts reload systemd and restart a running unit on
    // upgrade; they enable a unit only if it was enabled before, and never
    // start one.
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(postinst.contains("was-enabled"), "{postinst}");
    for never in [
        "deb-systemd-invoke start",
        "systemctl start",
        "enable --now",
    ] {
        assert!(
            !postinst.contains(never),
            "postinst runs `{never}`:\n{postinst}"
        );
    }
    for enable in postinst
        .lines()
        .filter(|l| l.contains("deb-systemd-helper enable"))
    {
        assert!(
            enable.starts_with("\t\t\t"),
            "enable outside was-enabled: {enable}"
        );
    }
    for unit in [
        "pulp-auth-proxy.service",
        "pulp-auth-proxy-activated.service",
    ] {
        let text = std::fs::read_to_string(tree.join("usr/lib/systemd/system").join(unit)).unwrap();
        assert_units_name_the_packaged_binary(&text, unit);
    }
    for bin in ["pulp-auth-proxy", "ci-builder"] {
        let needed = glibc_needed(&tree.join("usr/bin").join(bin));
        assert!(
            needed <= GLIBC_MAX,
            "{bin} needs GLIBC_{}.{}, newer than Rocky Linux 9's 2.34",
            needed.0,
            needed.1
        );
        eprintln!("{bin}: GLIBC_{}.{} at most", needed.0, needed.1);
    }
}

#[test]
fn the_rpm_holds_the_same_with_its_config_kept_and_no_scriptlet() {
    let rpm = e2e::package("generate-rpm", "rpm");
    let rpm_arg = rpm.to_str().unwrap();
    let query = |fmt: &str| run("rpm", &["-qp", "--queryformat", fmt, rpm_arg], "rpm -qp");
    assert_eq!(
        query("%{NAME} %{VERSION} %{LICENSE}"),
        format!("pulp-auth-proxy {} Apache-2.0", env!("CARGO_PKG_VERSION"))
    );
    assert!(query("%{SUMMARY}").starts_with("A reverse proxy that adds Pulp's"));
    // Each file with its flags: c config, n noreplace, d doc.
    let listed = query("[%{FILENAMES} %{FILEFLAGS:fflags}\n]");
    let mut files: Vec<&str> = listed
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, FILES, "{listed}");
    let flags = |path: &str| {
        listed
            .lines()
            .find(|l| l.starts_with(&format!("{path} ")))
            .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
            .unwrap()
    };
    assert_eq!(flags("/etc/pulp-auth-proxy/config.toml"), "cn");
    assert_eq!(flags("/usr/share/doc/pulp-auth-proxy/README.md"), "d");
    let scripts = run("rpm", &["-qp", "--scripts", rpm_arg], "rpm -qp --scripts");
    assert!(
        scripts.trim().is_empty(),
        "nothing runs on install: {scripts}"
    );
    // The requirements rpm derived from the binaries: none newer than
    // Rocky Linux 9's glibc, so it installs there.
    let requires = run("rpm", &["-qp", "--requires", rpm_arg], "rpm -qp --requires");
    assert!(
        requires.lines().any(|l| l.trim() == "/usr/bin/kill"),
        "the units' ExecReload= needs kill: {requires}"
    );
    let recommends = run(
        "rpm",
        &["-qp", "--recommends", rpm_arg],
        "rpm -qp --recommends",
    );
    assert_eq!(recommends.trim(), "ca-certificates");
    for line in requires.lines().filter(|l| l.contains("GLIBC_")) {
        let v = line.split("GLIBC_").nth(1).unwrap();
        let v: String = v
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let needed = (parts.next().unwrap(), parts.next().unwrap_or(0));
        assert!(needed <= GLIBC_MAX, "the rpm requires {line}");
    }
}
