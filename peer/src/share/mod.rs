//! The share folder: which files are shared, their hashes and outlines, and the
//! hash cache that makes a restart re-hash nothing unchanged.
//!
//! Only regular files directly in the folder are shared, under their file name
//! (one path component: a [`FileName`]).
//! Subfolders, special files (FIFOs, sockets, devices), names that are not
//! UTF-8, and symlinks that lead outside the folder or to anything but a
//! regular file are skipped with a log line. A symlink to a regular file inside
//! the folder is shared under the link's name.
//!
//! Scanning is blocking work (call it from `spawn_blocking`): it stats every
//! entry, reuses the hash of any file whose size, mtime and inode match the
//! previous scan or the on-disk cache (`cache.rs`: `<cache dir>/hashes.json`,
//! written atomically), and hashes the rest in parallel with
//! [`hash_file`](crate::transfer::outline::hash_file), showing a progress bar
//! on a terminal when there is much to hash.
//!
//! The server looks contents up by hash only ([`ShareIndex::by_hash`]); a
//! path never comes from the wire. Before serving it re-checks that the file
//! still has the size, mtime and inode it was hashed with ([`SharedFile::open_checked`]).

mod cache;
mod file;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rayon::prelude::*;
use sbcftp_api::{ContentHash, FileEntry, FileName};
use tracing::{debug, info, warn};

pub use self::file::{SharedFile, Stamp};
use crate::transfer::outline;
use crate::transfer::part::PART_SUFFIX;

/// Show a hashing progress bar when at least this many bytes must be hashed.
const PROGRESS_THRESHOLD: u64 = 256 << 20;

/// A snapshot of the shared files.
#[derive(Debug, Default)]
pub struct ShareIndex {
    by_name: BTreeMap<FileName, Arc<SharedFile>>,
    by_hash: HashMap<ContentHash, Arc<SharedFile>>,
    skipped: BTreeSet<String>,
    hashed: usize,
}

impl ShareIndex {
    /// The file with this content, if shared.
    pub fn by_hash(&self, hash: &ContentHash) -> Option<&Arc<SharedFile>> {
        self.by_hash.get(hash)
    }

    /// Shared files, by name.
    pub fn files(&self) -> impl Iterator<Item = &Arc<SharedFile>> {
        self.by_name.values()
    }

    /// How many files the scan that made this index had to hash (the others
    /// came from the previous scan or the cache).
    pub fn hashed(&self) -> usize {
        self.hashed
    }

    /// Why entries of the folder are not shared, one line each.
    pub fn skipped(&self) -> impl Iterator<Item = &String> {
        self.skipped.iter()
    }

    /// Number of shared files.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether nothing is shared.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The file list as the tracker wants it.
    pub fn entries(&self) -> Vec<FileEntry> {
        self.files().map(|f| f.entry()).collect()
    }

    /// What changed from `old` to `self`: entries to add (new or changed) and
    /// names to remove.
    pub fn diff(&self, old: &ShareIndex) -> (Vec<FileEntry>, Vec<FileName>) {
        let add = self
            .by_name
            .iter()
            .filter(|(name, f)| {
                old.by_name
                    .get(*name)
                    .is_none_or(|o| o.hash != f.hash || o.stamp.size != f.stamp.size)
            })
            .map(|(_, f)| f.entry())
            .collect();
        let remove = old
            .by_name
            .keys()
            .filter(|n| !self.by_name.contains_key(*n))
            .cloned()
            .collect();
        (add, remove)
    }
}

/// The share folder and its current index.
#[derive(Debug)]
pub struct Share {
    dir: PathBuf,
    cache_dir: PathBuf,
    index: RwLock<Arc<ShareIndex>>,
}

/// A file that needs hashing.
struct Candidate {
    name: FileName,
    path: PathBuf,
    stamp: Stamp,
}

impl Share {
    /// A share of `dir` (which must exist and be a folder), caching hashes in
    /// `cache_dir` (default `<dir>/.sbcftp`). Nothing is scanned yet.
    pub fn new(dir: &Path, cache_dir: Option<&Path>) -> io::Result<Self> {
        let dir = dir.canonicalize().map_err(|e| {
            io::Error::new(e.kind(), format!("share folder {}: {e}", dir.display()))
        })?;
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("share folder {} is not a folder", dir.display()),
            ));
        }
        let cache_dir = cache_dir.map_or_else(|| dir.join(".sbcftp"), Path::to_path_buf);
        Ok(Share {
            dir,
            cache_dir,
            index: RwLock::new(Arc::new(ShareIndex::default())),
        })
    }

    /// The share folder (canonical).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current index.
    pub fn index(&self) -> Arc<ShareIndex> {
        match self.index.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Rescans the folder (blocking): returns the new index and the previous one.
    pub fn scan(&self) -> io::Result<(Arc<ShareIndex>, Arc<ShareIndex>)> {
        let old = self.index();
        let first = old.is_empty() && old.skipped.is_empty();
        let cache = if first {
            cache::load(&self.cache_dir)
        } else {
            HashMap::new()
        };

        let mut skipped = BTreeSet::new();
        let mut reused: Vec<Arc<SharedFile>> = Vec::new();
        let mut todo: Vec<Candidate> = Vec::new();
        let mut cache_dirty = false;

        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let raw_name = entry.file_name();
            let Some(name) = raw_name.to_str().map(str::to_owned) else {
                skipped.insert(format!("{raw_name:?}: name is not UTF-8"));
                continue;
            };
            let path = entry.path();
            if path == self.cache_dir || name.ends_with(PART_SUFFIX) {
                continue;
            }
            match self.classify(&name, &path) {
                Ok((name, real, stamp)) => {
                    if let Some(f) = old
                        .by_name
                        .get(&name)
                        .filter(|f| f.stamp == stamp && f.path == real)
                    {
                        reused.push(Arc::clone(f));
                    } else if let Some(f) = cache.get(&name).filter(|f| f.stamp == stamp) {
                        reused.push(Arc::new(SharedFile {
                            name,
                            path: real,
                            stamp,
                            hash: f.hash,
                            outline: f.outline.clone(),
                        }));
                    } else {
                        cache_dirty = true;
                        todo.push(Candidate {
                            name,
                            path: real,
                            stamp,
                        });
                    }
                }
                Err(why) => {
                    skipped.insert(format!("{name:?}: {why}"));
                }
            }
        }

        let hashed = self.hash_all(todo, &mut skipped);
        let mut index = ShareIndex {
            skipped,
            hashed: hashed.len(),
            ..ShareIndex::default()
        };
        for f in reused.into_iter().chain(hashed) {
            index
                .by_hash
                .entry(f.hash)
                .or_insert_with(|| Arc::clone(&f));
            index.by_name.insert(f.name.clone(), f);
        }
        if index.skipped != old.skipped {
            for s in index.skipped.difference(&old.skipped) {
                info!(share = %self.dir.display(), "not sharing {s}");
            }
        }
        if (cache_dirty || index.by_name.len() != old.by_name.len() || first)
            && let Err(e) = cache::save(&self.cache_dir, &index)
        {
            warn!(cache = %self.cache_dir.display(), "could not write the hash cache: {e}");
        }
        let index = Arc::new(index);
        match self.index.write() {
            Ok(mut g) => *g = Arc::clone(&index),
            Err(p) => *p.into_inner() = Arc::clone(&index),
        }
        Ok((index, old))
    }

    /// Decides whether `path` is shared under `name`: the name, the path to
    /// open and its stamp, or why not.
    fn classify(&self, name: &str, path: &Path) -> Result<(FileName, PathBuf, Stamp), String> {
        let lmeta = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
        let ft = lmeta.file_type();
        let (real, meta) = if ft.is_symlink() {
            let target = path
                .canonicalize()
                .map_err(|e| format!("broken symlink ({e})"))?;
            if target.parent() != Some(self.dir.as_path()) {
                return Err(format!(
                    "symlink leads outside the share folder (to {})",
                    target.display()
                ));
            }
            let meta = std::fs::metadata(&target).map_err(|e| e.to_string())?;
            if !meta.is_file() {
                return Err("symlink to something that is not a regular file".into());
            }
            (target, meta)
        } else if ft.is_dir() {
            return Err("subfolders are not shared".into());
        } else if ft.is_file() {
            (path.to_path_buf(), lmeta)
        } else {
            return Err("not a regular file".into());
        };
        let name = FileName::new(name).map_err(|e| e.to_string())?;
        if meta.len() > sbcftp_api::MAX_FILE_SIZE {
            return Err(format!(
                "{} bytes is larger than the tracker accepts",
                meta.len()
            ));
        }
        Ok((name, real, Stamp::of(&meta)))
    }

    /// Hashes the candidates in parallel; unreadable files are skipped.
    fn hash_all(
        &self,
        todo: Vec<Candidate>,
        skipped: &mut BTreeSet<String>,
    ) -> Vec<Arc<SharedFile>> {
        if todo.is_empty() {
            return Vec::new();
        }
        let total: u64 = todo.iter().map(|c| c.stamp.size).sum();
        info!(
            files = todo.len(),
            bytes = total,
            "hashing {} file(s), {}",
            todo.len(),
            crate::ui::human_bytes(total)
        );
        let bar = (total >= PROGRESS_THRESHOLD).then(|| crate::ui::byte_bar(total, "hashing"));
        let done = AtomicU64::new(0);
        let started = std::time::Instant::now();
        let results: Vec<Result<SharedFile, String>> = todo
            .into_par_iter()
            .map(|c| {
                let file =
                    File::open(&c.path).map_err(|e| format!("{:?}: cannot open: {e}", c.name))?;
                let progress = |n: u64| {
                    done.fetch_add(n, Ordering::Relaxed);
                    if let Some(b) = &bar {
                        b.inc(n);
                    }
                };
                let (hash, outline) = outline::hash_file(&file, c.stamp.size, &progress)
                    .map_err(|e| format!("{:?}: cannot hash: {e}", c.name))?;
                // The file may have changed while it was hashed; then the
                // next scan hashes it again.
                let after = file
                    .metadata()
                    .map_err(|e| format!("{:?}: cannot stat: {e}", c.name))?;
                if Stamp::of(&after) != c.stamp {
                    return Err(format!(
                        "{:?}: changed while it was hashed; retrying at the next scan",
                        c.name
                    ));
                }
                debug!(name = %c.name, hash = %hash, "hashed");
                Ok(SharedFile {
                    name: c.name,
                    path: c.path,
                    stamp: c.stamp,
                    hash,
                    outline,
                })
            })
            .collect();
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        let secs = started.elapsed().as_secs_f64();
        info!(
            bytes = done.load(Ordering::Relaxed),
            secs,
            "hashed {} in {secs:.2}s",
            crate::ui::human_bytes(done.load(Ordering::Relaxed))
        );
        let mut out = Vec::new();
        for r in results {
            match r {
                Ok(f) => out.push(Arc::new(f)),
                Err(e) => {
                    warn!("not sharing {e}");
                    skipped.insert(e);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn scan_shares_regular_files_and_caches_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let share = dir.path().join("DistShared");
        std::fs::create_dir(&share).unwrap();
        let big: Vec<u8> = (0..(3u32 << 20) + 5).map(|i| (i % 251) as u8).collect();
        std::fs::write(share.join("big.bin"), &big).unwrap();
        std::fs::write(share.join("a.txt"), b"a").unwrap();
        std::fs::create_dir(share.join("sub")).unwrap();
        std::os::unix::fs::symlink(share.join("a.txt"), share.join("link-inside")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", share.join("link-outside")).unwrap();
        std::os::unix::fs::symlink(share.join("nowhere"), share.join("broken")).unwrap();
        std::fs::write(share.join(format!(".x{PART_SUFFIX}")), b"partial").unwrap();
        let fifo_ok = std::process::Command::new("mkfifo")
            .arg(share.join("fifo"))
            .status()
            .map(|s| s.success())
            .unwrap_or(false);

        let s1 = Share::new(&share, None).unwrap();
        let (idx, _) = s1.scan().unwrap();
        let names: Vec<&str> = idx.files().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a.txt", "big.bin", "link-inside"]);
        assert_eq!(idx.hashed(), 3);
        let f = idx
            .by_hash(&ContentHash::from_bytes(*blake3::hash(&big).as_bytes()))
            .unwrap();
        assert_eq!(f.name, "big.bin");
        assert_eq!(f.outline.block_count(), 4);
        let skipped: Vec<&String> = idx.skipped().collect();
        assert!(
            skipped.iter().any(|s| s.contains("\"sub\": subfolders")),
            "{skipped:?}"
        );
        assert!(
            skipped
                .iter()
                .any(|s| s.contains("\"link-outside\": symlink leads outside")),
            "{skipped:?}"
        );
        assert!(
            skipped
                .iter()
                .any(|s| s.contains("\"broken\": broken symlink")),
            "{skipped:?}"
        );
        if fifo_ok {
            assert!(
                skipped
                    .iter()
                    .any(|s| s.contains("\"fifo\": not a regular file")),
                "{skipped:?}"
            );
        }

        // A rescan with nothing changed hashes nothing.
        let (idx2, _) = s1.scan().unwrap();
        assert_eq!(idx2.hashed(), 0);

        // A restart (a new Share on the same folder) re-hashes nothing unchanged...
        let s2 = Share::new(&share, None).unwrap();
        let (idx3, _) = s2.scan().unwrap();
        assert_eq!(idx3.hashed(), 0);
        assert_eq!(idx3.entries(), idx.entries());

        // ...but a changed file is hashed again, and the diff says so.
        std::fs::write(share.join("a.txt"), b"changed").unwrap();
        std::fs::remove_file(share.join("link-inside")).unwrap();
        let (idx4, old) = s2.scan().unwrap();
        assert_eq!(idx4.hashed(), 1);
        let (add, remove) = idx4.diff(&old);
        assert_eq!(add.len(), 1);
        assert_eq!(add[0].name, "a.txt");
        assert_eq!(
            add[0].hash.to_string(),
            blake3::hash(b"changed").to_hex().as_str()
        );
        assert_eq!(remove, ["link-inside"]);

        // The served file is re-checked: a file changed behind the index's back is refused.
        let f = idx3.files().find(|f| f.name == "a.txt").unwrap();
        assert!(f.open_checked().unwrap().is_none());
        let f = idx4.files().find(|f| f.name == "a.txt").unwrap();
        assert!(f.open_checked().unwrap().is_some());
    }
}
