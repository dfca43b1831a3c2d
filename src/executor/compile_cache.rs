//! The compile cache: what a compile made, kept by what went into it, so that the same program
//! compiled again costs nothing but its run.
//!
//! The key is a SHA-256 of everything that decides a compile's result: the image id (a rebuilt
//! image is another compiler), the language, the compile command and its extra arguments, and
//! every file (name and bytes) in order. The value is the compile phase as it was reported
//! (status, output, duration) and, for a compile that succeeded, the work dir after it as an
//! archive of regular files and directories only, repacked by runbox (a link, a FIFO or a name
//! outside the work dir made by the compile is left out: the archive is unpacked into the next
//! sandbox by its runner and must hold nothing but files). A failed compile is kept as well:
//! the same error again costs no sandbox at all.
//!
//! Only compiles in a job's own sandbox are kept (a fresh container, or a reused one's fresh
//! nested sandbox), never a session's, whose work dir its user controls. The work dir leaves the
//! sandbox the way the files enter it: through the sandbox, as the sandbox user (`tar` run
//! there); the host never reads a work dir. Bounded in entries and bytes, least recently used
//! out first; in memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{Job, PhaseOutcome};

/// What one compile made.
#[derive(Debug, Clone)]
pub struct CachedCompile {
    /// The compile phase as first reported.
    pub phase: PhaseOutcome,
    /// The work dir after a successful compile (runbox's own archive); `None` for a compile
    /// error.
    pub work_dir: Option<Bytes>,
}

impl CachedCompile {
    fn bytes(&self) -> usize {
        self.work_dir.as_ref().map_or(0, Bytes::len)
            + self.phase.output.stdout.len()
            + self.phase.output.stderr.len()
            + 256
    }
}

/// The cache's bounds (`[compile_cache]`).
#[derive(Debug, Clone, Copy)]
pub struct CacheBounds {
    pub max_entries: usize,
    pub max_bytes: usize,
    /// A work dir larger than this is not kept.
    pub max_entry_bytes: usize,
}

/// Counters for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub entries: usize,
    pub bytes: usize,
}

pub struct CompileCache {
    bounds: CacheBounds,
    state: Mutex<State>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

#[derive(Default)]
struct State {
    entries: HashMap<[u8; 32], Slot>,
    bytes: usize,
    /// Bumped on every use: the smallest `used` is the least recently used.
    clock: u64,
}

struct Slot {
    compile: CachedCompile,
    used: u64,
}

impl CompileCache {
    pub fn new(bounds: CacheBounds) -> CompileCache {
        CompileCache {
            bounds,
            state: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Only inserts, lookups and removals happen under the lock.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The compile kept for `key`, counted as a hit or a miss.
    pub fn get(&self, key: &[u8; 32]) -> Option<CachedCompile> {
        let mut state = self.lock();
        state.clock += 1;
        let clock = state.clock;
        let found = state.entries.get_mut(key).map(|slot| {
            slot.used = clock;
            slot.compile.clone()
        });
        drop(state);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Keeps `compile` under `key`, making room by removing the least recently used entries.
    /// One larger than the entry bound (or the whole cache) is not kept.
    pub fn insert(&self, key: [u8; 32], compile: CachedCompile) {
        let size = compile.bytes();
        if size > self.bounds.max_entry_bytes || size > self.bounds.max_bytes {
            return;
        }
        let mut state = self.lock();
        if let Some(old) = state.entries.remove(&key) {
            state.bytes -= old.compile.bytes();
        }
        while !state.entries.is_empty()
            && (state.entries.len() >= self.bounds.max_entries
                || state.bytes + size > self.bounds.max_bytes)
        {
            let oldest = state
                .entries
                .iter()
                .min_by_key(|(_, slot)| slot.used)
                .map(|(key, _)| *key)
                .expect("not empty");
            let removed = state.entries.remove(&oldest).expect("present");
            state.bytes -= removed.compile.bytes();
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        state.clock += 1;
        let used = state.clock;
        state.bytes += size;
        state.entries.insert(key, Slot { compile, used });
    }

    pub fn stats(&self) -> CacheStats {
        let state = self.lock();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            entries: state.entries.len(),
            bytes: state.bytes,
        }
    }

    pub fn max_entry_bytes(&self) -> usize {
        self.bounds.max_entry_bytes
    }
}

impl std::fmt::Debug for CompileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompileCache")
            .field("stats", &self.stats())
            .finish()
    }
}

/// The key of `job`'s compile with `compile_cmd` in the image `image_id`.
pub fn key(image_id: &str, job: &Job, compile_cmd: &[String]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    field(image_id.as_bytes());
    field(job.language.id.as_bytes());
    for part in job.command(compile_cmd).iter().chain(&job.compile_args) {
        field(b"arg");
        field(part.as_bytes());
    }
    for file in &job.files {
        field(b"file");
        field(file.name.as_bytes());
        field(&file.content);
    }
    hasher.finalize().into()
}

/// The work dir archive a compile's sandbox wrote (`tar -c` there), repacked with its regular
/// files and directories only, each name checked like a job's file names, modes kept to
/// `rwxr-xr-x` at most. `None` when the archive cannot be read.
pub fn repack(archive: &[u8]) -> Option<Vec<u8>> {
    match repack_checked(archive) {
        Ok(packed) => Some(packed),
        Err(err) => {
            tracing::debug!(error = %err, "a compiled work dir could not be repacked; not kept");
            None
        }
    }
}

fn repack_checked(archive: &[u8]) -> std::io::Result<Vec<u8>> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut reader = tar::Archive::new(archive);
    let mut builder = tar::Builder::new(Vec::new());
    for entry in reader.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let name = path
            .to_str()
            .ok_or_else(|| invalid("a name that is not UTF-8"))?
            .trim_start_matches("./")
            .trim_end_matches('/');
        if name.is_empty() || crate::names::validate_name(name).is_err() {
            continue;
        }
        let kind = entry.header().entry_type();
        if !kind.is_dir() && !kind.is_file() {
            // Links, FIFOs, devices: never carried into another sandbox.
            continue;
        }
        let mode = entry.header().mode()? & 0o755;
        let mut header = tar::Header::new_ustar();
        header.set_mode(mode);
        header.set_mtime(entry.header().mtime().unwrap_or(0));
        if kind.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            builder.append_data(&mut header, format!("{name}/"), std::io::empty())?;
        } else if kind.is_file() {
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut content)?;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(content.len() as u64);
            builder.append_data(&mut header, name, content.as_slice())?;
        }
    }
    builder.into_inner()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::executor::{CollectedOutput, RunStatus};

    fn compile(bytes: usize) -> CachedCompile {
        CachedCompile {
            phase: PhaseOutcome {
                status: RunStatus::Success,
                exit_code: Some(0),
                signal: None,
                output: CollectedOutput {
                    stdout: Vec::new(),
                    stderr: b"warning".to_vec(),
                    truncated: false,
                },
                duration: Duration::from_millis(120),
                cut_short: false,
                from_cache: false,
            },
            work_dir: Some(Bytes::from(vec![0; bytes])),
        }
    }

    fn bounds(max_entries: usize, max_bytes: usize) -> CacheBounds {
        CacheBounds {
            max_entries,
            max_bytes,
            max_entry_bytes: max_bytes,
        }
    }

    #[test]
    fn a_hit_returns_what_was_kept_and_counts() {
        let cache = CompileCache::new(bounds(4, 1 << 20));
        assert!(cache.get(&[1; 32]).is_none());
        cache.insert([1; 32], compile(100));
        let hit = cache.get(&[1; 32]).unwrap();
        assert_eq!(hit.phase.output.stderr, b"warning");
        assert_eq!(hit.phase.duration, Duration::from_millis(120));
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.entries), (1, 1, 1));
    }

    #[test]
    fn the_least_recently_used_goes_first_and_bounds_hold() {
        let cache = CompileCache::new(bounds(2, 1 << 20));
        cache.insert([1; 32], compile(10));
        cache.insert([2; 32], compile(10));
        cache.get(&[1; 32]);
        cache.insert([3; 32], compile(10));
        assert!(cache.get(&[1; 32]).is_some());
        assert!(
            cache.get(&[2; 32]).is_none(),
            "the least recently used stays"
        );
        assert_eq!(cache.stats().entries, 2);
        assert_eq!(cache.stats().evictions, 1);

        // By bytes: a third entry that does not fit pushes the oldest out.
        let cache = CompileCache::new(bounds(100, 3000));
        cache.insert([1; 32], compile(1000));
        cache.insert([2; 32], compile(1000));
        cache.insert([3; 32], compile(1000));
        let stats = cache.stats();
        assert!(stats.bytes <= 3000, "{stats:?}");
        assert_eq!(stats.entries, 2);
        // Larger than the whole cache: not kept.
        cache.insert([4; 32], compile(5000));
        assert!(cache.get(&[4; 32]).is_none());
    }

    #[test]
    fn only_files_and_directories_with_safe_names_are_repacked() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut add = |name: &str, kind: tar::EntryType, mode: u32, data: &[u8]| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            header.set_mode(mode);
            header.set_size(data.len() as u64);
            builder.append_data(&mut header, name, data).unwrap();
        };
        add("./", tar::EntryType::Directory, 0o700, b"");
        add("./main", tar::EntryType::Regular, 0o4755, b"ELF");
        add("./dir/", tar::EntryType::Directory, 0o755, b"");
        add("./dir/a.class", tar::EntryType::Regular, 0o644, b"CAFE");
        add("./fifo", tar::EntryType::Fifo, 0o644, b"");
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        builder
            .append_link(&mut link, "./passwd", "/etc/passwd")
            .unwrap();
        let repacked = repack_checked(&builder.into_inner().unwrap()).unwrap();
        let mut names = Vec::new();
        for entry in tar::Archive::new(repacked.as_slice()).entries().unwrap() {
            let entry = entry.unwrap();
            names.push((
                entry.path().unwrap().to_string_lossy().into_owned(),
                entry.header().mode().unwrap(),
            ));
        }
        assert_eq!(
            names,
            vec![
                ("main".to_owned(), 0o755),
                ("dir/".to_owned(), 0o755),
                ("dir/a.class".to_owned(), 0o644),
            ]
        );
    }
}
