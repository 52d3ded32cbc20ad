//! `ci-builder audit`: proves, image by image, that the Pulp credentials
//! are in none of an image's config, history or layers, in any form
//! (see `patterns`, the matcher the proxy's response scan shares). It
//! reads through the Docker Engine API (bollard, honouring DOCKER_HOST) and
//! streams the export; it never prints the secret, only the form and where
//! it was found.

pub mod archive;
pub mod config;
pub mod registry;
pub mod repos;
pub mod sarif;
pub mod scan;
pub mod source;
pub mod unpack;

/// The credentials' forms and their matcher, shared with the proxy.
pub use pulp_auth_config::forms as patterns;

use crate::error::BuilderError;
use bollard::Docker;
use futures_util::StreamExt;
use patterns::Matcher;
use std::sync::Arc;

/// Where a form was found.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Location {
    /// A field of the image config (what `docker inspect` shows).
    Config {
        /// JSON path in the image config, e.g. `config.Env[1]`.
        field: String,
    },
    /// A build history entry (`created_by`, where ARG values and RUN lines
    /// land, or `comment`).
    History {
        /// Index as `docker history` lists it (0 is the newest).
        index: usize,
        /// The entry's field, e.g. `created_by`.
        field: String,
    },
    /// A file in a layer.
    Layer {
        /// Layer digest: the diff ID in a legacy export, the blob's digest
        /// in an OCI layout.
        layer: String,
        /// Path inside the layer.
        path: String,
        /// Byte offset; absent when the path name itself holds the form.
        offset: Option<u64>,
        /// Found in the decompressed content of a file.
        decompressed: bool,
        /// The decoders on the way, outermost first (`zip`, `gzip`, ...).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        decoded: Vec<&'static str>,
    },
    /// Another file of the export (the image config JSON, the manifest).
    Export {
        /// Its name in the export.
        entry: String,
        /// Byte offset in that file.
        offset: u64,
    },
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Config { field } => write!(f, "config {field}"),
            Location::History { index, field } => write!(f, "history #{index} {field}"),
            Location::Layer {
                layer,
                path,
                offset,
                decoded,
                ..
            } => {
                write!(f, "layer {layer} /{}", path.trim_start_matches('/'))?;
                if !decoded.is_empty() {
                    write!(f, " ({})", decoded.join(" > "))?;
                }
                match offset {
                    Some(o) => write!(f, " @{o}"),
                    None => write!(f, " (file name)"),
                }
            }
            Location::Export { entry, offset } => write!(f, "export file {entry} @{offset}"),
        }
    }
}

/// One form found in one place.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    /// `credential` (the Pulp password in any form) or
    /// `storage-signature` (a presigned object-storage URL's signature or
    /// access key, see `pulp_auth_config::signatures`); both fail the
    /// audit.
    pub class: &'static str,
    /// The form (never the bytes).
    pub form: &'static str,
    /// The config field, history entry or layer file that holds it.
    pub location: Location,
    /// How many copies of the export hold it there (a legacy export keeps
    /// a copy of the config per layer).
    pub copies: usize,
}

impl Finding {
    /// `form` found at `location`, with its class.
    pub fn new(form: &'static str, location: Location) -> Self {
        let class = if pulp_auth_config::signatures::is_signature(form) {
            pulp_auth_config::signatures::CLASS
        } else {
            "credential"
        };
        Self {
            class,
            form,
            location,
            copies: 1,
        }
    }
}

/// What the image should not hold and is no secret: a repository file
/// that still names the proxy.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Warning {
    /// `proxy-url`.
    pub class: &'static str,
    /// The layer (digest) that wrote the file.
    pub layer: String,
    /// The file's path in the image.
    pub path: String,
    /// Byte offset of the proxy's URL in the file.
    pub offset: u64,
}

/// The audit of one image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageReport {
    /// The name as given.
    pub image: String,
    /// The ID (`sha256:...`) the name resolved to.
    pub id: String,
    /// `leaks` (a form was found), `incomplete` (none was, but a bound
    /// kept something from being searched: see `incomplete`) or `clean`.
    pub verdict: &'static str,
    /// Every place a form was found; empty when clean.
    pub findings: Vec<Finding>,
    /// What a bound kept from being searched through, and what was
    /// searched instead.
    pub incomplete: Vec<unpack::Incomplete>,
    /// Repository files that still name the proxy; they do not change
    /// the verdict.
    pub warnings: Vec<Warning>,
    /// Remarks: files that looked compressed and were not, forms too
    /// short to search for.
    pub notes: Vec<String>,
    /// Bytes of export searched.
    pub export_bytes: u64,
}

/// Connects to the Docker daemon (DOCKER_HOST or the local socket) and
/// agrees on an API version it speaks.
pub async fn docker() -> Result<Docker, BuilderError> {
    let d = Docker::connect_with_defaults().map_err(BuilderError::Docker)?;
    d.negotiate_version().await.map_err(BuilderError::Docker)
}

/// Every local image tagged `tag` (any repository).
pub async fn images_with_tag(docker: &Docker, tag: &str) -> Result<Vec<String>, BuilderError> {
    let images = docker
        .list_images(None::<bollard::query_parameters::ListImagesOptions>)
        .await
        .map_err(BuilderError::Docker)?;
    let suffix = format!(":{tag}");
    let mut out: Vec<String> = images
        .into_iter()
        .flat_map(|i| named(i.repo_tags))
        .filter(|t| t.ends_with(&suffix))
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// An image's tags without the `<none>:<none>` that Docker lists for an
/// untagged image, which is no reference the daemon takes back.
fn named(repo_tags: Vec<String>) -> impl Iterator<Item = String> {
    repo_tags.into_iter().filter(|t| t != "<none>:<none>")
}

/// Every local image created at or after `since`, by its first tag (or ID
/// when untagged).
pub async fn images_created_since(
    docker: &Docker,
    since: std::time::SystemTime,
) -> Result<Vec<String>, BuilderError> {
    let since = since
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let images = docker
        .list_images(None::<bollard::query_parameters::ListImagesOptions>)
        .await
        .map_err(BuilderError::Docker)?;
    let mut out: Vec<String> = images
        .into_iter()
        .filter(|i| i.created >= since)
        .map(|i| named(i.repo_tags).next().unwrap_or(i.id))
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// Each image's size in bytes.
pub async fn image_sizes(
    docker: &Docker,
    images: &[String],
) -> Result<Vec<(String, i64)>, BuilderError> {
    let mut out = Vec::new();
    for image in images {
        let i = docker
            .inspect_image(image)
            .await
            .map_err(BuilderError::Docker)?;
        out.push((image.clone(), i.size.unwrap_or(0)));
    }
    Ok(out)
}

/// Reads every IMAGE argument before anything is read, so a mistake in the
/// last one is reported before the first is audited.
pub fn sources(images: &[String]) -> Result<Vec<(String, source::Source)>, BuilderError> {
    images
        .iter()
        .map(|i| Ok((i.clone(), source::Source::parse(i)?)))
        .collect()
}

/// Images the daemon listed, to audit from it.
pub fn local(images: Vec<String>) -> Vec<(String, source::Source)> {
    images
        .into_iter()
        .map(|i| (i.clone(), source::Source::Daemon(i)))
        .collect()
}

/// Audits each image in turn; `docker` is needed for local images.
pub async fn audit_images(
    docker: Option<&Docker>,
    images: Vec<(String, source::Source)>,
    matcher: &Arc<Matcher>,
    opts: &archive::Options,
    access: &registry::Access,
) -> Result<Vec<ImageReport>, BuilderError> {
    use source::Source;
    let mut reports = Vec::with_capacity(images.len());
    for (image, source) in images {
        // One report per image; a registry index holds several.
        let found = match (source, docker) {
            (Source::Registry(reference), _) => {
                registry::audit(&image, &reference, access, matcher, opts).await?
            }
            (Source::Daemon(name), Some(docker)) => {
                vec![audit_image(docker, &name, matcher.clone(), opts).await?]
            }
            (Source::Daemon(_), None) => {
                return Err(BuilderError::Usage(format!(
                    "audit {image}: a local image needs the Docker daemon"
                )))
            }
            (Source::OciDir(dir), _) => {
                let opts = opts.clone();
                vec![audit_file(&image, matcher, move |m| archive::scan_dir(m, &dir, &opts)).await?]
            }
            (Source::DockerArchive(path) | Source::OciArchive(path), _) => {
                let opts = opts.clone();
                vec![
                    audit_file(&image, matcher, move |m| {
                        archive::scan_archive(m, &path, &opts)
                    })
                    .await?,
                ]
            }
        };
        reports.extend(found.into_iter().map(|r| noted(r, opts)));
    }
    Ok(reports)
}

/// `report` with the remarks on how it was searched.
fn noted(mut report: ImageReport, opts: &archive::Options) -> ImageReport {
    if opts.proxy.is_none() {
        report.notes.push(
            "the configuration has no [proxy]: repository files were not checked for the proxy's URL"
                .into(),
        );
    }
    report
}

/// Audits an archive or layout directory with `scan`, off the runtime.
async fn audit_file(
    image: &str,
    matcher: &Arc<Matcher>,
    scan: impl FnOnce(&Matcher) -> std::io::Result<archive::ArchiveScan> + Send + 'static,
) -> Result<ImageReport, BuilderError> {
    let m = matcher.clone();
    let scan = joined(
        image,
        tokio::task::spawn_blocking(move || scan(&m)),
        |image, source| BuilderError::Read { image, source },
    )
    .await?;
    let id = scan.id.clone().unwrap_or_default();
    Ok(report(image, id, &scan, matcher))
}

/// The scan a blocking task made, its I/O error made one of ours by `failed`.
async fn joined(
    image: &str,
    task: tokio::task::JoinHandle<std::io::Result<archive::ArchiveScan>>,
    failed: fn(String, std::io::Error) -> BuilderError,
) -> Result<archive::ArchiveScan, BuilderError> {
    task.await
        .map_err(|source| BuilderError::ScanStopped {
            image: image.to_string(),
            source,
        })?
        .map_err(|source| failed(image.to_string(), source))
}

/// Audits one local image: every file of its export, the image config
/// among them (the inspection only names its ID).
pub async fn audit_image(
    docker: &Docker,
    image: &str,
    matcher: Arc<Matcher>,
    opts: &archive::Options,
) -> Result<ImageReport, BuilderError> {
    let inspect = docker.inspect_image(image).await.map_err(|e| match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        } => BuilderError::NoSuchImage {
            image: image.to_string(),
        },
        other => BuilderError::Docker(other),
    })?;
    let id = inspect.id.clone().unwrap_or_default();
    // The config and history are searched in the export's image config,
    // which is what `inspect` and `history` show and what is pushed.
    // The export streams through a bounded channel into a blocking reader,
    // so at most a few chunks are in memory at a time.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(8);
    let m = matcher.clone();
    let opts = opts.clone();
    let scanner = tokio::task::spawn_blocking(move || {
        archive::scan_export(&m, archive::ChannelReader::new(rx), &opts)
    });
    let export = docker
        .export_image(image)
        .map(|chunk| chunk.map_err(|e| std::io::Error::other(e.to_string())));
    archive::forward(export, &tx).await;
    drop(tx);
    let scan = joined(image, scanner, |image, source| BuilderError::Export {
        image,
        source,
    })
    .await?;
    Ok(report(image, id, &scan, &matcher))
}

/// The report of one image from the search of its export; a finding the
/// export holds in several copies (the config and a legacy export's
/// per-layer copies of it) is one finding.
fn report(image: &str, id: String, scan: &archive::ArchiveScan, matcher: &Matcher) -> ImageReport {
    let mut findings: Vec<Finding> = Vec::new();
    let mut seen: std::collections::HashMap<_, usize> = std::collections::HashMap::new();
    for (form, location) in scan.locations(matcher) {
        match seen.entry((form, location.clone())) {
            std::collections::hash_map::Entry::Occupied(i) => findings[*i.get()].copies += 1,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(findings.len());
                findings.push(Finding::new(form, location));
            }
        }
    }
    let incomplete = scan.incomplete(matcher);
    let mut notes = scan.notes.clone();
    if !matcher.skipped.is_empty() {
        notes.push(format!(
            "the password is too short to search for these forms without noise: {}",
            matcher.skipped.join(", ")
        ));
    }
    ImageReport {
        image: image.to_string(),
        id,
        verdict: if !findings.is_empty() {
            "leaks"
        } else if !incomplete.is_empty() {
            "incomplete"
        } else {
            "clean"
        },
        findings,
        incomplete,
        warnings: scan.warnings(matcher),
        notes,
        export_bytes: scan.bytes,
    }
}

/// The exit code of an audit: 1 when an image holds a form, else 5 when
/// something was not searched through (0 with `allow_incomplete`), else 0.
pub fn exit_code(reports: &[ImageReport], allow_incomplete: bool) -> u8 {
    use crate::error::exit;
    if reports.iter().any(|r| r.verdict == "leaks") {
        exit::FOUND
    } else if !allow_incomplete && reports.iter().any(|r| r.verdict == "incomplete") {
        exit::INCOMPLETE
    } else {
        exit::OK
    }
}

/// Findings shown per image in the table.
const TABLE_ROWS: usize = 40;

/// The report `audit` prints without `--json`, at most [`TABLE_ROWS`]
/// findings per image.
pub fn table(reports: &[ImageReport]) -> String {
    let mut out = String::new();
    for r in reports {
        let short = match r.id.trim_start_matches("sha256:").get(..12) {
            Some(hex) => format!(" ({hex})"),
            None => String::new(),
        };
        if r.verdict == "clean" {
            out.push_str(&format!(
                "{}{short}: clean, {} MiB searched\n",
                r.image,
                r.export_bytes >> 20
            ));
        } else if !r.findings.is_empty() {
            let signatures = r
                .findings
                .iter()
                .filter(|f| f.class == pulp_auth_config::signatures::CLASS)
                .count();
            let credentials = r.findings.len() - signatures;
            out.push_str(&format!(
                "{}{short}: LEAKS: {credentials} credential and {signatures} \
                 storage-signature findings\n",
                r.image,
            ));
            for f in r.findings.iter().take(TABLE_ROWS) {
                let copies = match f.copies {
                    1 => String::new(),
                    n => format!(" ({n} copies)"),
                };
                out.push_str(&format!(
                    "  {:<17} {:<32} {}{copies}\n",
                    f.class, f.form, f.location
                ));
            }
            if r.findings.len() > TABLE_ROWS {
                out.push_str(&format!(
                    "  ... and {} more (--json lists them all)\n",
                    r.findings.len() - TABLE_ROWS
                ));
            }
        }
        if r.findings.is_empty() && !r.incomplete.is_empty() {
            out.push_str(&format!(
                "{}{short}: INCOMPLETE: no credentials found, but {} files were not searched through\n",
                r.image,
                r.incomplete.len()
            ));
        }
        for i in r.incomplete.iter().take(TABLE_ROWS) {
            out.push_str(&format!(
                "  not searched: layer {} /{}: {}\n",
                i.entry, i.path, i.reason
            ));
        }
        for w in &r.warnings {
            out.push_str(&format!(
                "  warning: /{} (layer {}) still names the proxy; what is built FROM this image would fetch through it\n",
                w.path.trim_start_matches('/'),
                w.layer
            ));
        }
        for n in &r.notes {
            out.push_str(&format!("  note: {n}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_untagged_image_is_named_by_its_id_not_by_none() {
        let tags =
            |t: &[&str]| named(t.iter().map(|s| s.to_string()).collect()).collect::<Vec<_>>();
        assert!(tags(&["<none>:<none>"]).is_empty());
        assert_eq!(tags(&["<none>:<none>", "kolla/base:1"]), ["kolla/base:1"]);
        assert_eq!(tags(&["kolla/base:1"]), ["kolla/base:1"]);
    }

    #[test]
    fn copies_of_one_finding_are_one_row_that_counts_them() {
        let m = Matcher::new("ci-user", "fake pass:@/%+ word");
        let env = Location::Config {
            field: "config.Env[0]".into(),
        };
        let scan = archive::ArchiveScan {
            fields: vec![
                ("password", env.clone()),
                ("password", env.clone()),
                ("user:password", env.clone()),
            ],
            ..Default::default()
        };
        let r = report("img", String::new(), &scan, &m);
        let rows: Vec<_> = r.findings.iter().map(|f| (f.form, f.copies)).collect();
        assert_eq!(rows, [("password", 2), ("user:password", 1)]);
        assert!(table(&[r]).contains("config config.Env[0] (2 copies)"));
    }

    #[test]
    fn the_shared_matcher_finds_passwords_as_serde_json_writes_them() {
        // Passwords JSON escapes (otherwise the form is the plain one).
        for pw in ["fake \"pass\":@/%+", "fake\"quote\\back\nline\u{1}ctl é"] {
            let m = Matcher::new("ci-user", pw);
            let json = serde_json::to_string(pw).unwrap();
            let forms: Vec<_> = m.find_all(json.as_bytes()).map(|(f, _, _)| f).collect();
            assert!(forms.contains(&"JSON-escaped password"), "{forms:?}");
        }
    }
}
