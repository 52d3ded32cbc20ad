//! Streaming search: bytes arrive in buffers of any size; a match that
//! straddles two buffers is found once, with its offset in the whole
//! stream. Only the last `max_len - 1` bytes are carried over, so memory
//! stays flat whatever the stream's length.

use pulp_auth_config::forms::Matcher;

/// Most hits kept per stream: enough to locate a leak, bounded against a
/// file that is one long repetition of the secret.
pub const MAX_HITS: usize = 64;

/// One match: which form, where it starts in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// Which form matched, e.g. `base64(user:password)`.
    pub form: &'static str,
    /// Byte offset from the start of the stream.
    pub offset: u64,
}

/// The search state of one stream.
pub struct StreamScan<'m> {
    matcher: &'m Matcher,
    tail: Vec<u8>,
    /// Stream offset of `tail[0]`.
    tail_at: u64,
    /// Hits so far (at most [`MAX_HITS`]).
    pub hits: Vec<Hit>,
    /// Whether hits were dropped beyond [`MAX_HITS`].
    pub truncated: bool,
}

impl<'m> StreamScan<'m> {
    /// A scan at offset 0.
    pub fn new(matcher: &'m Matcher) -> Self {
        Self {
            matcher,
            tail: Vec::with_capacity(matcher.max_len()),
            tail_at: 0,
            hits: Vec::new(),
            truncated: false,
        }
    }

    /// Searches the next buffer.
    pub fn feed(&mut self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        let keep = self.matcher.max_len().saturating_sub(1);
        // Matches that start in the carried tail and end in this chunk.
        if !self.tail.is_empty() {
            let mut window = self.tail.clone();
            window.extend_from_slice(&chunk[..keep.min(chunk.len())]);
            let tail_len = self.tail.len();
            let found: Vec<_> = self
                .matcher
                .find_all(&window)
                .filter(|&(_, s, e)| s < tail_len && e > tail_len)
                .map(|(f, s, _)| (f, self.tail_at + s as u64))
                .collect();
            for (form, offset) in found {
                self.push(form, offset);
            }
        }
        let chunk_at = self.tail_at + self.tail.len() as u64;
        let found: Vec<_> = self
            .matcher
            .find_all(chunk)
            .map(|(f, s, _)| (f, chunk_at + s as u64))
            .collect();
        for (form, offset) in found {
            self.push(form, offset);
        }
        // Carry the last `keep` bytes of tail + chunk.
        if chunk.len() >= keep {
            self.tail.clear();
            self.tail.extend_from_slice(&chunk[chunk.len() - keep..]);
            self.tail_at = chunk_at + (chunk.len() - keep) as u64;
        } else {
            self.tail.extend_from_slice(chunk);
            let excess = self.tail.len().saturating_sub(keep);
            self.tail.drain(..excess);
            self.tail_at += excess as u64;
        }
    }

    fn push(&mut self, form: &'static str, offset: u64) {
        if self.hits.len() < MAX_HITS {
            self.hits.push(Hit { form, offset });
        } else {
            self.truncated = true;
        }
    }
}

/// Scans everything `reader` yields.
pub fn scan_reader(
    matcher: &Matcher,
    mut reader: impl std::io::Read,
) -> std::io::Result<StreamScan<'_>> {
    let mut scan = StreamScan::new(matcher);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(scan),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        scan.feed(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &str = "fake pass:@/%+ word";

    #[test]
    fn matches_across_every_split_are_found_once_at_the_right_offset() {
        let m = Matcher::new("ci-user", PW);
        let mut data = vec![b'x'; 100];
        data.extend_from_slice(PW.as_bytes());
        data.extend_from_slice(&[b'y'; 50]);
        for chunk in [1, 2, 3, 7, 18, 19, 20, 64, 1000] {
            let mut scan = StreamScan::new(&m);
            for piece in data.chunks(chunk) {
                scan.feed(piece);
            }
            let plain: Vec<_> = scan.hits.iter().filter(|h| h.form == "password").collect();
            assert_eq!(plain.len(), 1, "chunk {chunk}: {:?}", scan.hits);
            assert_eq!(plain[0].offset, 100, "chunk {chunk}");
        }
    }

    #[test]
    fn storage_signatures_across_every_split_are_found_once() {
        let m = Matcher::new("ci-user", PW).with_storage_signatures();
        let url = format!(
            "?X-Amz-Date=20261203T120000Z&X-Amz-Signature={}",
            "0a".repeat(32)
        );
        let mut data = vec![b'x'; 300];
        data.extend_from_slice(url.as_bytes());
        data.extend_from_slice(&[b'y'; 900]);
        let at = 300 + url.find("X-Amz-Signature").unwrap() as u64;
        for chunk in [1, 7, 64, 333, 350, 639, 640, 5000] {
            let mut scan = StreamScan::new(&m);
            for piece in data.chunks(chunk) {
                scan.feed(piece);
            }
            let offsets: Vec<u64> = scan.hits.iter().map(|h| h.offset).collect();
            assert_eq!(offsets, [at], "chunk {chunk}: {:?}", scan.hits);
        }
    }

    #[test]
    fn hits_are_bounded() {
        let m = Matcher::new("ci-user", PW);
        let data = PW.repeat(1000);
        let scan = scan_reader(&m, data.as_bytes()).unwrap();
        assert_eq!(scan.hits.len(), MAX_HITS);
        assert!(scan.truncated);
    }
}
