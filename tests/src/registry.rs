//! A real image registry for the audit: Debian's `docker-registry`
//! (distribution 2.8) on 127.0.0.1 with TLS from the tests' CA and basic
//! auth from an htpasswd file (bcrypt, as the registry requires), and
//! skopeo to push to it. Stopped by its PID when dropped.

use crate::pki::TestCa;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The registry's user; the password has the characters that change under
/// every encoding, and is not the Pulp one.
pub const USER: &str = "ci-registry";
/// The registry user's (fake) password.
pub const PASSWORD: &str = "fake reg:@/%+ pass";

/// A running registry.
pub struct Registry {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts one with a certificate from `ca`, and waits until it accepts
    /// connections.
    pub fn start(ca: &TestCa) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        ca.write_leaf_pem(&p("cert.pem"), &p("key.pem"));
        ca.write_pem(&p("ca.pem"));
        std::fs::create_dir(p("certs.d")).unwrap();
        ca.write_pem(&p("certs.d/ca.crt"));
        let mut htpasswd = Command::new("htpasswd")
            .args(["-Bin", USER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("htpasswd (apache2-utils, installed by tests/host-setup.sh)");
        std::io::Write::write_all(htpasswd.stdin.as_mut().unwrap(), PASSWORD.as_bytes()).unwrap();
        let out = htpasswd.wait_with_output().unwrap();
        assert!(out.status.success(), "htpasswd: {out:?}");
        std::fs::write(p("htpasswd"), &out.stdout).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        std::fs::write(
            p("config.yml"),
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {addr}\n  tls:\n    certificate: {}\n    key: {}\n\
                 auth:\n  htpasswd:\n    realm: tests\n    path: {}\n",
                p("data").display(),
                p("cert.pem").display(),
                p("key.pem").display(),
                p("htpasswd").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(p("config.yml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(p("registry.log")).unwrap())
            .spawn()
            .expect("docker-registry (installed by tests/host-setup.sh)");
        let registry = Registry { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {addr}: {}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// The registry's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Where it keeps its blobs (`docker/registry/v2/blobs/...`).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The stored file of blob `digest` (`sha256:HEX`).
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The manifest `reference` (`docker://...`) names, as skopeo reads it.
    pub fn manifest(&self, reference: &str) -> serde_json::Value {
        let auth = self.auth_file(self.dir.path());
        let out = crate::output(
            Command::new("skopeo")
                .args(["inspect", "--raw", "--authfile"])
                .arg(&auth)
                .arg("--cert-dir")
                .arg(self.dir.path().join("certs.d"))
                .arg(reference),
        );
        assert!(out.status.success(), "skopeo inspect {reference}: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The CA file a client trusts it with.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A Docker config file with this registry's credentials, for
    /// `ci-builder audit --authfile` and `skopeo --authfile`.
    pub fn auth_file(&self, dir: &Path) -> PathBuf {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
        let path = dir.join("auth.json");
        std::fs::write(
            &path,
            format!(
                "{{\"auths\":{{\"{}\":{{\"auth\":\"{auth}\"}}}}}}",
                self.addr
            ),
        )
        .unwrap();
        path
    }

    /// `skopeo copy [--all] SRC docker://ADDR/REPO`, with the credentials
    /// and the CA.
    pub fn push(&self, src: &str, repo: &str, all: bool) -> String {
        let dest = format!("docker://{}/{repo}", self.addr);
        let auth = self.auth_file(self.dir.path());
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "-q"]);
        if all {
            cmd.arg("--all");
        }
        cmd.arg("--dest-authfile")
            .arg(&auth)
            .arg("--dest-cert-dir")
            .arg(self.dir.path().join("certs.d"))
            .arg(src)
            .arg(&dest);
        let out = crate::output(&mut cmd);
        assert!(
            out.status.success(),
            "skopeo copy {src} {dest}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        dest
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
