//! What `ci-builder audit IMAGE` may name, in skopeo's transport names
//! (familiar to operators): a local image by name or ID (also
//! `docker-daemon:NAME`), `docker-archive:PATH` (what `docker save`
//! writes, also compressed), `oci-archive:PATH` (an OCI layout in a
//! tar), `oci:DIR` (an OCI layout directory) and `docker://REF` (a
//! registry).

use crate::error::BuilderError;
use std::path::PathBuf;

/// Where an image is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A local image of the Docker daemon.
    Daemon(String),
    /// A `docker save` tar (legacy or OCI layout), plain or compressed.
    DockerArchive(PathBuf),
    /// An OCI layout in a tar.
    OciArchive(PathBuf),
    /// An OCI layout directory.
    OciDir(PathBuf),
    /// `REGISTRY/REPO:TAG` or `REGISTRY/REPO@DIGEST`.
    Registry(String),
}

/// Transports skopeo knows that the audit does not read.
const OTHER_TRANSPORTS: [&str; 5] = ["dir:", "containers-storage:", "ostree:", "sif:", "tarball:"];

impl Source {
    /// Reads an IMAGE argument.
    pub fn parse(arg: &str) -> Result<Source, BuilderError> {
        let usage = |why: String| BuilderError::Usage(format!("audit {arg}: {why}"));
        let file = |p: &str, what: &str| {
            let path = PathBuf::from(p);
            if path.is_file() {
                Ok(path)
            } else {
                Err(usage(format!(
                    "{p} is not a file; give the path of {what} (the whole archive is audited; a :REF suffix is not taken)"
                )))
            }
        };
        if let Some(p) = arg.strip_prefix("docker-archive:") {
            return Ok(Source::DockerArchive(file(p, "a `docker save` archive")?));
        }
        if let Some(p) = arg.strip_prefix("oci-archive:") {
            return Ok(Source::OciArchive(file(p, "an OCI layout archive")?));
        }
        if let Some(p) = arg.strip_prefix("oci:") {
            let dir = PathBuf::from(p);
            if !dir.join("index.json").is_file() {
                return Err(usage(format!(
                    "{p} holds no index.json; give an OCI layout directory (every image in it is audited; a :REF suffix is not taken)"
                )));
            }
            return Ok(Source::OciDir(dir));
        }
        if let Some(r) = arg.strip_prefix("docker://") {
            if r.is_empty() || r.contains("://") {
                return Err(usage(
                    "give docker://REGISTRY/REPO:TAG or docker://REGISTRY/REPO@sha256:DIGEST"
                        .into(),
                ));
            }
            return Ok(Source::Registry(r.to_string()));
        }
        if let Some(name) = arg.strip_prefix("docker-daemon:") {
            return Ok(Source::Daemon(name.to_string()));
        }
        if let Some(t) = OTHER_TRANSPORTS.iter().find(|t| arg.starts_with(**t)) {
            return Err(usage(format!(
                "the {} transport is not read; copy the image to oci:DIR or docker-archive:PATH with skopeo first",
                t.trim_end_matches(':')
            )));
        }
        Ok(Source::Daemon(arg.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_as_skopeo_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.tar");
        std::fs::write(&archive, b"").unwrap();
        std::fs::write(dir.path().join("index.json"), b"{}").unwrap();
        let a = archive.display().to_string();
        let d = dir.path().display().to_string();
        assert_eq!(
            Source::parse(&format!("docker-archive:{a}")).unwrap(),
            Source::DockerArchive(archive.clone())
        );
        assert_eq!(
            Source::parse(&format!("oci-archive:{a}")).unwrap(),
            Source::OciArchive(archive.clone())
        );
        assert_eq!(
            Source::parse(&format!("oci:{d}")).unwrap(),
            Source::OciDir(dir.path().to_path_buf())
        );
        assert_eq!(
            Source::parse("docker://127.0.0.1:5000/kolla/base:1").unwrap(),
            Source::Registry("127.0.0.1:5000/kolla/base:1".into())
        );
        assert_eq!(
            Source::parse("kolla/base:1").unwrap(),
            Source::Daemon("kolla/base:1".into())
        );
        assert_eq!(
            Source::parse("docker-daemon:kolla/base:1").unwrap(),
            Source::Daemon("kolla/base:1".into())
        );
        for bad in [
            format!("docker-archive:{d}/nope.tar"),
            format!("oci:{a}"),
            "dir:/tmp/x".into(),
            "docker://".into(),
        ] {
            let e = Source::parse(&bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("audit {bad}: ")), "{e}");
        }
    }
}
