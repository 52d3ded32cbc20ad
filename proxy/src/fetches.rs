//! The fetch record: every forwarded response that reached its client
//! whole, with the sha256 of the body as the client received it, kept in a
//! bounded ring (`proxy.fetch_records`) and served as JSON lines on
//! `/fetches?since=CURSOR` (see `health`). A build takes the cursor before
//! it starts and reads its own fetches afterwards, so two builds can be
//! compared file by file. A record holds the path as forwarded (never a
//! query string: a client's query may be anything, and a presigned
//! storage URL is never the client's), the status, the size, the hash,
//! what the cache did and which host served it; no header, no credential.

use crate::cache::Outcome;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// One completed forwarded response.
#[derive(Debug, Clone)]
pub struct Fetch {
    /// `HEAD` rather than `GET`.
    pub head: bool,
    /// The normalised path, as forwarded below the upstream's prefix.
    pub path: String,
    /// The status sent to the client.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    /// SHA-256 of those bytes.
    pub sha256: [u8; 32],
    /// What the cache did, when it is on.
    pub cache: Option<Outcome>,
    /// The object-storage host, when a redirect was followed; else the
    /// upstream served it.
    pub storage: Option<String>,
}

#[derive(Clone)]
struct Kept {
    seq: u64,
    unix_ms: u64,
    fetch: Fetch,
}

/// Path bytes kept per record on average: paths may be as long as
/// `proxy.max_url_bytes`, so the ring is bounded in bytes too.
const PATH_BUDGET: usize = 128;

/// The last `proxy.fetch_records` fetches (fewer when their paths are
/// long).
pub struct Fetches {
    capacity: usize,
    upstream_host: String,
    /// When this record began (ms since the epoch): a cursor is only
    /// meaningful with the epoch it was read with, as `seq` starts again
    /// at 1 when the proxy restarts.
    epoch: u64,
    ring: Mutex<Ring>,
}

struct Ring {
    kept: VecDeque<Kept>,
    path_bytes: usize,
    last: u64,
}

impl Ring {
    /// Records after `cursor` no longer kept.
    fn lost_after(&self, cursor: u64) -> u64 {
        let oldest = self.kept.front().map_or(self.last + 1, |k| k.seq);
        oldest.saturating_sub(cursor.saturating_add(1))
    }
}

impl std::fmt::Debug for Fetches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fetches(up to {})", self.capacity)
    }
}

/// What `/fetches?since=CURSOR` answers.
#[derive(Debug)]
pub struct Page {
    /// One JSON object per line, oldest first.
    pub lines: Vec<u8>,
    /// The sequence number of the newest record: the next cursor.
    pub cursor: u64,
    /// Records after the asked cursor that the ring no longer holds.
    pub lost: u64,
    /// When this record began; see [`Fetches::epoch`].
    pub epoch: u64,
}

#[derive(serde::Serialize)]
struct Line<'a> {
    seq: u64,
    unix_ms: u64,
    method: &'static str,
    path: &'a str,
    status: u16,
    bytes: u64,
    sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache: Option<&'static str>,
    host: &'a str,
}

impl Fetches {
    /// Keeps the last `capacity` (at least 1) fetches; `upstream_host`
    /// names the upstream in records it served.
    pub fn new(capacity: usize, upstream_host: String) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            upstream_host,
            epoch: now_ms(),
            ring: Mutex::new(Ring {
                kept: VecDeque::new(),
                path_bytes: 0,
                last: 0,
            }),
        }
    }

    /// When this record began, in ms since the epoch: it changes when the
    /// proxy restarts, and a cursor of another epoch means nothing.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Records `fetch`, dropping the oldest when full.
    pub fn record(&self, fetch: Fetch) {
        let unix_ms = now_ms();
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.path_bytes += fetch.path.len();
        while ring.kept.len() >= self.capacity
            || (ring.path_bytes > self.capacity * PATH_BUDGET && !ring.kept.is_empty())
        {
            if let Some(old) = ring.kept.pop_front() {
                ring.path_bytes -= old.fetch.path.len();
            }
        }
        ring.last += 1;
        let seq = ring.last;
        ring.kept.push_back(Kept {
            seq,
            unix_ms,
            fetch,
        });
    }

    /// The newest record's sequence number (0 before any).
    pub fn cursor(&self) -> u64 {
        self.ring.lock().unwrap_or_else(|e| e.into_inner()).last
    }

    /// The headers of [`Fetches::since`] without its lines (`HEAD`).
    pub fn head(&self, cursor: u64) -> Page {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        Page {
            lines: Vec::new(),
            cursor: ring.last,
            lost: ring.lost_after(cursor),
            epoch: self.epoch,
        }
    }

    /// Every kept record newer than `cursor`.
    pub fn since(&self, cursor: u64) -> Page {
        // Copied under the lock, written out after: a large page does not
        // hold up the transfers that record themselves meanwhile.
        let (kept, last, lost) = {
            let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
            let lost = ring.lost_after(cursor);
            let kept: Vec<Kept> = ring
                .kept
                .iter()
                .filter(|k| k.seq > cursor)
                .cloned()
                .collect();
            (kept, ring.last, lost)
        };
        let mut lines = Vec::new();
        for k in &kept {
            let f = &k.fetch;
            let line = Line {
                seq: k.seq,
                unix_ms: k.unix_ms,
                method: if f.head { "HEAD" } else { "GET" },
                path: &f.path,
                status: f.status,
                bytes: f.bytes,
                sha256: hex(&f.sha256),
                cache: f.cache.map(Outcome::as_str),
                host: f.storage.as_deref().unwrap_or(&self.upstream_host),
            };
            // Writing into a Vec cannot fail, and every field serialises.
            if serde_json::to_writer(&mut lines, &line).is_ok() {
                lines.push(b'\n');
            }
        }
        Page {
            lines,
            cursor: last,
            lost,
            epoch: self.epoch,
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch(path: &str) -> Fetch {
        Fetch {
            head: false,
            path: path.into(),
            status: 200,
            bytes: 3,
            sha256: [0xab; 32],
            cache: Some(Outcome::Miss),
            storage: None,
        }
    }

    fn paths(page: &Page) -> Vec<String> {
        String::from_utf8(page.lines.clone())
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!("{} {}", v["seq"], v["path"].as_str().unwrap())
            })
            .collect()
    }

    #[test]
    fn a_cursor_reads_what_came_after_it_and_says_what_the_ring_lost() {
        let f = Fetches::new(3, "pulp.example.test".into());
        assert_eq!(f.cursor(), 0);
        assert_eq!(f.since(0).lost, 0);
        f.record(fetch("/a"));
        let cursor = f.cursor();
        for p in ["/b", "/c", "/d", "/e"] {
            f.record(fetch(p));
        }
        let page = f.since(cursor);
        assert_eq!(paths(&page), ["3 /c", "4 /d", "5 /e"]);
        assert_eq!((page.cursor, page.lost), (5, 1));
        let page = f.since(5);
        assert!(page.lines.is_empty());
        assert_eq!((page.cursor, page.lost), (5, 0));
        assert_eq!(f.since(4).lost, 0);
        let head = f.head(cursor);
        assert_eq!((head.cursor, head.lost, head.lines.len()), (5, 1, 0));
    }

    #[test]
    fn long_paths_take_the_place_of_several_records() {
        let f = Fetches::new(4, "pulp.example.test".into());
        let long = format!("/{}", "x".repeat(4 * PATH_BUDGET));
        f.record(fetch("/a"));
        f.record(fetch(&long));
        let page = f.since(0);
        assert_eq!(paths(&page), [format!("2 {long}")]);
        assert_eq!(page.lost, 1);
        f.record(fetch("/b"));
        assert_eq!(paths(&f.since(0)), ["3 /b"]);
    }

    #[test]
    fn a_line_names_the_host_that_served_it_and_escapes_the_path() {
        let f = Fetches::new(8, "pulp.example.test".into());
        f.record(fetch("/a\"b\nc"));
        f.record(Fetch {
            storage: Some("s3.example.test".into()),
            cache: None,
            head: true,
            ..fetch("/x")
        });
        let text = String::from_utf8(f.since(0).lines).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["path"], "/a\"b\nc");
        assert_eq!(lines[0]["host"], "pulp.example.test");
        assert_eq!(lines[0]["cache"], "miss");
        assert_eq!(lines[0]["sha256"], "ab".repeat(32));
        assert_eq!(lines[1]["host"], "s3.example.test");
        assert_eq!(lines[1]["method"], "HEAD");
        assert!(lines[1].get("cache").is_none(), "{text}");
    }
}
