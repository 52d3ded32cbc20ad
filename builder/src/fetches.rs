//! The fetch manifest of a build: the proxy's fetch record (`/fetches`)
//! from the cursor taken before the build to its end, written as
//! `<tag>.fetches.json`; and `fetches diff`, which compares two builds'
//! manifests file by file. A package file's name carries its version
//! (`name_version_arch.deb`, `name-version-release.arch.rpm`, wheels), so
//! the same name with other content means a repository replaced a
//! published file: that is flagged, not merely listed.

use crate::error::BuilderError;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

/// How long the proxy may take to answer `/fetches`.
const TIMEOUT: Duration = Duration::from_secs(30);

/// One record, as the proxy serves it (see docs/operating.md).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// Its number in the proxy's record.
    pub seq: u64,
    /// When the transfer ended, in ms since the epoch.
    pub unix_ms: u64,
    /// `GET` or `HEAD`.
    pub method: String,
    /// The path as forwarded.
    pub path: String,
    /// The status the client got.
    pub status: u16,
    /// Body bytes the client got.
    pub bytes: u64,
    /// Their SHA-256, hex.
    pub sha256: String,
    /// What the proxy's cache did, when it is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    /// The upstream or storage host that served it.
    pub host: String,
}

/// What one build fetched through the proxy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// The proxy's `/fetches` URL.
    pub proxy: String,
    /// The cursor before the build: records after it are the build's.
    pub from: u64,
    /// The cursor at the end.
    pub to: u64,
    /// The build's records the proxy no longer held (raise
    /// `proxy.fetch_records`).
    pub lost: u64,
    /// The proxy restarted during the build: the records before the
    /// restart are gone, and `from` is 0 of the new record.
    #[serde(default)]
    pub restarted: bool,
    /// Every fetch, oldest first.
    pub fetches: Vec<Record>,
}

/// Why the fetch record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchesError {
    /// The URL did not parse.
    #[error("cannot form the URL {0}")]
    Url(String),
    /// No answer.
    #[error("{url}: {why}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// The client's error, or the timeout.
        why: String,
    },
    /// The proxy keeps no record.
    #[error("the proxy keeps no fetch record (proxy.fetch_records = 0)")]
    Off,
    /// Another answer.
    #[error("{url} answered {status}")]
    Status {
        /// The URL asked.
        url: String,
        /// Its status.
        status: http::StatusCode,
    },
    /// A header or line was not what the proxy sends.
    #[error("{url}: {what}")]
    Malformed {
        /// The URL asked.
        url: String,
        /// What was wrong.
        what: String,
    },
}

/// `/fetches` of the proxy at `base` (`http://ADDR`).
pub struct Proxy {
    url: String,
}

impl Proxy {
    /// The record of the proxy whose local endpoints are at `base`.
    pub fn new(base: &str) -> Self {
        Self {
            url: format!("{base}/fetches"),
        }
    }

    /// The cursor now: records after it are the ones still to come.
    pub async fn cursor(&self) -> Result<Cursor, FetchesError> {
        let (_, page) = self.ask(http::Method::HEAD, &self.url).await?;
        Ok(Cursor {
            epoch: page.epoch,
            seq: page.cursor,
        })
    }

    /// Every record after `from`; all the proxy holds when it restarted
    /// since `from` was read.
    pub async fn since(&self, from: Cursor) -> Result<Manifest, FetchesError> {
        let mut url = format!("{}?since={}", self.url, from.seq);
        let (mut body, mut page) = self.ask(http::Method::GET, &url).await?;
        let restarted = page.epoch != from.epoch;
        let from = if restarted {
            url = format!("{}?since=0", self.url);
            (body, page) = self.ask(http::Method::GET, &url).await?;
            0
        } else {
            from.seq
        };
        let (to, lost) = (page.cursor, page.lost);
        let malformed = |what: String| FetchesError::Malformed {
            url: url.clone(),
            what,
        };
        let text = std::str::from_utf8(&body).map_err(|e| malformed(e.to_string()))?;
        let fetches = text
            .lines()
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| malformed(format!("line {}: {e}", i + 1)))
            })
            .collect::<Result<_, _>>()?;
        Ok(Manifest {
            proxy: self.url.clone(),
            from,
            to,
            lost,
            restarted,
            fetches,
        })
    }

    async fn ask(&self, method: http::Method, url: &str) -> Result<(Bytes, Page), FetchesError> {
        let uri: http::Uri = url.parse().map_err(|_| FetchesError::Url(url.into()))?;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Empty<Bytes>>();
        let req = http::Request::builder()
            .method(method)
            .uri(uri)
            .body(Empty::new())
            .map_err(|_| FetchesError::Url(url.into()))?;
        let unreachable = |why: String| FetchesError::Unreachable {
            url: url.into(),
            why,
        };
        let resp = tokio::time::timeout(TIMEOUT, client.request(req))
            .await
            .map_err(|_| unreachable(format!("no answer within {} s", TIMEOUT.as_secs())))?
            .map_err(|e| unreachable(e.to_string()))?;
        match resp.status() {
            http::StatusCode::OK => {}
            http::StatusCode::NOT_FOUND => return Err(FetchesError::Off),
            status => {
                return Err(FetchesError::Status {
                    url: url.into(),
                    status,
                })
            }
        }
        let number = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| FetchesError::Malformed {
                    url: url.into(),
                    what: format!("no number in the {name} header"),
                })
        };
        let page = Page {
            cursor: number("fetches-cursor")?,
            lost: number("fetches-lost")?,
            epoch: number("fetches-epoch")?,
        };
        let body = tokio::time::timeout(TIMEOUT, resp.into_body().collect())
            .await
            .map_err(|_| unreachable("the body did not arrive in time".into()))?
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        Ok((body, page))
    }
}

/// Where the proxy's record stood: its epoch and the newest record then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// `Fetches-Epoch`: when the proxy's record began.
    pub epoch: u64,
    /// `Fetches-Cursor`.
    pub seq: u64,
}

/// The headers of a `/fetches` answer.
struct Page {
    cursor: u64,
    lost: u64,
    epoch: u64,
}

/// The file name of a build's manifest: `<tag>.fetches.json`.
pub fn file_name(tag: &str) -> String {
    format!("{tag}.fetches.json")
}

/// Writes `manifest` to `path` (replacing it whole: a partial file is
/// never left).
pub fn write(path: &Path, manifest: &Manifest) -> Result<(), BuilderError> {
    let text = serde_json::to_vec_pretty(manifest).map_err(|source| BuilderError::Json {
        what: "the fetch manifest".into(),
        source,
    })?;
    let io = |source| BuilderError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let mut tmp = tempfile::NamedTempFile::new_in(dir.unwrap_or(Path::new("."))).map_err(io)?;
    std::io::Write::write_all(&mut tmp, &text).map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// Reads a manifest `write` wrote.
pub fn read(path: &Path) -> Result<Manifest, BuilderError> {
    let data = std::fs::read(path).map_err(|source| BuilderError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&data).map_err(|e| {
        BuilderError::Usage(format!(
            "{} is not a fetch manifest ({e}); give the <tag>.fetches.json files `ci-builder build` writes",
            path.display()
        ))
    })
}

/// What changed between two builds' fetches.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Fetched by the second build only.
    pub added: Vec<String>,
    /// Fetched by the first build only.
    pub removed: Vec<String>,
    /// Fetched by both, with other content (metadata files change).
    pub changed: Vec<String>,
    /// Package files whose content changed under the same versioned name:
    /// (path, first build's sha256s, second build's).
    pub republished: Vec<(String, Vec<String>, Vec<String>)>,
}

/// Compares the complete bodies (`GET`, 200) two builds received.
pub fn diff(a: &Manifest, b: &Manifest) -> Diff {
    let (a, b) = (bodies(a), bodies(b));
    let mut d = Diff::default();
    for (path, before) in &a {
        match b.get(path) {
            None => d.removed.push(path.to_string()),
            Some(after) if after != before => {
                if is_package(path) {
                    let list = |s: &BTreeSet<&str>| s.iter().map(|h| h.to_string()).collect();
                    d.republished
                        .push((path.to_string(), list(before), list(after)));
                } else {
                    d.changed.push(path.to_string());
                }
            }
            Some(_) => {}
        }
    }
    d.added = b
        .keys()
        .filter(|p| !a.contains_key(*p))
        .map(|p| p.to_string())
        .collect();
    d
}

/// Each path's body hashes (complete `GET`s with 200 only).
fn bodies(m: &Manifest) -> BTreeMap<&str, BTreeSet<&str>> {
    let mut out: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in m
        .fetches
        .iter()
        .filter(|r| r.method == "GET" && r.status == 200)
    {
        out.entry(&r.path).or_default().insert(&r.sha256);
    }
    out
}

/// Whether `path` names a package file, whose name holds its version.
pub fn is_package(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let versioned = |ext: &str, sep: char, parts: usize| {
        name.strip_suffix(ext)
            .is_some_and(|stem| stem.split(sep).count() >= parts)
    };
    versioned(".deb", '_', 3)
        || versioned(".udeb", '_', 3)
        || versioned(".ddeb", '_', 3)
        || versioned(".rpm", '-', 3)
        || versioned(".whl", '-', 3)
}

impl Diff {
    /// The report `fetches diff` prints.
    pub fn text(&self, a: &Path, b: &Path) -> String {
        let mut out = format!(
            "{} -> {}: {} added, {} removed, {} changed, {} package files republished\n",
            a.display(),
            b.display(),
            self.added.len(),
            self.removed.len(),
            self.changed.len(),
            self.republished.len()
        );
        for (path, before, after) in &self.republished {
            out.push_str(&format!(
                "  REPUBLISHED {path}: sha256 {} -> {} (the same versioned name with other content)\n",
                before.join(","),
                after.join(",")
            ));
        }
        for (mark, list) in [
            ("+", &self.added),
            ("-", &self.removed),
            ("~", &self.changed),
        ] {
            for path in list {
                out.push_str(&format!("  {mark} {path}\n"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str, sha: &str) -> Record {
        Record {
            seq: 1,
            unix_ms: 0,
            method: "GET".into(),
            path: path.into(),
            status: 200,
            bytes: 1,
            sha256: sha.into(),
            cache: None,
            host: "pulp.example.test".into(),
        }
    }

    fn manifest(fetches: Vec<Record>) -> Manifest {
        Manifest {
            proxy: "http://127.0.0.1:8080/fetches".into(),
            from: 0,
            to: fetches.len() as u64,
            lost: 0,
            restarted: false,
            fetches,
        }
    }

    const DEB: &str = "/pulp/content/debian/pool/main/h/hello/hello_2.10-3_amd64.deb";
    const RPM: &str = "/pulp/content/rocky/Packages/h/hello-2.12-1.el9.x86_64.rpm";
    const PACKAGES: &str = "/pulp/content/debian/dists/bookworm/main/binary-amd64/Packages";

    #[test]
    fn a_package_changed_under_its_versioned_name_is_flagged() {
        let a = manifest(vec![
            record(DEB, "aa"),
            record(RPM, "bb"),
            record(PACKAGES, "cc"),
            record("/pulp/content/gone", "dd"),
        ]);
        let mut head = record("/pulp/content/new", "");
        head.method = "HEAD".into();
        let mut missing = record("/pulp/content/missing", "ee");
        missing.status = 404;
        let b = manifest(vec![
            record(DEB, "a2"),
            record(RPM, "bb"),
            record(PACKAGES, "c2"),
            record("/pulp/content/new", "ff"),
            head,
            missing,
        ]);
        let d = diff(&a, &b);
        assert_eq!(
            d,
            Diff {
                added: vec!["/pulp/content/new".into()],
                removed: vec!["/pulp/content/gone".into()],
                changed: vec![PACKAGES.into()],
                republished: vec![(DEB.into(), vec!["aa".into()], vec!["a2".into()])],
            }
        );
        let text = d.text(Path::new("a.json"), Path::new("b.json"));
        assert!(
            text.contains(&format!("REPUBLISHED {DEB}: sha256 aa -> a2")),
            "{text}"
        );
        assert!(diff(&a, &a) == Diff::default());
    }

    #[test]
    fn package_names_are_known_by_their_format() {
        for p in [DEB, RPM, "/simple/pulp/pulp_cli-0.30.0-py3-none-any.whl"] {
            assert!(is_package(p), "{p}");
        }
        for p in [
            PACKAGES,
            "/repodata/repomd.xml",
            "/x/latest.deb",
            "/x/a.rpm",
        ] {
            assert!(!is_package(p), "{p}");
        }
    }

    #[test]
    fn a_manifest_is_written_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file_name("victoria-1"));
        let m = manifest(vec![record(DEB, "aa")]);
        write(&path, &m).unwrap();
        assert_eq!(read(&path).unwrap(), m);
        std::fs::write(&path, "{}").unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("is not a fetch manifest"), "{err}");
    }
}
