//! Images for the audit tests, built by the real Docker daemon from
//! scratch with a static busybox, `--network host`, and removed on drop.

use std::path::Path;
use std::process::Command;

/// Fails with one clear line when no daemon answers (tests/run starts one).
pub fn ensure_daemon() {
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    match ok {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "no Docker daemon answers ({}); tests/run starts `dockerd --bridge=none --iptables=false`",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("the docker client is missing ({e}); tests/run installs docker.io"),
    }
}

/// A built image, removed on drop.
pub struct Image {
    /// `name:tag`.
    pub tag: String,
}

impl Image {
    /// Builds `dockerfile` with `files` in the context (plus `busybox`).
    pub fn build(
        tag: &str,
        dockerfile: &str,
        files: &[(&str, &[u8])],
        build_args: &[(&str, &str)],
    ) -> Image {
        match Self::try_build(tag, dockerfile, files, build_args) {
            Ok(i) => i,
            Err(log) => panic!("docker build {tag}: {log}"),
        }
    }

    /// Builds without the cache; the build's output on failure.
    pub fn try_build(
        tag: &str,
        dockerfile: &str,
        files: &[(&str, &[u8])],
        build_args: &[(&str, &str)],
    ) -> Result<Image, String> {
        ensure_daemon();
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(busybox(), dir.path().join("busybox")).unwrap();
        std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
        for (name, data) in files {
            std::fs::write(dir.path().join(name), data).unwrap();
        }
        let mut cmd = Command::new("docker");
        cmd.args(["build", "--no-cache", "--network", "host", "-t", tag]);
        for (k, v) in build_args {
            cmd.arg("--build-arg").arg(format!("{k}={v}"));
        }
        let out = cmd.arg(dir.path()).output().unwrap();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(Image {
                tag: tag.to_string(),
            })
        } else {
            let _ = Command::new("docker").args(["rmi", "-f", tag]).output();
            Err(log)
        }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.tag])
            .output();
    }
}

fn busybox() -> &'static Path {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(p).exists() {
            return Path::new(p);
        }
    }
    panic!("busybox is missing; tests/run installs busybox-static");
}
