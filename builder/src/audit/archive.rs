//! Walks an image export (`docker save` format, legacy or OCI layout) as
//! it streams: each layer is recognised by its first bytes (tar, plain
//! or compressed with gzip, zstd, xz or bzip2) and every file in it is
//! searched by `unpack`, including files a later layer deletes (they are
//! still in the pushed image) and what compressed files and archives
//! inside hold. Nothing is written to disk but a spooled zip, and no
//! layer is held in memory.

use super::scan::scan_reader;
use super::unpack::{At, Bounds, Incomplete, Kind, RawFinding, Walker};
use super::Location;
use pulp_auth_config::forms::Matcher;
use std::collections::HashMap;
use std::io::{self, Cursor, Read};

/// Export entries smaller than this that are not layers are kept to map
/// layer entries to their digests at the end.
const SMALL_JSON: u64 = 4 << 20;

/// Everything found in one export.
#[derive(Debug, Default)]
pub struct ArchiveScan {
    /// Every match, with layers still named by their export entry.
    pub findings: Vec<RawFinding>,
    /// Remarks on files that could not be read as what they looked like.
    pub notes: Vec<String>,
    /// What a bound kept from being searched.
    pub incomplete: Vec<Incomplete>,
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
                let layer = self.layer_name(matcher, &f.entry);
                let loc = match &f.path {
                    Some(path) => Location::Layer {
                        layer,
                        path: matcher.redact(path),
                        offset: f.offset,
                        decompressed: !f.decoded.is_empty(),
                        decoded: f.decoded.clone(),
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

    /// What was not searched through, with layers named by digest.
    pub fn incomplete(&self, matcher: &Matcher) -> Vec<Incomplete> {
        self.incomplete
            .iter()
            .map(|i| Incomplete {
                entry: self.layer_name(matcher, &i.entry),
                ..i.clone()
            })
            .collect()
    }

    fn layer_name(&self, matcher: &Matcher, entry: &str) -> String {
        self.digests
            .get(entry)
            .cloned()
            .unwrap_or_else(|| matcher.redact(entry))
    }
}

/// Searches an image export (the `docker save` tar) read from `reader`:
/// every entry, every file of each layer in it (and inside those files),
/// and the file names themselves.
pub fn scan_export(
    matcher: &Matcher,
    reader: impl Read,
    bounds: Bounds,
) -> io::Result<ArchiveScan> {
    let mut out = ArchiveScan::default();
    let mut jsons: HashMap<String, Vec<u8>> = HashMap::new();
    let mut walker = Walker::new(matcher, None, bounds);
    let mut outer = tar::Archive::new(walker.watch(reader));
    for entry in outer.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let size = entry.size();
        out.bytes += size;
        let (head, n) = peek(&mut entry)?;
        let mut body = Cursor::new(head[..n].to_vec()).chain(entry);
        match Kind::sniff(&head[..n]) {
            Kind::Tar | Kind::Gzip | Kind::Zstd | Kind::Xz | Kind::Bzip2 => {
                walker.search(&mut body, &At::layer(&name))?
            }
            _ if size <= SMALL_JSON => {
                let mut data = Vec::with_capacity(size as usize);
                body.read_to_end(&mut data)?;
                for h in scan_reader(matcher, data.as_slice())?.hits {
                    out.findings.push(RawFinding {
                        form: h.form,
                        entry: name.clone(),
                        path: None,
                        offset: Some(h.offset),
                        decoded: Vec::new(),
                    });
                }
                jsons.insert(name, data);
            }
            _ => walker.search(&mut body, &At::entry(&name))?,
        }
    }
    out.findings.append(&mut walker.findings);
    out.notes = walker.notes;
    out.incomplete = walker.incomplete;
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
        let scan = scan_export(&m, export.as_slice(), super::super::unpack::BOUNDS).unwrap();
        let locs = scan.locations(&m);
        assert!(
            locs.iter().any(|(f, l)| *f == "password"
                && *l
                    == Location::Layer {
                        layer: "sha256:aaa".into(),
                        path: "etc/a.conf".into(),
                        offset: Some(2),
                        decompressed: false,
                        decoded: vec![],
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
