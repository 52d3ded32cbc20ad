//! Walks an image export (`docker save` format, legacy or OCI layout) as
//! it streams: each layer is read as a tar (plain or gzip-compressed) and
//! every file in it is searched, including files a later layer deletes
//! (they are still in the pushed image) and, up to a bound, the content of
//! gzip files inside layers. Nothing is written to disk and no layer is
//! held in memory.

use super::scan::{scan_reader, Hit};
use super::Location;
use flate2::read::MultiGzDecoder;
use pulp_auth_config::forms::Matcher;
use std::collections::HashMap;
use std::io::{self, Cursor, Read};

/// Gzip files inside layers larger than this (compressed) are searched as
/// they are, not decompressed.
pub const GZ_MAX_COMPRESSED: u64 = 64 << 20;
/// Decompression stops after this many bytes.
pub const GZ_MAX_DECOMPRESSED: u64 = 256 << 20;
/// Export entries smaller than this that are JSON are kept to map layer
/// entries to their digests at the end.
const SMALL_JSON: u64 = 4 << 20;

/// A finding inside the export, before layer names become digests.
#[derive(Debug)]
pub struct RawFinding {
    /// Which form matched, e.g. `base64(user:password)`.
    pub form: &'static str,
    /// Export entry (the layer's name in the archive).
    pub entry: String,
    /// File inside the layer, if the entry is a layer.
    pub path: Option<String>,
    /// Offset (in the decompressed content when `decompressed`).
    pub offset: Option<u64>,
    /// Whether found in the decompressed content of a gzip file.
    pub decompressed: bool,
}

/// Everything found in one export.
#[derive(Debug, Default)]
pub struct ArchiveScan {
    /// Every match, with layers still named by their export entry.
    pub findings: Vec<RawFinding>,
    /// Things not fully searched, and why.
    pub notes: Vec<String>,
    /// Layer entry name -> digest, from manifest.json and the config.
    pub digests: HashMap<String, String>,
    /// Bytes read from the export.
    pub bytes: u64,
}

impl ArchiveScan {
    /// The findings with layer entries named by digest.
    pub fn locations(&self, matcher: &Matcher) -> Vec<(&'static str, Location)> {
        self.findings
            .iter()
            .map(|f| {
                let layer = self
                    .digests
                    .get(&f.entry)
                    .cloned()
                    .unwrap_or_else(|| matcher.redact(&f.entry));
                let loc = match &f.path {
                    Some(path) => Location::Layer {
                        layer,
                        path: matcher.redact(path),
                        offset: f.offset,
                        decompressed: f.decompressed,
                    },
                    None => Location::Export {
                        entry: matcher.redact(&f.entry),
                        offset: f.offset.unwrap_or(0),
                    },
                };
                (f.form, loc)
            })
            .collect()
    }
}

/// Searches an image export (the `docker save` tar) read from `reader`:
/// every entry, every file of each layer in it (gzipped ones also
/// decompressed), and the file names themselves.
pub fn scan_export(matcher: &Matcher, reader: impl Read) -> io::Result<ArchiveScan> {
    let mut out = ArchiveScan::default();
    let mut jsons: HashMap<String, Vec<u8>> = HashMap::new();
    let mut outer = tar::Archive::new(reader);
    for entry in outer.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let size = entry.size();
        out.bytes += size;
        let (head, n) = peek(&mut entry)?;
        let body = Cursor::new(head[..n].to_vec()).chain(entry);
        if head[..n].starts_with(&[0x1f, 0x8b]) {
            scan_layer(matcher, &name, MultiGzDecoder::new(body), &mut out)?;
        } else if is_tar(&head[..n]) {
            scan_layer(matcher, &name, body, &mut out)?;
        } else if size <= SMALL_JSON && (name.ends_with(".json") || name.starts_with("blobs/")) {
            let mut data = Vec::with_capacity(size as usize);
            let mut body = body;
            body.read_to_end(&mut data)?;
            record(
                &mut out.findings,
                &name,
                None,
                false,
                scan_reader(matcher, data.as_slice())?.hits,
            );
            jsons.insert(name, data);
        } else {
            let scan = scan_reader(matcher, body)?;
            record(&mut out.findings, &name, None, false, scan.hits);
        }
    }
    out.digests = digests(&jsons);
    Ok(out)
}

fn peek(r: &mut impl Read) -> io::Result<([u8; 512], usize)> {
    let mut head = [0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match r.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((head, n))
}

fn is_tar(head: &[u8]) -> bool {
    head.len() >= 262 && &head[257..262] == b"ustar"
}

fn record(
    into: &mut Vec<RawFinding>,
    entry: &str,
    path: Option<&str>,
    decompressed: bool,
    hits: Vec<Hit>,
) {
    for h in hits {
        into.push(RawFinding {
            form: h.form,
            entry: entry.to_string(),
            path: path.map(str::to_string),
            offset: Some(h.offset),
            decompressed,
        });
    }
}

fn scan_layer(
    matcher: &Matcher,
    layer: &str,
    reader: impl Read,
    out: &mut ArchiveScan,
) -> io::Result<()> {
    let mut inner = tar::Archive::new(reader);
    for entry in inner.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        // Names and link targets are content too.
        let link = entry.link_name()?.map(|l| l.to_string_lossy().into_owned());
        for text in std::iter::once(&path).chain(link.as_ref()) {
            for (form, _, _) in matcher.find_all(text.as_bytes()) {
                out.findings.push(RawFinding {
                    form,
                    entry: layer.to_string(),
                    path: Some(path.clone()),
                    offset: None,
                    decompressed: false,
                });
            }
        }
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let size = entry.size();
        let (head, n) = peek(&mut entry)?;
        let gz = head[..n].starts_with(&[0x1f, 0x8b]);
        if gz && size <= GZ_MAX_COMPRESSED {
            let mut data = Vec::with_capacity(size as usize);
            Cursor::new(head[..n].to_vec())
                .chain(entry)
                .read_to_end(&mut data)?;
            record(
                &mut out.findings,
                layer,
                Some(&path),
                false,
                scan_reader(matcher, data.as_slice())?.hits,
            );
            let mut decoder = MultiGzDecoder::new(data.as_slice()).take(GZ_MAX_DECOMPRESSED);
            match scan_reader(matcher, &mut decoder) {
                Ok(scan) => record(&mut out.findings, layer, Some(&path), true, scan.hits),
                Err(e) => out.notes.push(format!(
                    "{}: not a readable gzip file ({e}); searched as stored",
                    matcher.redact(&path)
                )),
            }
            if decoder.limit() == 0 {
                out.notes.push(format!(
                    "{}: decompressed only the first {} MiB",
                    matcher.redact(&path),
                    GZ_MAX_DECOMPRESSED >> 20
                ));
            }
        } else {
            if gz {
                out.notes.push(format!(
                    "{}: gzip file larger than {} MiB searched as stored, not decompressed",
                    matcher.redact(&path),
                    GZ_MAX_COMPRESSED >> 20
                ));
            }
            let scan = scan_reader(matcher, Cursor::new(head[..n].to_vec()).chain(entry))?;
            record(&mut out.findings, layer, Some(&path), false, scan.hits);
        }
    }
    Ok(())
}

/// Maps layer entries to digests: OCI blobs are named by digest; legacy
/// `<id>/layer.tar` entries get the config's `rootfs.diff_ids` in the
/// manifest's order.
fn digests(jsons: &HashMap<String, Vec<u8>>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let Some(manifest) = jsons
        .get("manifest.json")
        .and_then(|m| serde_json::from_slice::<serde_json::Value>(m).ok())
    else {
        return out;
    };
    for image in manifest.as_array().into_iter().flatten() {
        let layers: Vec<&str> = image["Layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str())
            .collect();
        let config = image["Config"]
            .as_str()
            .and_then(|c| jsons.get(c))
            .and_then(|c| serde_json::from_slice::<serde_json::Value>(c).ok());
        let diff_ids: Vec<&str> = config
            .as_ref()
            .map(|c| {
                c["rootfs"]["diff_ids"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d.as_str())
                    .collect()
            })
            .unwrap_or_default();
        for (i, layer) in layers.iter().enumerate() {
            let digest = match layer.strip_prefix("blobs/sha256/") {
                Some(hex) => format!("sha256:{hex}"),
                None => match diff_ids.get(i) {
                    Some(d) => d.to_string(),
                    None => continue,
                },
            };
            out.insert(layer.to_string(), digest);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const PW: &str = "fake pass:@/%+ word";

    fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn legacy_export_with_plain_and_gzip_layers() {
        let m = Matcher::new("ci-user", PW);
        let l1 = layer(&[
            ("etc/a.conf", format!("x={PW}").as_bytes()),
            ("etc/clean", b"nothing"),
        ]);
        let inner_gz = gz(format!("password {PW}").as_bytes());
        let l2 = gz(&layer(&[
            ("var/log/x.gz", &inner_gz),
            ("etc/.wh.a.conf", b""),
        ]));
        let config = br#"{"rootfs":{"diff_ids":["sha256:aaa","sha256:bbb"]}}"#;
        let manifest = br#"[{"Config":"cfg.json","Layers":["l1/layer.tar","l2/layer.tar"]}]"#;
        let export = layer(&[
            ("l1/layer.tar", &l1),
            ("l2/layer.tar", &l2),
            ("cfg.json", config),
            ("manifest.json", manifest),
        ]);
        let scan = scan_export(&m, export.as_slice()).unwrap();
        let locs = scan.locations(&m);
        assert!(
            locs.iter().any(|(f, l)| *f == "password"
                && *l
                    == Location::Layer {
                        layer: "sha256:aaa".into(),
                        path: "etc/a.conf".into(),
                        offset: Some(2),
                        decompressed: false
                    }),
            "{locs:?}"
        );
        assert!(
            locs.iter().any(
                |(_, l)| matches!(l, Location::Layer { layer, path, decompressed: true, .. }
            if layer == "sha256:bbb" && path == "var/log/x.gz")
            ),
            "{locs:?}"
        );
        assert_eq!(locs.len(), 2, "{locs:?}");
    }
}
