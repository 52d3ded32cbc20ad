//! The optional read-through cache (`[cache]`): one file per stored
//! response in one directory, an in-memory index for the size bound and
//! least-recently-used eviction, and one upstream fetch per key at a time.
//! Requests for a key being fetched wait for its response head, then
//! follow its [`fill`] as it grows; the fill runs at the upstream's pace,
//! so no client's reading delays another.
//!
//! Safety rules, each enforced here:
//! - a body is written to a temporary file and renamed into place only
//!   after all of it arrived and its length matched `Content-Length`
//!   ([`fill`]), so a failed or truncated transfer is never served, and
//!   the transfers following a failed fill are aborted;
//! - the directory is 0700 and owned by the proxy's user, entries are 0600:
//!   a writable cache would let anyone on the host serve packages to builds;
//! - entries are keyed by user name and full upstream URL, so a change of
//!   either never serves what the other fetched;
//! - renames, evictions and index updates happen under one lock, so the
//!   index and the directory never disagree about a name;
//! - a directory that is missing, full or unwritable turns the cache off
//!   (at start) or skips storing (later), with a warning: the client whose
//!   request fetched always gets its response.
//!
//! File reads and writes are plain blocking calls on the worker thread, as
//! in nginx's event loop: they hit the page cache, and a slow disk delays
//! only that worker's connections.
//!
//! What is stored and what is served without a round-trip is decided in
//! [`rules`].

pub mod entry;
pub mod fill;
pub mod rules;
mod serve;

pub use fill::{Fill, Follower};
pub use serve::answer;

use crate::metrics::Metrics;
use entry::{Entry, Meta};
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Warnings about the same trouble (a full disk) are logged at most this
/// often; the rest go to the debug log.
const WARN_EVERY: Duration = Duration::from_secs(60);
const TEMP_PREFIX: &str = "tmp-";

/// What the cache did for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served from disk without asking the upstream: content-addressed, or
    /// fetched by another request while this one waited.
    Hit,
    /// Served from disk after the upstream answered 304.
    Revalidated,
    /// Nothing stored; fetched.
    Miss,
    /// Fetched again: the upstream's content changed.
    Changed,
    /// The upstream no longer has it; the entry went.
    Gone,
    /// The revalidation got another answer, passed on.
    Failed,
    /// Not cacheable: forwarded as is.
    Bypass,
}

impl Outcome {
    /// The access line's `cache=` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Revalidated => "revalidated",
            Outcome::Miss => "miss",
            Outcome::Changed => "changed",
            Outcome::Gone => "gone",
            Outcome::Failed => "failed",
            Outcome::Bypass => "bypass",
        }
    }

    /// The `result` label of `cache_revalidations_total`, for the outcomes
    /// of a revalidation.
    pub fn revalidation_label(self) -> Option<&'static str> {
        match self {
            Outcome::Revalidated => Some("not_modified"),
            Outcome::Changed => Some("changed"),
            Outcome::Gone => Some("gone"),
            Outcome::Failed => Some("failed"),
            Outcome::Hit | Outcome::Miss | Outcome::Bypass => None,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the cache directory cannot be used; the proxy then runs without a
/// cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The directory could not be created.
    #[error("cannot create {}: {source}", dir.display())]
    Create {
        /// `cache.dir`.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The directory's metadata or listing could not be read.
    #[error("cannot read {}: {source}", dir.display())]
    Read {
        /// `cache.dir`.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `cache.dir` names something else.
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// A file could not be created in it.
    #[error("cannot write in {}: {source}", dir.display())]
    NotWritable {
        /// `cache.dir`.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It belongs to another user.
    #[error(
        "{} belongs to uid {uid}, not to the proxy's user; anyone who can write there \
         could serve packages to builds",
        dir.display()
    )]
    ForeignOwner {
        /// `cache.dir`.
        dir: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// Its mode could not be tightened to 0700.
    #[error("cannot restrict {} to mode 0700: {source}", dir.display())]
    Restrict {
        /// `cache.dir`.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The cache, shared by every worker.
pub struct Cache {
    dir: PathBuf,
    max_size: u64,
    user: String,
    index: Mutex<Index>,
    metrics: Arc<Metrics>,
    last_warning: AtomicU64,
    temp_seq: AtomicU64,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Index {
    /// File name -> size on disk and last use.
    entries: HashMap<String, Slot>,
    /// Last use -> file name; the first is the least recently used.
    by_use: BTreeMap<u64, String>,
    total: u64,
    clock: u64,
    /// Keys being fetched.
    fetching: HashMap<String, InFlight>,
}

/// A fetch in progress for one key.
enum InFlight {
    /// Waiting for the upstream's response head; waiters lock the mutex
    /// and get it when the head is in (bounded by
    /// `upstream.response_timeout_secs`).
    Head(Arc<tokio::sync::Mutex<()>>),
    /// The body is being stored; requests follow it.
    Body(Arc<fill::Growing>),
}

struct Slot {
    size: u64,
    used: u64,
}

impl Index {
    fn touch(&mut self, name: &str) {
        self.clock += 1;
        if let Some(slot) = self.entries.get_mut(name) {
            self.by_use.remove(&slot.used);
            slot.used = self.clock;
            self.by_use.insert(self.clock, name.to_string());
        }
    }

    fn insert(&mut self, name: &str, size: u64) {
        self.remove(name);
        self.clock += 1;
        self.entries.insert(
            name.to_string(),
            Slot {
                size,
                used: self.clock,
            },
        );
        self.by_use.insert(self.clock, name.to_string());
        self.total += size;
    }

    fn remove(&mut self, name: &str) -> bool {
        match self.entries.remove(name) {
            Some(slot) => {
                self.by_use.remove(&slot.used);
                self.total -= slot.size;
                true
            }
            None => false,
        }
    }
}

/// What a lookup found.
pub enum Lookup {
    /// A stored response, opened and checked.
    Hit {
        /// The entry.
        entry: Box<Entry>,
        /// Stored by another request's fetch while this one waited, so it
        /// is newer than this request and needs no revalidation.
        fetched_meanwhile: bool,
    },
    /// Another request's fetch is filling the cache: follow it.
    Follow(Follower),
    /// Nothing stored, and this request is the one that fetches it; other
    /// requests for the key wait for its response head, then follow its
    /// fill, or fetch on their own if it stores nothing.
    Miss(FetchGuard),
    /// Nothing stored and this request may not fill the cache.
    Pass,
}

/// Held by the one request fetching a key, then by its fill.
pub struct FetchGuard {
    cache: Arc<Cache>,
    name: String,
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl FetchGuard {
    /// The body is being stored: waiters follow `growing` from now on.
    fn filling(&mut self, growing: Arc<fill::Growing>) {
        self.cache
            .lock()
            .fetching
            .insert(self.name.clone(), InFlight::Body(growing));
        self.held = None;
    }
}

impl Drop for FetchGuard {
    fn drop(&mut self) {
        // Removed from the map before the mutex is released (field drop
        // order), so a woken waiter either finds the entry or fetches.
        self.cache.lock().fetching.remove(&self.name);
    }
}

impl Cache {
    /// Prepares `config.dir` (created 0700 if missing, tightened to 0700 if
    /// looser) and loads the index from the entries in it, removing
    /// leftovers of interrupted writes and damaged files. An error says why
    /// the cache cannot be used; the caller proxies without it.
    pub fn open(
        config: &pulp_auth_config::Cache,
        user: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Cache>, CacheError> {
        let dir = &config.dir;
        let shown = dir.display();
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => tracing::info!(dir = %shown, "created the cache directory"),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(CacheError::Create {
                    dir: dir.clone(),
                    source,
                })
            }
        }
        let meta = std::fs::metadata(dir).map_err(|source| CacheError::Read {
            dir: dir.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(CacheError::NotADirectory(dir.clone()));
        }
        let cache = Cache {
            dir: dir.clone(),
            max_size: config.max_size,
            user: user.to_string(),
            index: Mutex::default(),
            metrics,
            last_warning: AtomicU64::new(0),
            temp_seq: AtomicU64::new(0),
        };
        // A file of our own tells our user id, and that the directory
        // takes writes.
        let (probe, probe_path) = cache
            .temp_file()
            .map_err(|source| CacheError::NotWritable {
                dir: dir.clone(),
                source,
            })?;
        let uid = probe.metadata().map(|m| m.uid());
        drop(probe);
        let _ = std::fs::remove_file(&probe_path);
        if uid.ok() != Some(meta.uid()) {
            return Err(CacheError::ForeignOwner {
                dir: dir.clone(),
                uid: meta.uid(),
            });
        }
        if meta.mode() & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(
                |source| CacheError::Restrict {
                    dir: dir.clone(),
                    source,
                },
            )?;
            tracing::warn!(dir = %shown, "cache directory was readable by others; set it to mode 0700");
        }
        cache.load()?;
        Ok(Arc::new(cache))
    }

    fn load(&self) -> Result<(), CacheError> {
        let shown = self.dir.display();
        let mut found = Vec::new();
        let listing = std::fs::read_dir(&self.dir).map_err(|source| CacheError::Read {
            dir: self.dir.clone(),
            source,
        })?;
        for dirent in listing.flatten() {
            let name = dirent.file_name().to_string_lossy().into_owned();
            let path = dirent.path();
            if let Some(rest) = name.strip_prefix(TEMP_PREFIX) {
                // Left by a process that is gone; a live one (a restart
                // overlapping its predecessor) still needs its own.
                let pid = rest.split('-').next().unwrap_or("");
                if !Path::new("/proc").join(pid).exists() || pid.is_empty() {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            if !is_entry_name(&name) {
                continue;
            }
            match Entry::open(&path, None) {
                Ok(e) if entry_name(&e.meta.key) == name => {
                    let used = e.file.metadata().and_then(|m| m.modified()).ok();
                    found.push((
                        used.unwrap_or(UNIX_EPOCH),
                        name,
                        e.body_at + e.meta.body_len,
                    ));
                }
                _ => {
                    tracing::warn!(file = %path.display(), "removing a damaged cache entry");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        found.sort();
        let mut index = self.lock();
        for (_, name, size) in &found {
            index.insert(name, *size);
        }
        let evicted = self.evict(&mut index, None);
        tracing::info!(
            dir = %shown,
            entries = index.entries.len(),
            bytes = index.total,
            evicted,
            max_size = self.max_size,
            "cache ready"
        );
        self.metrics
            .cache_size(index.entries.len() as u64, index.total);
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // A poisoned lock means a panic elsewhere; with panic=abort there
        // is none, and the index is consistent between statements.
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The key for a request: user name and full upstream URL.
    pub fn key(&self, upstream_url: &str) -> String {
        format!("{} {upstream_url}", self.user)
    }

    /// Finds `key`, or makes this request the one that fetches it (when
    /// `fill`), or waits while another request fetches it.
    pub async fn lookup(self: &Arc<Self>, key: &str, fill: bool) -> Lookup {
        let name = entry_name(key);
        let mut waited = false;
        loop {
            let wait = {
                let mut index = self.lock();
                if index.entries.contains_key(&name) {
                    index.touch(&name);
                    drop(index);
                    match Entry::open(&self.dir.join(&name), Some(key)) {
                        Ok(entry) => {
                            // The file's time orders eviction across restarts.
                            let _ = entry.file.set_modified(SystemTime::now());
                            return Lookup::Hit {
                                entry: Box::new(entry),
                                fetched_meanwhile: waited,
                            };
                        }
                        Err(e) => {
                            self.warn(format_args!("dropping unreadable cache entry {name}: {e}"));
                            self.remove(&name);
                            continue;
                        }
                    }
                }
                if let Some(follower) = index.fetching.get(&name).and_then(InFlight::follow) {
                    drop(index);
                    tracing::debug!(target: "cache", entry = %name, "following another request's fetch");
                    return Lookup::Follow(follower);
                }
                if !fill {
                    return Lookup::Pass;
                }
                match index.fetching.get(&name) {
                    Some(InFlight::Head(m)) => m.clone(),
                    Some(InFlight::Body(_)) | None => {
                        let m = Arc::new(tokio::sync::Mutex::new(()));
                        let held = m.clone().try_lock_owned().expect("a new mutex is free");
                        index.fetching.insert(name.clone(), InFlight::Head(m));
                        return Lookup::Miss(FetchGuard {
                            cache: self.clone(),
                            name,
                            held: Some(held),
                        });
                    }
                }
            };
            tracing::debug!(target: "cache", entry = %name, "waiting for another request's fetch");
            drop(wait.lock().await);
            waited = true;
        }
    }

    /// Starts writing a response for `meta.key` to a temporary file, of
    /// `len` body bytes or chunked (`None`). `None` (after a warning) when
    /// the directory does not take it.
    pub fn begin(
        self: &Arc<Self>,
        meta: Meta,
        len: Option<u64>,
        guard: Option<FetchGuard>,
    ) -> Option<Fill> {
        let (file, temp) = match self.temp_file() {
            Ok(t) => t,
            Err(e) => {
                self.warn(format_args!(
                    "not storing a response: cannot create a file in {}: {e}",
                    self.dir.display()
                ));
                return None;
            }
        };
        Fill::new(
            self.clone(),
            entry_name(&meta.key),
            temp,
            file,
            meta,
            len,
            guard,
        )
    }

    /// Drops the entry for `key`, if any (the upstream no longer has it, or
    /// sent something that replaces it but cannot be stored).
    pub fn forget(&self, key: &str) {
        self.remove(&entry_name(key));
    }

    /// Removes entry `name` from the index and the directory together.
    fn remove(&self, name: &str) {
        let mut index = self.lock();
        if index.remove(name) {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
        self.metrics
            .cache_size(index.entries.len() as u64, index.total);
    }

    /// Evicts least recently used entries (never `keep`) until the total
    /// fits; returns how many went.
    fn evict(&self, index: &mut Index, keep: Option<&str>) -> u64 {
        let mut evicted = 0;
        while index.total > self.max_size {
            let victim = index
                .by_use
                .values()
                .find(|n| Some(n.as_str()) != keep)
                .cloned();
            let Some(victim) = victim else { break };
            index.remove(&victim);
            let _ = std::fs::remove_file(self.dir.join(&victim));
            tracing::debug!(entry = %victim, "evicted");
            evicted += 1;
        }
        self.metrics.cache_evictions(evicted);
        evicted
    }

    fn temp_file(&self) -> std::io::Result<(File, PathBuf)> {
        let seq = self.temp_seq.fetch_add(1, Ordering::Relaxed);
        let path = self
            .dir
            .join(format!("{TEMP_PREFIX}{}-{seq}", std::process::id()));
        let create = || {
            OpenOptions::new()
                // Read too: followers read the file while it is written.
                .read(true)
                .write(true)
                .mode(0o600)
                // O_EXCL: never an existing file, never through a symlink.
                .create_new(true)
                .open(&path)
        };
        let file = match create() {
            // The directory was removed under us (emptied by hand): make it
            // again, 0700, rather than go on without a cache until restart.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new().mode(0o700).create(&self.dir)?;
                tracing::warn!(dir = %self.dir.display(), "the cache directory had gone; created it again");
                create()?
            }
            other => other?,
        };
        Ok((file, path))
    }

    fn write_failed(&self, e: &std::io::Error) {
        self.warn(format_args!(
            "not storing a response: writing in {} failed: {e}; requests go on without the cache",
            self.dir.display()
        ));
    }

    /// Logs a warning, at most once per [`WARN_EVERY`]; repeats go to the
    /// debug log.
    fn warn(&self, message: std::fmt::Arguments<'_>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_warning.load(Ordering::Relaxed);
        if now >= last + WARN_EVERY.as_secs()
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(target: "cache", "{message}");
        } else {
            tracing::debug!(target: "cache", "{message}");
        }
    }

    /// `cache.max_size`.
    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    /// The counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// The file name for a key: its SHA-256 in hex.
fn entry_name(key: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn is_entry_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod outcome_tests {
    use super::Outcome;

    #[test]
    fn one_enum_names_the_log_word_and_the_revalidation_label() {
        let all = [
            (Outcome::Hit, "hit", None),
            (Outcome::Revalidated, "revalidated", Some("not_modified")),
            (Outcome::Miss, "miss", None),
            (Outcome::Changed, "changed", Some("changed")),
            (Outcome::Gone, "gone", Some("gone")),
            (Outcome::Failed, "failed", Some("failed")),
            (Outcome::Bypass, "bypass", None),
        ];
        for (o, word, label) in all {
            assert_eq!((o.as_str(), o.revalidation_label()), (word, label));
        }
    }
}
