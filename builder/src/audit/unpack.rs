//! Layers and the files inside them: tar, gzip, xz, bzip2 and zstd
//! streams, zip archives (wheels, jars) and any of them inside another are
//! recognised by their first bytes, not their names, and searched as they
//! decompress, to a bounded depth. A bound that stops a search is
//! recorded as [`Incomplete`], so an audit that could not look everywhere
//! says so instead of passing. Memory stays flat: streams are searched in
//! buffers, and a zip (which needs its central directory, at the end) is
//! spooled to a temporary file.

use super::scan::StreamScan;
use pulp_auth_config::forms::Matcher;
use std::cell::Cell;
use std::io::{self, Cursor, Read, Seek};
use std::rc::Rc;

/// What the first bytes of a stream say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Anything else: searched as it is.
    Plain,
    /// A ustar, GNU or pax tar.
    Tar,
    /// gzip (deflate).
    Gzip,
    /// zstd.
    Zstd,
    /// xz.
    Xz,
    /// bzip2.
    Bzip2,
    /// A zip archive (also wheels and jars).
    Zip,
}

impl Kind {
    /// Recognises `head` (the first 512 bytes, or all of a shorter stream).
    pub fn sniff(head: &[u8]) -> Kind {
        match head {
            [0x1f, 0x8b, 0x08, ..] => Kind::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Kind::Zstd,
            [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Kind::Xz,
            // A block (pi) or the end of stream (sqrt pi) follows the level.
            [b'B', b'Z', b'h', b'1'..=b'9', 0x31, 0x41, 0x59, 0x26, 0x53, 0x59, ..]
            | [b'B', b'Z', b'h', b'1'..=b'9', 0x17, 0x72, 0x45, 0x38, 0x50, 0x90, ..] => {
                Kind::Bzip2
            }
            [b'P', b'K', 3, 4, ..] | [b'P', b'K', 5, 6, ..] => Kind::Zip,
            _ if head.len() >= 262 && &head[257..262] == b"ustar" => Kind::Tar,
            _ => Kind::Plain,
        }
    }

    /// The name reports use.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Plain => "plain",
            Kind::Tar => "tar",
            Kind::Gzip => "gzip",
            Kind::Zstd => "zstd",
            Kind::Xz => "xz",
            Kind::Bzip2 => "bzip2",
            Kind::Zip => "zip",
        }
    }
}

/// Where the search stops unpacking.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Archives and compressed streams nested below a layer's own tar.
    pub depth: u32,
    /// Decompressed bytes of one file inside a layer.
    pub file_bytes: u64,
    /// Decompressed to compressed ratio of one file, checked once it has
    /// given `ratio_after` bytes (a decompression bomb).
    pub ratio: u64,
    /// See `ratio`.
    pub ratio_after: u64,
    /// Size of a zip that is unpacked (it is spooled to a temporary file).
    pub zip_bytes: u64,
}

/// The bounds `ci-builder audit` uses: far beyond what a package or a log
/// needs, far below what would exhaust a build host.
pub const BOUNDS: Bounds = Bounds {
    depth: 6,
    file_bytes: 1 << 30,
    ratio: 100,
    ratio_after: 16 << 20,
    zip_bytes: 1 << 30,
};

/// A form found, before layer names become digests.
#[derive(Debug, Clone)]
pub struct RawFinding {
    /// Which form matched, e.g. `base64(user:password)`.
    pub form: &'static str,
    /// Export entry (the layer's name in the archive, or a blob's).
    pub entry: String,
    /// File inside the layer (`a.whl!/b` for a member of an archive), if
    /// the entry is a layer.
    pub path: Option<String>,
    /// Byte offset in the (decoded) file; absent when a name holds it.
    pub offset: Option<u64>,
    /// The decoders the bytes went through inside the layer, outermost
    /// first (`["zip", "gzip"]`).
    pub decoded: Vec<&'static str>,
}

/// Something a bound kept from being searched through.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Incomplete {
    /// Export entry (layer) that holds it.
    pub entry: String,
    /// File inside the layer, redacted.
    pub path: String,
    /// Which bound, and what was searched instead.
    pub reason: String,
}

/// A repository file at the root of a layer, or a deletion (whiteout),
/// in layer order, to find what the final image holds.
#[derive(Debug, Clone)]
pub enum RepoEvent {
    /// A repository file, and whether it names the proxy.
    File {
        /// Export entry (layer).
        entry: String,
        /// Path in the image.
        path: String,
        /// Byte offset of the proxy's URL in it, if it names the proxy.
        proxy_at: Option<u64>,
    },
    /// `.wh.NAME`: the path is deleted.
    Delete {
        /// Export entry (layer).
        entry: String,
        /// Deleted path.
        path: String,
    },
    /// `.wh..wh..opq`: the directory's lower content is hidden.
    Opaque {
        /// Export entry (layer).
        entry: String,
        /// The directory, with a trailing `/`.
        dir: String,
    },
}

/// Where a stream sits: the export entry, the file in the layer and the
/// decoders on the way.
#[derive(Debug, Clone)]
pub struct At {
    entry: String,
    path: Option<String>,
    decoded: Vec<&'static str>,
    /// The stream is (or decodes to) the layer's own tar.
    layer_root: bool,
}

impl At {
    /// An export entry searched as a layer.
    pub fn layer(entry: &str) -> At {
        At {
            entry: entry.to_string(),
            path: None,
            decoded: Vec::new(),
            layer_root: true,
        }
    }

    /// An export entry searched as a file (not a layer).
    pub fn entry(entry: &str) -> At {
        At {
            layer_root: false,
            ..At::layer(entry)
        }
    }

    fn member(&self, name: &str) -> At {
        At {
            entry: self.entry.clone(),
            path: Some(match &self.path {
                Some(p) => format!("{p}!/{name}"),
                None => name.to_string(),
            }),
            decoded: self.decoded.clone(),
            layer_root: false,
        }
    }

    fn through(&self, kind: Kind) -> At {
        let mut at = self.clone();
        // A layer's own compression is how it is stored, not a finding's
        // detail.
        if !self.layer_root {
            at.decoded.push(kind.name());
        }
        at
    }
}

/// The search of one source's layers and files.
pub struct Walker<'m> {
    matcher: &'m Matcher,
    proxy: Option<String>,
    bounds: Bounds,
    /// Set when the source itself failed to read: such an error ends the
    /// audit, while a malformed file inside a layer only gets a note.
    source_failed: Rc<Cell<bool>>,
    /// Every form found.
    pub findings: Vec<RawFinding>,
    /// What a bound kept from being searched.
    pub incomplete: Vec<Incomplete>,
    /// Other remarks (files that looked compressed and were not).
    pub notes: Vec<String>,
    /// Repository files and deletions, in the order met.
    pub repos: Vec<RepoEvent>,
}

impl<'m> Walker<'m> {
    /// A search for `matcher`'s forms; `proxy` is the proxy's URL, looked
    /// for in repository files.
    pub fn new(matcher: &'m Matcher, proxy: Option<String>, bounds: Bounds) -> Self {
        Walker {
            matcher,
            proxy,
            bounds,
            source_failed: Rc::new(Cell::new(false)),
            findings: Vec::new(),
            incomplete: Vec::new(),
            notes: Vec::new(),
            repos: Vec::new(),
        }
    }

    /// Wraps the source's reader, so its own failures are told from a
    /// malformed file's.
    pub fn watch<'r, R: Read + 'r>(&self, inner: R) -> impl Read + 'r {
        Watch {
            inner,
            failed: self.source_failed.clone(),
        }
    }

    /// Searches one stream at `at`, unpacking what it recognises.
    pub fn search(&mut self, r: &mut dyn Read, at: &At) -> io::Result<()> {
        self.file(r, at, 0)
    }

    fn file(&mut self, r: &mut dyn Read, at: &At, depth: u32) -> io::Result<()> {
        let (head, n) = peek(r)?;
        let kind = Kind::sniff(&head[..n]);
        let mut r = Cursor::new(head[..n].to_vec()).chain(r);
        if kind != Kind::Plain && depth >= self.bounds.depth {
            self.incomplete(
                at,
                format!(
                    "{} nested {} levels deep, searched as stored",
                    kind.name(),
                    depth
                ),
            );
            return self.plain(&mut r, at);
        }
        let result = match kind {
            Kind::Plain => return self.plain(&mut r, at),
            Kind::Tar => self.tar(&mut r, at, depth),
            Kind::Zip => self.zip(&mut r, at, depth),
            _ => self.stream(kind, &mut r, at, depth),
        };
        match result {
            Err(e) if !self.source_failed.get() && !at.layer_root => {
                self.notes.push(format!(
                    "{}: not a readable {} ({e}); searched as far as it could be read",
                    self.name(at),
                    kind.name()
                ));
                // The rest of a file that failed to parse is still bytes.
                self.plain(&mut r, at)
            }
            other => other,
        }
    }

    fn plain(&mut self, r: &mut dyn Read, at: &At) -> io::Result<()> {
        let mut scan = StreamScan::new(self.matcher);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => scan.feed(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.record(at, scan);
        Ok(())
    }

    fn record(&mut self, at: &At, scan: StreamScan<'_>) {
        for h in scan.hits {
            self.findings.push(RawFinding {
                form: h.form,
                entry: at.entry.clone(),
                path: at.path.clone(),
                offset: Some(h.offset),
                decoded: at.decoded.clone(),
            });
        }
    }

    fn name_hits(&mut self, at: &At, text: &str) {
        for (form, _, _) in self.matcher.find_all(text.as_bytes()) {
            self.findings.push(RawFinding {
                form,
                entry: at.entry.clone(),
                path: at.path.clone(),
                offset: None,
                decoded: at.decoded.clone(),
            });
        }
    }

    fn tar(&mut self, r: &mut dyn Read, at: &At, depth: u32) -> io::Result<()> {
        let mut archive = tar::Archive::new(r);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.to_string_lossy().into_owned();
            let child = at.member(&path);
            // Names and link targets are content too.
            let link = entry.link_name()?.map(|l| l.to_string_lossy().into_owned());
            for text in std::iter::once(&path).chain(link.as_ref()) {
                self.name_hits(&child, text);
            }
            if at.layer_root {
                self.whiteout(&at.entry, &path);
            }
            if !entry.header().entry_type().is_file() {
                continue;
            }
            if at.layer_root && is_repo_file(&path) && entry.size() <= REPO_FILE_MAX {
                let mut data = Vec::with_capacity(entry.size() as usize);
                entry.read_to_end(&mut data)?;
                self.repos.push(RepoEvent::File {
                    entry: at.entry.clone(),
                    path: path.clone(),
                    proxy_at: self.proxy.as_deref().and_then(|p| {
                        // `http://IP` is also written `http://IP:80`.
                        let explicit = format!("{p}:80");
                        // Only the scheme's colon: no port given (IPv4 or a name).
                        let default_port = p.matches(':').count() == 1;
                        names(&data, p)
                            .or_else(|| default_port.then(|| names(&data, &explicit)).flatten())
                    }),
                });
                self.file(&mut data.as_slice(), &child, depth + 1)?;
            } else {
                self.file(&mut entry, &child, depth + 1)?;
            }
        }
        Ok(())
    }

    fn whiteout(&mut self, entry: &str, path: &str) {
        let (dir, base) = match path.rsplit_once('/') {
            Some((d, b)) => (format!("{d}/"), b),
            None => (String::new(), path),
        };
        if base == ".wh..wh..opq" {
            self.repos.push(RepoEvent::Opaque {
                entry: entry.to_string(),
                dir,
            });
        } else if let Some(name) = base.strip_prefix(".wh.") {
            self.repos.push(RepoEvent::Delete {
                entry: entry.to_string(),
                path: format!("{dir}{name}"),
            });
        }
    }

    fn stream(&mut self, kind: Kind, r: &mut dyn Read, at: &At, depth: u32) -> io::Result<()> {
        let count = Rc::new(Cell::new(0u64));
        let mut tee = Tee {
            inner: r,
            scan: StreamScan::new(self.matcher),
            count: count.clone(),
        };
        let inner = at.through(kind);
        let cut = {
            let decoder: Box<dyn Read + '_> = match kind {
                Kind::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut tee)),
                Kind::Zstd => Box::new(zstd::stream::read::Decoder::new(&mut tee)?),
                Kind::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(&mut tee)),
                _ => Box::new(bzip2::read::MultiBzDecoder::new(&mut tee)),
            };
            let mut bounded = Bounded::new(decoder, count, self.bounds, depth > 0);
            let result = self.file(&mut bounded, &inner, depth + 1);
            match (result, bounded.cut.take()) {
                (_, Some(cut)) => Some(cut),
                (Err(e), None) if self.source_failed.get() || at.layer_root => return Err(e),
                (Err(e), None) => {
                    self.notes.push(format!(
                        "{}: not a readable {} stream ({e}); searched as stored",
                        self.name(at),
                        kind.name()
                    ));
                    None
                }
                (Ok(()), None) => None,
            }
        };
        if let Some(cut) = cut {
            self.incomplete(at, format!("decompressed only {cut}; searched as stored"));
        }
        // What follows the compressed stream, or what a bound left, is
        // still searched as stored bytes.
        io::copy(&mut tee, &mut io::sink())?;
        if !at.layer_root {
            let Tee { scan, .. } = tee;
            self.record(at, scan);
        }
        Ok(())
    }

    fn zip(&mut self, r: &mut dyn Read, at: &At, depth: u32) -> io::Result<()> {
        let mut tee = Tee {
            inner: r,
            scan: StreamScan::new(self.matcher),
            count: Rc::new(Cell::new(0)),
        };
        let mut spool = tempfile::spooled_tempfile(8 << 20);
        let copied = io::copy(&mut (&mut tee).take(self.bounds.zip_bytes), &mut spool)?;
        let too_big = copied == self.bounds.zip_bytes && io::copy(&mut tee, &mut io::sink())? > 0;
        let Tee { scan, .. } = tee;
        self.record(at, scan);
        if too_big {
            self.incomplete(
                at,
                format!(
                    "zip larger than {} MiB, searched as stored, not unpacked",
                    self.bounds.zip_bytes >> 20
                ),
            );
            return Ok(());
        }
        spool.rewind()?;
        let mut archive = match zip::ZipArchive::new(spool) {
            Ok(a) => a,
            Err(e) => {
                self.notes.push(format!(
                    "{}: not a readable zip ({e}); searched as stored",
                    self.name(at)
                ));
                return Ok(());
            }
        };
        let inner = at.through(Kind::Zip);
        for i in 0..archive.len() {
            let name = match archive.name_for_index(i) {
                Some(Ok(n)) => n.into_owned(),
                _ => format!("member #{i}"),
            };
            let child = inner.member(&name);
            self.name_hits(&child, &name);
            let mut file = match archive.by_index(i) {
                Ok(f) => f,
                Err(e) => {
                    self.incomplete(&child, format!("zip member not unpacked: {e}"));
                    continue;
                }
            };
            if file.is_dir() {
                continue;
            }
            let compressed = Rc::new(Cell::new(file.compressed_size()));
            let mut bounded = Bounded::new(&mut file, compressed, self.bounds, true);
            let result = self.file(&mut bounded, &child, depth + 1);
            if let Some(cut) = bounded.cut.take() {
                self.incomplete(&child, format!("decompressed only {cut}"));
            } else if let Err(e) = result {
                self.notes.push(format!(
                    "{}: zip member not readable ({e})",
                    self.name(&child)
                ));
            }
        }
        Ok(())
    }

    fn name(&self, at: &At) -> String {
        self.matcher
            .redact(at.path.as_deref().unwrap_or(at.entry.as_str()))
    }

    fn incomplete(&mut self, at: &At, reason: String) {
        self.incomplete.push(Incomplete {
            entry: at.entry.clone(),
            path: self.name(at),
            reason,
        });
    }
}

/// Repository files larger than this are not checked for the proxy URL.
const REPO_FILE_MAX: u64 = 1 << 20;

/// Whether `path` is a file apt or dnf reads repositories from, in any
/// directory (images may keep copies outside /etc).
pub fn is_repo_file(path: &str) -> bool {
    let (dir, base) = path.rsplit_once('/').unwrap_or(("", path));
    let parent = dir.rsplit('/').next().unwrap_or("");
    !base.starts_with(".wh.")
        && (base.ends_with(".repo")
            || base == "sources.list"
            || (parent == "sources.list.d"
                && (base.ends_with(".list") || base.ends_with(".sources"))))
}

/// Where `data` first holds `url` as a URL of its own (not the start of a
/// longer host name, another port or a longer port).
fn names(data: &[u8], url: &str) -> Option<u64> {
    let url = url.as_bytes();
    let at = data.windows(url.len()).enumerate().position(|(i, w)| {
        w == url
            && data
                .get(i + url.len())
                .is_none_or(|b| !(b.is_ascii_alphanumeric() || b"-.:".contains(b)))
    })?;
    Some(at as u64)
}

fn peek(r: &mut dyn Read) -> io::Result<([u8; 512], usize)> {
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

/// The source's reader, flagging its own failures.
struct Watch<R> {
    inner: R,
    failed: Rc<Cell<bool>>,
}

impl<R: Read> Read for Watch<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted {
                self.failed.set(true);
            }
        })
    }
}

/// Passes stored bytes to a decoder while searching them too (a gzip
/// header's file name, a zip's member names and stored members).
struct Tee<'a, 'm> {
    inner: &'a mut dyn Read,
    scan: StreamScan<'m>,
    count: Rc<Cell<u64>>,
}

impl Read for Tee<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.scan.feed(&buf[..n]);
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// A decoder's output, ended early at a bound.
struct Bounded<R> {
    inner: R,
    out: u64,
    input: Rc<Cell<u64>>,
    bounds: Bounds,
    enforce: bool,
    cut: Option<String>,
}

impl<R: Read> Bounded<R> {
    fn new(inner: R, input: Rc<Cell<u64>>, bounds: Bounds, enforce: bool) -> Self {
        Bounded {
            inner,
            out: 0,
            input,
            bounds,
            enforce,
            cut: None,
        }
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cut.is_some() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        self.out += n as u64;
        if self.enforce {
            let b = self.bounds;
            if self.out > b.file_bytes {
                self.cut = Some(format!(
                    "the first {} MiB (bound per file)",
                    b.file_bytes >> 20
                ));
            } else if self.out > b.ratio_after
                && self.out > b.ratio.saturating_mul(self.input.get().max(1))
            {
                self.cut = Some(format!(
                    "the first {} MiB: it expands more than {}:1 (a decompression bomb?)",
                    self.out >> 20,
                    b.ratio
                ));
            }
            if self.cut.is_some() {
                return Ok(0);
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const PW: &str = "fake pass:@/%+ word";

    fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
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

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn bz2(data: &[u8]) -> Vec<u8> {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zst(data: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(data, 1).unwrap()
    }

    fn zip(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, data) in files {
            z.start_file(*name, opts).unwrap();
            z.write_all(data).unwrap();
        }
        z.finish().unwrap().into_inner()
    }

    fn walk(layer: &[u8], bounds: Bounds) -> Walker<'static> {
        let m: &'static Matcher = Box::leak(Box::new(Matcher::new("ci-user", PW)));
        let mut w = Walker::new(m, Some("http://192.168.33.3".into()), bounds);
        let mut r = w.watch(layer);
        w.search(&mut r, &At::layer("blobs/sha256/ab")).unwrap();
        w
    }

    fn paths(w: &Walker<'_>) -> Vec<(String, Vec<&'static str>)> {
        let mut out: Vec<_> = w
            .findings
            .iter()
            .filter(|f| f.form == "password")
            .map(|f| (f.path.clone().unwrap_or_default(), f.decoded.clone()))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn every_compression_and_archive_is_searched_as_it_decompresses() {
        let secret = format!("token {PW}\n");
        let s = secret.as_bytes();
        let wheel = zip(&[
            ("pkg/conf.py", s),
            ("pkg/inner.tar.gz", &gz(&tar(&[("x", s)]))),
        ]);
        let layer = tar(&[
            ("a.gz", &gz(s)),
            ("b.xz", &xz(s)),
            ("c.bz2", &bz2(s)),
            ("d.zst", &zst(s)),
            ("e.whl", &wheel),
            ("f.tar.xz", &xz(&tar(&[("deep/g", s)]))),
            ("clean", b"nothing here"),
        ]);
        for stored in [layer.clone(), gz(&layer), zst(&layer)] {
            let w = walk(&stored, BOUNDS);
            // xz and zstd keep a short input as a raw block, so the stored
            // bytes hold it too; those hits are right, and not the point.
            let decoded: Vec<_> = paths(&w).into_iter().filter(|p| !p.1.is_empty()).collect();
            assert_eq!(
                decoded,
                vec![
                    ("a.gz".to_string(), vec!["gzip"]),
                    ("b.xz".into(), vec!["xz"]),
                    ("c.bz2".into(), vec!["bzip2"]),
                    ("d.zst".into(), vec!["zstd"]),
                    ("e.whl!/pkg/conf.py".into(), vec!["zip"]),
                    ("e.whl!/pkg/inner.tar.gz!/x".into(), vec!["zip", "gzip"]),
                    ("f.tar.xz!/deep/g".into(), vec!["xz"]),
                ],
                "{:?}",
                w.notes
            );
            assert!(w.incomplete.is_empty(), "{:?}", w.incomplete);
        }
    }

    #[test]
    fn a_bomb_is_cut_at_the_ratio_and_reported() {
        let zeros = vec![0u8; 64 << 20];
        let bomb = zst(&zeros);
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        let w = walk(&tar(&[("var/log/bomb.zst", &bomb)]), BOUNDS);
        assert_eq!(w.incomplete.len(), 1, "{:?}", w.incomplete);
        assert!(
            w.incomplete[0].reason.contains("100:1"),
            "{:?}",
            w.incomplete
        );
        assert_eq!(w.incomplete[0].path, "var/log/bomb.zst");
    }

    #[test]
    fn depth_and_size_bounds_are_reported_not_silent() {
        let s = format!("x {PW}");
        let mut nested = gz(s.as_bytes());
        for _ in 0..3 {
            nested = gz(&nested);
        }
        let tight = Bounds { depth: 3, ..BOUNDS };
        let w = walk(&tar(&[("n.gz", &nested)]), tight);
        assert!(
            w.incomplete.iter().any(|i| i.reason.contains("nested")),
            "{:?}",
            w.incomplete
        );
        let small = Bounds {
            file_bytes: 1000,
            ..BOUNDS
        };
        let big: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let w = walk(&tar(&[("big.gz", &gz(&big))]), small);
        assert!(
            w.incomplete[0].reason.contains("bound per file"),
            "{:?}",
            w.incomplete
        );
    }

    #[test]
    fn repository_files_and_whiteouts_are_recorded_with_the_proxy_check() {
        let w = walk(
            &tar(&[
                (
                    "etc/apt/sources.list.d/debian.sources",
                    b"URIs: http://192.168.33.3/pulp/content/debian/\n",
                ),
                (
                    "etc/yum.repos.d/a.repo",
                    b"baseurl=http://192.168.33.30/x\n",
                ),
                // Another port on the proxy's host is another service;
                // port 80 written out is the proxy.
                (
                    "etc/yum.repos.d/port.repo",
                    b"baseurl=http://192.168.33.3:8080/x\n",
                ),
                (
                    "etc/yum.repos.d/port80.repo",
                    b"baseurl=http://192.168.33.3:80/x\n",
                ),
                ("etc/yum.repos.d/.wh.b.repo", b""),
                (
                    "opt/copy/sources.list",
                    b"deb http://192.168.33.3 trixie main\n",
                ),
            ]),
            BOUNDS,
        );
        let files: Vec<_> = w
            .repos
            .iter()
            .map(|e| match e {
                RepoEvent::File { path, proxy_at, .. } => format!("{path}={proxy_at:?}"),
                RepoEvent::Delete { path, .. } => format!("-{path}"),
                RepoEvent::Opaque { dir, .. } => format!("opaque {dir}"),
            })
            .collect();
        assert_eq!(
            files,
            [
                "etc/apt/sources.list.d/debian.sources=Some(6)",
                "etc/yum.repos.d/a.repo=None",
                "etc/yum.repos.d/port.repo=None",
                "etc/yum.repos.d/port80.repo=Some(8)",
                "-etc/yum.repos.d/b.repo",
                "opt/copy/sources.list=Some(4)"
            ]
        );
    }

    #[test]
    fn a_file_that_only_looks_compressed_is_searched_as_stored() {
        let mut fake = vec![0x1f, 0x8b, 0x08, 0xff, 0xff];
        fake.extend_from_slice(PW.as_bytes());
        let w = walk(&tar(&[("not.gz", &fake)]), BOUNDS);
        assert_eq!(paths(&w), vec![("not.gz".to_string(), vec![])]);
        assert!(w.incomplete.is_empty());
    }
}
