//! An RPM repository for the Pulp tier, and dnf to install from it: two
//! small noarch RPMs built with `rpmbuild` (one depends on the other, so
//! dnf resolves as on Rocky Linux) and indexed with `createrepo_c`, cached
//! under `target/e2e-cache/rpm-repo`. dnf runs with `--installroot`, so it
//! touches nothing of the machine's own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// What dnf is asked for; it brings [`DATA_PACKAGE`] as a dependency.
pub const PACKAGE: &str = "pap-hello";
/// The dependency, with a payload large enough that metadata and TLS
/// handshakes do not dominate the bytes a cached run is measured by.
pub const DATA_PACKAGE: &str = "pap-data";
/// The payload's size.
const BLOB: usize = 512 * 1024;

static LOCK: Mutex<()> = Mutex::new(());

use crate::run;

/// A spec file. No automatic dependencies: the script's `#!/bin/sh` would
/// make rpm require a shell the empty install root does not have.
fn spec(name: &str, body: &str) -> String {
    format!(
        "Name: {name}\nVersion: 1.0\nRelease: 1\nSummary: {name} for the pulp-auth-proxy tests\n\
         License: MIT\nBuildArch: noarch\n\
         AutoReqProv: no\n{body}"
    )
}

/// The repository root (with `repodata/`), built once.
pub fn repo() -> PathBuf {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let root = crate::apt::cache_dir().join("rpm-repo");
    if root.join("repodata/repomd.xml").exists() {
        return root;
    }
    let _ = std::fs::remove_dir_all(&root);
    let top = tempfile::tempdir().unwrap();
    for sub in ["SPECS", "SOURCES", "BUILD", "RPMS", "SRPMS", "BUILDROOT"] {
        std::fs::create_dir(top.path().join(sub)).unwrap();
    }
    // Incompressible bytes (xorshift), so the RPM stays BLOB-sized.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let blob: Vec<u8> = (0..BLOB)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(top.path().join("SOURCES/blob"), blob).unwrap();
    let specs = [
        spec(
            DATA_PACKAGE,
            "%description\nData.\n%install\nmkdir -p %{buildroot}/usr/share/pap-data\n\
             cp %{_sourcedir}/blob %{buildroot}/usr/share/pap-data/blob\n\
             %files\n/usr/share/pap-data/blob\n",
        ),
        spec(
            PACKAGE,
            &format!(
                "Requires: {DATA_PACKAGE}\n%description\nHello.\n%install\n\
                 mkdir -p %{{buildroot}}/usr/bin\n\
                 printf '#!/bin/sh\\necho hello from pulp\\n' > %{{buildroot}}/usr/bin/pap-hello\n\
                 chmod 755 %{{buildroot}}/usr/bin/pap-hello\n\
                 %files\n/usr/bin/pap-hello\n"
            ),
        ),
    ];
    let rpms = root.join("Packages");
    std::fs::create_dir_all(&rpms).unwrap();
    for text in specs {
        let spec_file = top.path().join("SPECS/pkg.spec");
        std::fs::write(&spec_file, text).unwrap();
        run(
            Command::new("rpmbuild")
                .arg("--define")
                .arg(format!("_topdir {}", top.path().display()))
                // Debian's rpm builds for installing elsewhere; nothing
                // here needs build dependencies.
                .args(["--nodeps", "-bb"])
                .arg(&spec_file)
                .env_clear()
                .env("PATH", crate::host_path())
                .env("HOME", top.path()),
            "rpmbuild (tests/run installs rpm)",
        );
    }
    for entry in std::fs::read_dir(top.path().join("RPMS/noarch")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, rpms.join(p.file_name().unwrap())).unwrap();
    }
    run(
        Command::new("createrepo_c")
            .arg("--quiet")
            .arg(&root)
            .env_clear()
            .env("PATH", crate::host_path()),
        "createrepo_c (tests/run installs createrepo-c)",
    );
    root
}

/// Installs [`PACKAGE`] with dnf into a fresh root from the repository at
/// `baseurl`, inside network namespace `netns` when given; returns the root
/// (removed when it drops) and dnf's output, panicking with the output if
/// dnf fails.
pub fn dnf_install(netns: Option<&str>, baseurl: &str) -> (tempfile::TempDir, String) {
    dnf_install_with(netns, baseurl, "")
}

/// Like [`dnf_install`], with `repo_lines` added to the repository's
/// definition (e.g. `sslcacert=...` for a repository dnf reaches over
/// HTTPS itself).
pub fn dnf_install_with(
    netns: Option<&str>,
    baseurl: &str,
    repo_lines: &str,
) -> (tempfile::TempDir, String) {
    let root = tempfile::tempdir().unwrap();
    let conf_dir = tempfile::tempdir().unwrap();
    let repos = conf_dir.path().join("repos");
    std::fs::create_dir(&repos).unwrap();
    std::fs::write(
        repos.join("pap.repo"),
        format!(
            "[pap]\nname=pap\nbaseurl={baseurl}\nenabled=1\ngpgcheck=0\nrepo_gpgcheck=0\n\
             {repo_lines}"
        ),
    )
    .unwrap();
    let conf = conf_dir.path().join("dnf.conf");
    std::fs::write(
        &conf,
        format!(
            "[main]\nreposdir={}\ncachedir={}\nkeepcache=0\ninstall_weak_deps=False\n\
             gpgcheck=0\nplugins=0\n",
            repos.display(),
            conf_dir.path().join("cache").display()
        ),
    )
    .unwrap();
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "dnf"]);
            c
        }
        None => Command::new("dnf"),
    };
    let out = crate::output(
        cmd.arg("-y")
            .arg("--config")
            .arg(&conf)
            .arg("--installroot")
            .arg(root.path())
            .args(["--releasever", "9", "--nodocs", "install", PACKAGE])
            .env_clear()
            .env("PATH", crate::host_path())
            .env("HOME", conf_dir.path())
            .env("LANG", "C.UTF-8"),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "dnf install {PACKAGE} failed:\n{text}"
    );
    for file in ["usr/bin/pap-hello", "usr/share/pap-data/blob"] {
        assert!(
            root.path().join(file).exists(),
            "dnf succeeded but /{file} is not in the root:\n{text}"
        );
    }
    (root, text)
}

/// The RPM files of the repository, for counting cache hits.
pub fn rpm_files(repo: &Path) -> Vec<String> {
    std::fs::read_dir(repo.join("Packages"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}
