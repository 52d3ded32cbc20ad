//! Walks an image export (`docker save` format, legacy or OCI layout) as
//! it streams: each layer is recognised by its first bytes (tar, plain
//! or compressed with gzip, zstd, xz or bzip2) and every file in it is
//! searched by `unpack`, including files a later layer deletes (they are
//! still in the pushed image) and what compressed files and archives
//! inside hold. Nothing is written to disk but a spooled zip, and no
//! layer is held in memory.

use super::config::{self, Json};
use super::repos::{self, ProxyLeft};
use super::scan::scan_reader;
use super::unpack::{At, Bounds, Incomplete, Kind, RawFinding, Walker};
use super::{Location, Warning};
use pulp_auth_config::forms::Matcher;
use serde_json::Value;
use std::collections::HashMap;
use std::fs;
use std::io::{self, Cursor, Read};
use std::path::Path;

/// Export entries smaller than this that are not layers are kept to map
/// layer entries to their digests at the end.
const SMALL_JSON: u64 = 4 << 20;

/// How to search: the bounds, and the proxy's URL to look for in
/// repository files (none: not looked for).
#[derive(Debug, Clone)]
pub struct Options {
    /// Bounds on nesting and decompression.
    pub bounds: Bounds,
    /// The proxy's URL, as builds were pointed at it.
    pub proxy: Option<String>,
}

/// Everything found in one export.
#[derive(Debug, Default)]
pub struct ArchiveScan {
    /// Every match, with layers still named by their export entry.
    pub findings: Vec<RawFinding>,
    /// Forms in the image config and its legacy copies, by field.
    pub fields: Vec<(&'static str, Location)>,
    /// Repository files of the finished image that name the proxy.
    pub proxy_left: Vec<ProxyLeft>,
    /// Remarks on files that could not be read as what they looked like.
    pub notes: Vec<String>,
    /// What a bound kept from being searched.
    pub incomplete: Vec<Incomplete>,
    /// Layer entry name -> digest, from manifest.json and the config.
    pub digests: HashMap<String, String>,
    /// Bytes read from the export.
    pub bytes: u64,
    /// The image ID (its config's digest), when the export has a
    /// manifest.json that names exactly one image.
    pub id: Option<String>,
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
            .chain(self.fields.iter().cloned())
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

    /// Repository files that name the proxy, as the report's warnings,
    /// with layers named by digest.
    pub fn warnings(&self, matcher: &Matcher) -> Vec<Warning> {
        self.proxy_left
            .iter()
            .map(|l| Warning {
                class: "proxy-url",
                layer: self.layer_name(matcher, &l.layer),
                path: matcher.redact(&l.path),
                offset: l.offset,
            })
            .collect()
    }

    /// A layer's digest: its diff ID in a legacy export, its blob's digest
    /// in an OCI layout (blobs are named by it).
    fn layer_name(&self, matcher: &Matcher, entry: &str) -> String {
        let blob = || {
            let (alg, hex) = entry.strip_prefix("blobs/")?.split_once('/')?;
            Some(format!("{alg}:{hex}"))
        };
        self.digests
            .get(entry)
            .cloned()
            .or_else(blob)
            .unwrap_or_else(|| matcher.redact(entry))
    }
}

/// Searches an image export (the `docker save` tar) read from `reader`:
/// every entry, every file of each layer in it (and inside those files),
/// and the file names themselves.
pub fn scan_export(
    matcher: &Matcher,
    reader: impl Read,
    opts: &Options,
) -> io::Result<ArchiveScan> {
    let mut export = Export::new(matcher, opts);
    let mut outer = tar::Archive::new(export.walker.watch(reader));
    for entry in outer.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        if entry.header().entry_type().is_file() {
            let size = entry.size();
            export.entry(&name, size, &mut entry)?;
        }
    }
    Ok(export.finish())
}

/// Searches an archive file: a `docker save` tar (also gzip, zstd, xz or
/// bzip2 compressed, as operators keep them) or an OCI layout tar.
pub fn scan_archive(matcher: &Matcher, path: &Path, opts: &Options) -> io::Result<ArchiveScan> {
    let mut file = io::BufReader::new(fs::File::open(path)?);
    let (head, n) = peek(&mut file)?;
    let body = Cursor::new(head[..n].to_vec()).chain(file);
    match Kind::sniff(&head[..n]) {
        Kind::Gzip => scan_export(matcher, flate2::read::MultiGzDecoder::new(body), opts),
        Kind::Zstd => scan_export(matcher, zstd::stream::read::Decoder::new(body)?, opts),
        Kind::Xz => scan_export(
            matcher,
            liblzma::read::XzDecoder::new_multi_decoder(body),
            opts,
        ),
        Kind::Bzip2 => scan_export(matcher, bzip2::read::MultiBzDecoder::new(body), opts),
        _ => scan_export(matcher, body, opts),
    }
}

/// Searches an OCI layout directory: `index.json`, `oci-layout` and every
/// blob, as the same entries its tar would hold.
pub fn scan_dir(matcher: &Matcher, dir: &Path, opts: &Options) -> io::Result<ArchiveScan> {
    let mut export = Export::new(matcher, opts);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&d)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let kind = e.file_type()?;
            if kind.is_dir() {
                stack.push(e.path());
            } else if kind.is_file() {
                let path = e.path();
                let name = path
                    .strip_prefix(dir)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .into_owned();
                let file = fs::File::open(&path)?;
                let size = file.metadata()?.len();
                let mut r = export.walker.watch(file);
                export.entry(&name, size, &mut r)?;
            }
        }
    }
    Ok(export.finish())
}

/// A blocking `Read` over chunks sent from the async side.
pub struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>,
    current: bytes::Bytes,
}

impl ChannelReader {
    /// Reads what arrives on `rx` until it closes.
    pub fn new(rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>) -> Self {
        Self {
            rx,
            current: bytes::Bytes::new(),
        }
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        bytes::Buf::advance(&mut self.current, n);
        Ok(n)
    }
}

/// Sends what `stream` yields to a [`ChannelReader`]'s sender until the
/// stream ends or fails (the failure is the last item the reader gets) or
/// the reader is gone; `false` when the reader is gone.
pub async fn forward(
    stream: impl futures_util::Stream<Item = io::Result<bytes::Bytes>>,
    tx: &tokio::sync::mpsc::Sender<io::Result<bytes::Bytes>>,
) -> bool {
    use futures_util::StreamExt;
    let mut stream = std::pin::pin!(stream);
    while let Some(chunk) = stream.next().await {
        let failed = chunk.is_err();
        if tx.send(chunk).await.is_err() {
            return false;
        }
        if failed {
            break;
        }
    }
    true
}

/// One blob of a registry image on its way to [`scan_entries`].
pub struct Entry {
    /// Its name, `blobs/sha256/<hex>` as in an OCI layout.
    pub name: String,
    /// Its size, from its descriptor.
    pub size: u64,
    /// Its bytes as they arrive (verified against the digest by then).
    pub chunks: tokio::sync::mpsc::Receiver<io::Result<bytes::Bytes>>,
}

/// Searches entries as they are sent, as the entries of one export (a
/// registry image: its manifest, config and layers).
pub fn scan_entries(
    matcher: &Matcher,
    opts: &Options,
    mut entries: tokio::sync::mpsc::Receiver<Entry>,
) -> io::Result<ArchiveScan> {
    let mut export = Export::new(matcher, opts);
    while let Some(e) = entries.blocking_recv() {
        let mut r = export.walker.watch(ChannelReader::new(e.chunks));
        export.entry(&e.name, e.size, &mut r)?;
        // To its end, whatever the search needed: the digest is checked
        // on the last bytes.
        io::copy(&mut r, &mut io::sink())?;
    }
    Ok(export.finish())
}

/// The search of one export's entries, in any order.
struct Export<'m> {
    matcher: &'m Matcher,
    out: ArchiveScan,
    jsons: HashMap<String, Vec<u8>>,
    walker: Walker<'m>,
}

impl<'m> Export<'m> {
    fn new(matcher: &'m Matcher, opts: &Options) -> Self {
        Export {
            matcher,
            out: ArchiveScan::default(),
            jsons: HashMap::new(),
            walker: Walker::new(matcher, opts.proxy.clone(), opts.bounds),
        }
    }

    fn entry(&mut self, name: &str, size: u64, r: &mut dyn Read) -> io::Result<()> {
        self.out.bytes = self.out.bytes.saturating_add(size);
        let (head, n) = peek(r)?;
        let mut body = Cursor::new(head[..n].to_vec()).chain(r);
        match Kind::sniff(&head[..n]) {
            Kind::Tar | Kind::Gzip | Kind::Zstd | Kind::Xz | Kind::Bzip2 => {
                self.walker.search(&mut body, &At::layer(name))
            }
            _ if size <= SMALL_JSON => {
                // At most what the size said, whatever the source sends.
                let mut data = Vec::with_capacity(size as usize);
                body.take(SMALL_JSON).read_to_end(&mut data)?;
                for h in scan_reader(self.matcher, data.as_slice())?.hits {
                    self.out.findings.push(RawFinding {
                        form: h.form,
                        entry: name.to_string(),
                        path: None,
                        offset: Some(h.offset),
                        decoded: Vec::new(),
                    });
                }
                self.jsons.insert(name.to_string(), data);
                Ok(())
            }
            _ => self.walker.search(&mut body, &At::entry(name)),
        }
    }

    fn finish(mut self) -> ArchiveScan {
        self.out.findings.append(&mut self.walker.findings);
        self.out.notes = self.walker.notes;
        self.out.incomplete = self.walker.incomplete;
        // Every JSON of the export, parsed once, in name order.
        let mut parsed: Vec<(String, Value)> = self
            .jsons
            .iter()
            .filter_map(|(name, data)| Some((name.clone(), serde_json::from_slice(data).ok()?)))
            .collect();
        parsed.sort_by(|a, b| a.0.cmp(&b.0));
        let named = |wanted: &str| {
            parsed
                .iter()
                .find(|(name, _)| name == wanted)
                .map(|(_, v)| v)
        };
        let manifest = named("manifest.json");
        self.out.proxy_left =
            repos::proxy_left(&self.walker.repos, &layer_orders(manifest, &parsed));
        self.out.digests = manifest.map_or_else(HashMap::new, |m| digests(m, named));
        self.out.id = manifest.and_then(image_id);
        for (name, value) in &parsed {
            let (Json::Image(map) | Json::LegacyLayer(map)) = Json::of(value) else {
                continue;
            };
            let fields = config::findings(self.matcher, map);
            let raw = |f: &RawFinding| f.path.is_none() && f.entry == *name;
            // A form the bytes hold that no field does (a duplicate key
            // JSON readers drop) stays reported by its offset.
            if !fields.is_empty() || !self.out.findings.iter().any(raw) {
                self.out.findings.retain(|f| !raw(f));
                self.out.fields.extend(fields);
            }
        }
        self.out
    }
}

fn peek(r: &mut (impl Read + ?Sized)) -> io::Result<([u8; 512], usize)> {
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

/// Legacy exports name the config `<hex>.json`, OCI ones `blobs/sha256/<hex>`;
/// either way the hex is the image ID.
fn image_id(manifest: &Value) -> Option<String> {
    match manifest.as_array()?.as_slice() {
        [image] => {
            let config = image["Config"].as_str()?;
            let hex = config.strip_prefix("blobs/sha256/").unwrap_or(config);
            let hex = hex.strip_suffix(".json").unwrap_or(hex);
            Some(format!("sha256:{hex}"))
        }
        _ => None,
    }
}

/// Each image's layer entries, lowest first: from manifest.json (`docker
/// save`), else from every OCI image manifest among `jsons` (an OCI
/// layout).
fn layer_orders(manifest: Option<&Value>, jsons: &[(String, Value)]) -> Vec<Vec<String>> {
    let strings = |v: &Value, key: &str, field: Option<&str>| -> Vec<String> {
        v[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| field.map_or(l, |f| &l[f]).as_str())
            .map(|l| match l.strip_prefix("sha256:") {
                Some(hex) if field.is_some() => format!("blobs/sha256/{hex}"),
                _ => l.to_string(),
            })
            .collect()
    };
    if let Some(manifest) = manifest {
        return manifest
            .as_array()
            .into_iter()
            .flatten()
            .map(|image| strings(image, "Layers", None))
            .collect();
    }
    jsons
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v["layers"].is_array() && v["config"].is_object())
        .map(|m| strings(m, "layers", Some("digest")))
        .collect()
}

/// Maps layer entries to digests: OCI blobs are named by digest; legacy
/// `<id>/layer.tar` entries get the config's `rootfs.diff_ids` in the
/// manifest's order.
fn digests<'v>(
    manifest: &Value,
    named: impl Fn(&str) -> Option<&'v Value>,
) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for image in manifest.as_array().into_iter().flatten() {
        let layers: Vec<&str> = image["Layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str())
            .collect();
        let config = image["Config"].as_str().and_then(&named);
        let diff_ids: Vec<&str> = config
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
        let env = serde_json::json!({ "Env": [format!("X={PW}")] });
        let config = serde_json::json!({
            "rootfs": { "diff_ids": ["sha256:aaa", "sha256:bbb"] },
            "config": env,
        })
        .to_string();
        let legacy_copy = serde_json::json!({ "id": "l2", "config": env }).to_string();
        let manifest = br#"[{"Config":"cfg.json","Layers":["l1/layer.tar","l2/layer.tar"]}]"#;
        let export = layer(&[
            ("l1/layer.tar", &l1),
            ("l2/layer.tar", &l2),
            ("l2/json", legacy_copy.as_bytes()),
            ("cfg.json", config.as_bytes()),
            ("manifest.json", manifest),
        ]);
        let opts = Options {
            bounds: super::super::unpack::BOUNDS,
            proxy: None,
        };
        let scan = scan_export(&m, export.as_slice(), &opts).unwrap();
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
        let env = Location::Config {
            field: "config.Env[0]".into(),
        };
        // The config and its legacy copy, each by field, not by offset.
        assert_eq!(
            locs.iter()
                .filter(|(f, l)| *f == "password" && *l == env)
                .count(),
            2,
            "{locs:?}"
        );
        assert_eq!(locs.len(), 4, "{locs:?}");
    }
}
