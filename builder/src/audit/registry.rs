//! `docker://REGISTRY/REPO:TAG|@DIGEST`: the image as it was pushed, read
//! over the distribution API (oci-client) with verified TLS (the system's
//! trust anchors, plus `--ca-file`), the credentials of the Docker config
//! file and its credential helpers (or `--authfile`). Every platform of a
//! multi-platform index is audited, each as an image of its own. A
//! manifest fetched by digest is checked against it, and every blob
//! against its digest while it streams (the last bytes decide, so a blob
//! is always read to its end). Nothing is written to disk.

use super::archive::{self, ArchiveScan, Entry, Options};
use super::patterns::Matcher;
use crate::error::BuilderError;
use futures_util::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::Digest as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Manifest types asked for: images and indexes, OCI and Docker.
const ACCEPT: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// More trust anchors (PEM), for a private registry's CA.
    pub ca_file: Option<PathBuf>,
    /// A Docker config file (`auths`, `credHelpers`, `credsStore`) to use
    /// instead of `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
    pub auth_file: Option<PathBuf>,
}

/// One image of a reference: the name it is reported under, the manifest
/// and the reference to fetch its blobs by.
struct Image {
    name: String,
    reference: Reference,
    manifest: bytes::Bytes,
    digest: String,
}

/// Audits `arg` (`docker://...` as given), `reference` without the
/// transport: one report per image, per platform for an index.
pub async fn audit(
    arg: &str,
    reference: &str,
    access: &Access,
    matcher: &Arc<Matcher>,
    opts: &Options,
) -> Result<Vec<super::ImageReport>, BuilderError> {
    let failed = |why: String| BuilderError::Registry {
        image: arg.to_string(),
        why,
    };
    let reference: Reference = reference.parse().map_err(|e| {
        BuilderError::Usage(format!(
            "audit {arg}: not an image reference ({e}); use docker://REGISTRY/REPO:TAG or docker://REGISTRY/REPO@sha256:HEX"
        ))
    })?;
    let client = client(access)?;
    let auth = credentials(&reference, access)?;
    let mut images = Vec::new();
    let (raw, digest) = pull_manifest(&client, &reference, &auth)
        .await
        .map_err(failed)?;
    let top: serde_json::Value = serde_json::from_slice(&raw)
        .map_err(|e| failed(format!("the manifest is not JSON: {e}")))?;
    let is_image = top.get("config").is_some() && top.get("layers").is_some();
    match top["manifests"]
        .as_array()
        .map(Vec::as_slice)
        .filter(|_| !is_image)
    {
        Some([]) => return Err(failed("the index lists no image".into())),
        Some(entries) => {
            for entry in entries {
                let digest = entry["digest"]
                    .as_str()
                    .ok_or_else(|| failed("an index entry has no digest".into()))?;
                let platform = &entry["platform"];
                let name = match platform["variant"].as_str() {
                    Some(v) => format!(
                        "{arg} [{}/{}/{v}]",
                        platform["os"], platform["architecture"]
                    ),
                    None => format!("{arg} [{}/{}]", platform["os"], platform["architecture"]),
                }
                .replace('"', "");
                let sub = reference.clone_with_digest(digest.to_string());
                let (manifest, digest) =
                    pull_manifest(&client, &sub, &auth).await.map_err(failed)?;
                images.push(Image {
                    name,
                    reference: sub,
                    manifest,
                    digest,
                });
            }
        }
        None => images.push(Image {
            name: arg.to_string(),
            reference: reference.clone(),
            manifest: raw,
            digest,
        }),
    }
    let mut reports = Vec::new();
    for image in images {
        let (id, scan) =
            scan(&client, &image, matcher, opts)
                .await
                .map_err(|why| BuilderError::Registry {
                    image: image.name.clone(),
                    why,
                })?;
        reports.push(super::report(&image.name, id, &scan, matcher));
    }
    Ok(reports)
}

/// The manifest `reference` names, checked against its digest when it
/// names one.
async fn pull_manifest(
    client: &Client,
    reference: &Reference,
    auth: &RegistryAuth,
) -> Result<(bytes::Bytes, String), String> {
    let (raw, _) = client
        .pull_manifest_raw(reference, auth, &ACCEPT)
        .await
        .map_err(|e| told(&pulp_auth_config::error_chain(&e)))?;
    let actual = format!("sha256:{:x}", sha2::Sha256::digest(&raw));
    match reference.digest() {
        Some(wanted) if wanted != actual => Err(format!(
            "the manifest for {wanted} has digest {actual}; the registry sent something else"
        )),
        _ => Ok((raw, actual)),
    }
}

/// Streams the manifest, the config and every layer of `image` into one
/// export search; the image ID is the config's digest.
async fn scan(
    client: &Client,
    image: &Image,
    matcher: &Arc<Matcher>,
    opts: &Options,
) -> Result<(String, ArchiveScan), String> {
    let manifest: OciImageManifest = serde_json::from_slice(&image.manifest)
        .map_err(|e| format!("{} is not an image manifest: {e}", image.digest))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Entry>(1);
    let (m, o) = (matcher.clone(), opts.clone());
    let search = tokio::task::spawn_blocking(move || archive::scan_entries(&m, &o, rx));
    // Each blob as an entry of its own; `false` once the search has
    // stopped (its error says why).
    let send = |name: String, size: u64, stream| {
        let tx = &tx;
        async move {
            let (chunks_tx, chunks) = tokio::sync::mpsc::channel(8);
            tx.send(Entry { name, size, chunks }).await.is_ok()
                && archive::forward(stream, &chunks_tx).await
        }
    };
    let sent = async {
        let size = image.manifest.len() as u64;
        let once = futures_util::stream::iter([Ok(image.manifest.clone())]).boxed();
        if !send(blob_name(&image.digest), size, once).await {
            return Ok(());
        }
        for desc in std::iter::once(&manifest.config).chain(&manifest.layers) {
            let blob = client
                .pull_blob_stream(&image.reference, desc)
                .await
                .map_err(|e| {
                    format!(
                        "blob {}: {}",
                        desc.digest,
                        pulp_auth_config::error_chain(&e)
                    )
                })?;
            // The digest is only known wrong at the end: a blob longer
            // than its descriptor says is cut off here, so no registry can
            // feed the search without end.
            let (mut sent, size) = (0u64, desc.size.max(0) as u64);
            let digest = desc.digest.clone();
            let bounded = blob
                .stream
                .map(move |chunk| {
                    chunk.and_then(|c| {
                        sent += c.len() as u64;
                        if sent > size {
                            Err(std::io::Error::other(format!(
                                "blob {digest} is longer than the {size} bytes its descriptor says"
                            )))
                        } else {
                            Ok(c)
                        }
                    })
                })
                .boxed();
            if !send(blob_name(&desc.digest), size, bounded).await {
                break;
            }
        }
        Ok::<(), String>(())
    };
    let sent = sent.await;
    drop(tx);
    let scan = search
        .await
        .map_err(|e| format!("the search stopped: {e}"))?
        .map_err(|e| told(&e.to_string()))?;
    sent?;
    Ok((manifest.config.digest.clone(), scan))
}

/// A registry's or the client's message as it may be shown: URLs without
/// their query (a blob redirect's is a presigned storage URL, a secret)
/// and control characters escaped (the registry chose the text).
fn told(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_query = false;
    let mut url = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() || matches!(c, ')' | '"' | '\'' | ',') {
            in_query = false;
            url = false;
        } else if text[i..].starts_with("://") {
            url = true;
        } else if url && c == '?' {
            in_query = true;
            out.push_str("?[query removed]");
        }
        if in_query {
            continue;
        }
        if c.is_control() {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

fn blob_name(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

/// The client: verified TLS with the system's anchors and `--ca-file`'s.
fn client(access: &Access) -> Result<Client, BuilderError> {
    // reqwest's rustls takes the process's provider; ring builds here.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut extra = Vec::new();
    if let Some(path) = &access.ca_file {
        extra.push(ca_file(path)?);
    }
    Client::try_from(ClientConfig {
        extra_root_certificates: extra,
        // A registry that stops answering ends the audit with an error.
        connect_timeout: Some(std::time::Duration::from_secs(30)),
        read_timeout: Some(std::time::Duration::from_secs(120)),
        // Every platform is audited; none is picked for this host.
        platform_resolver: None,
        ..ClientConfig::default()
    })
    .map_err(|e| BuilderError::Usage(format!("cannot set up the registry client: {e}")))
}

/// `--ca-file`: PEM holding at least one certificate.
fn ca_file(path: &Path) -> Result<Certificate, BuilderError> {
    use rustls::pki_types::pem::PemObject;
    let data = std::fs::read(path).map_err(|source| BuilderError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&data)
        .filter(Result::is_ok)
        .count();
    if certs == 0 {
        return Err(BuilderError::Usage(format!(
            "--ca-file {}: no PEM certificate in it; give the registry's CA as PEM (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(Certificate {
        encoding: CertificateEncoding::Pem,
        data,
    })
}

/// The registry's credentials from the Docker config (or `--authfile`),
/// anonymous when it has none. Never printed: errors name the registry and
/// the helper only.
fn credentials(reference: &Reference, access: &Access) -> Result<RegistryAuth, BuilderError> {
    use docker_credential::{CredentialRetrievalError as E, DockerCredential};
    let server = match reference.resolve_registry() {
        "index.docker.io" => "https://index.docker.io/v1/".to_string(),
        other => other.to_string(),
    };
    let found = match &access.auth_file {
        Some(path) => {
            let file = std::fs::File::open(path).map_err(|source| BuilderError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            })?;
            docker_credential::get_credential_from_reader(std::io::BufReader::new(file), &server)
        }
        None => docker_credential::get_credential(&server),
    };
    match found {
        Ok(DockerCredential::UsernamePassword(user, password)) => {
            Ok(RegistryAuth::Basic(user, password))
        }
        Ok(DockerCredential::IdentityToken(token)) => Ok(RegistryAuth::Bearer(token)),
        Err(E::NoCredentialConfigured | E::ConfigNotFound) => Ok(RegistryAuth::Anonymous),
        Err(E::ConfigReadError) if access.auth_file.is_none() => Ok(RegistryAuth::Anonymous),
        Err(E::HelperFailure { helper, .. }) => Err(BuilderError::Usage(format!(
            "the credential helper {helper} failed for {server}; run `echo {server} | {helper} get` to see why"
        ))),
        Err(e) => Err(BuilderError::Usage(format!(
            "the registry credentials for {server}: {e}; check the Docker config file"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::told;

    #[test]
    fn a_message_shows_no_query_and_no_control_character() {
        assert_eq!(
            told("error sending request for url (https://s3.example.test/b/x?X-Amz-Signature=ab&X-Amz-Credential=k) at https://r/v2/?a=b\x1b[31m"),
            "error sending request for url (https://s3.example.test/b/x?[query removed]) at https://r/v2/?[query removed]"
        );
        assert_eq!(told("bad\ndigest"), "bad\\u{a}digest");
        assert_eq!(told("no url? here"), "no url? here");
    }
}
