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
//! Looking at the folder is three steps, so that hashing never holds anything
//! else up:
//!
//! 1. a survey ([`Share::survey`], blocking, stat only): every entry is
//!    classified, and a file whose size, mtime and inode ([`Stamp`]) match a
//!    file already known (in the index under any name, so a rename re-hashes
//!    nothing; just hashed; or in the on-disk cache, `cache.rs`) is known at
//!    once, the rest are candidates for hashing;
//! 2. hashing one candidate ([`Share::hash`], blocking) with
//!    [`hash_file_with`](crate::transfer::outline::hash_file_with), which
//!    reports progress and can be paced or stopped;
//! 3. publishing ([`Share::publish`]) the known files as the new index, which
//!    the server reads and the tracker keeper watches ([`Share::subscribe`]).
//!
//! [`live`] runs these as the folder changes (watched, debounced, a file
//! announced only once it is stable, hashing on its own threads);
//! [`Share::scan`] runs them once, to completion.
//!
//! The server looks contents up by hash only ([`Share::lookup`]); a path never
//! comes from the wire. Before serving it re-checks that the file still has
//! the stamp it was hashed with ([`SharedFile::open_checked`]). A hash that
//! was shared a moment ago and changed is answered "unavailable", not "not
//! found" ([`Lookup::Retired`]).

mod cache;
mod file;
pub mod live;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use sbcftp_api::{ContentHash, FileEntry, FileName};
use tokio::sync::watch;
use tracing::{debug, info, warn};

pub use self::file::{SharedFile, Stamp, open_regular};
use crate::transfer::outline;
use crate::transfer::part::PART_SUFFIX;

/// Show a hashing progress bar (and progress in the log) for at least this
/// many bytes.
const PROGRESS_THRESHOLD: u64 = 256 << 20;

/// How long a hash that stopped being shared is answered "unavailable"
/// rather than "not found", and how many such hashes are remembered.
const RETIRED_FOR: Duration = Duration::from_secs(600);
const RETIRED_MAX: usize = 4096;

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

    /// How many files the call that made this index had to hash (the others
    /// came from the previous index or the cache).
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

    /// Whether `self` serves exactly what `other` serves (same names, paths,
    /// stamps and hashes) and skips the same entries.
    fn same_as(&self, other: &ShareIndex) -> bool {
        self.skipped == other.skipped
            && self.by_name.len() == other.by_name.len()
            && self
                .by_name
                .iter()
                .zip(&other.by_name)
                .all(|((n, a), (m, b))| {
                    n == m
                        && (Arc::ptr_eq(a, b)
                            || (a.stamp == b.stamp && a.path == b.path && a.hash == b.hash))
                })
    }
}

/// A file that needs hashing: its name, the path to open, and the stamp it
/// had when the survey saw it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub name: FileName,
    pub path: PathBuf,
    pub stamp: Stamp,
}

/// What a survey found under one name.
#[derive(Debug, Clone)]
pub enum Seen {
    /// A file whose hash is known.
    Known(Arc<SharedFile>),
    /// A file that needs hashing.
    Unknown(Candidate),
}

/// What a survey of the folder found.
#[derive(Debug, Default)]
pub struct Survey {
    /// Every shareable entry, by name.
    pub files: BTreeMap<FileName, Seen>,
    /// Why other entries are not shared, one line each.
    pub skipped: BTreeSet<String>,
}

/// What the server finds for a requested hash.
#[derive(Debug)]
pub enum Lookup {
    /// Shared: this file.
    Shared(Arc<SharedFile>),
    /// Shared a moment ago, but the file changed or went away.
    Retired,
    /// Not shared here.
    Unknown,
}

/// Why a candidate was not hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// It is gone, or no longer a regular file.
    #[error("gone")]
    Gone,
    /// It changed before or while it was hashed.
    #[error("changed while it was hashed")]
    Changed,
    /// It could not be read (or hashing was stopped).
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The share folder and its current index.
#[derive(Debug)]
pub struct Share {
    dir: PathBuf,
    cache_dir: PathBuf,
    index: watch::Sender<Arc<ShareIndex>>,
    /// Hashes no longer shared, and since when.
    retired: Mutex<HashMap<ContentHash, Instant>>,
    /// Whether a survey has run (the first one reads the on-disk cache).
    surveyed: AtomicBool,
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
            index: watch::Sender::new(Arc::new(ShareIndex::default())),
            retired: Mutex::new(HashMap::new()),
            surveyed: AtomicBool::new(false),
        })
    }

    /// The share folder (canonical).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the hash cache is kept.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// The current index.
    pub fn index(&self) -> Arc<ShareIndex> {
        Arc::clone(&self.index.borrow())
    }

    /// A receiver that sees every new index.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ShareIndex>> {
        self.index.subscribe()
    }

    /// What is shared under `hash` (see [`Lookup`]).
    pub fn lookup(&self, hash: &ContentHash) -> Lookup {
        if let Some(f) = self.index.borrow().by_hash(hash) {
            return Lookup::Shared(Arc::clone(f));
        }
        let retired = self.lock_retired();
        match retired.get(hash) {
            Some(at) if at.elapsed() < RETIRED_FOR => Lookup::Retired,
            _ => Lookup::Unknown,
        }
    }

    fn lock_retired(&self) -> std::sync::MutexGuard<'_, HashMap<ContentHash, Instant>> {
        self.retired.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks at every entry of the folder (blocking, stat only). Files whose
    /// stamp matches a known file are [`Seen::Known`]; `hashed` adds files
    /// hashed since the index was last published.
    pub fn survey(&self, hashed: &HashMap<Stamp, Arc<SharedFile>>) -> io::Result<Survey> {
        let old = self.index();
        let mut cache = if self.surveyed.swap(true, Ordering::Relaxed) {
            HashMap::new()
        } else {
            cache::load(&self.cache_dir)
        };
        // Any known file by stamp: a renamed file keeps its hash.
        let mut by_stamp: HashMap<Stamp, &Arc<SharedFile>> =
            old.files().map(|f| (f.stamp, f)).collect();
        by_stamp.extend(hashed.iter().map(|(s, f)| (*s, f)));

        let mut survey = Survey::default();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let raw_name = entry.file_name();
            let Some(name) = raw_name.to_str().map(str::to_owned) else {
                survey
                    .skipped
                    .insert(format!("{raw_name:?}: name is not UTF-8"));
                continue;
            };
            let path = entry.path();
            if path == self.cache_dir || name.ends_with(PART_SUFFIX) {
                continue;
            }
            let (name, real, stamp) = match self.classify(&name, &path) {
                Ok(x) => x,
                Err(why) => {
                    survey.skipped.insert(format!("{name:?}: {why}"));
                    continue;
                }
            };
            let seen = if let Some(f) = old
                .by_name
                .get(&name)
                .filter(|f| f.stamp == stamp && f.path == real)
            {
                Seen::Known(Arc::clone(f))
            } else if let Some(f) = by_stamp.get(&stamp) {
                Seen::Known(f.renamed(&name, &real))
            } else if let Some(f) = cache.remove(&name).filter(|f| f.stamp == stamp) {
                Seen::Known(Arc::new(f).renamed(&name, &real))
            } else {
                Seen::Unknown(Candidate {
                    name: name.clone(),
                    path: real,
                    stamp,
                })
            };
            survey.files.insert(name, seen);
        }
        Ok(survey)
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

    /// Hashes one candidate (blocking). `progress` is called with each
    /// block's byte count; an error from it stops the hashing and is
    /// returned. The file must still have the candidate's stamp before and
    /// after, else [`HashError::Changed`].
    pub fn hash(
        &self,
        c: &Candidate,
        progress: &(dyn Fn(u64) -> io::Result<()> + Sync),
    ) -> Result<SharedFile, HashError> {
        let Some((file, meta)) = open_regular(&c.path)? else {
            return Err(HashError::Gone);
        };
        if Stamp::of(&meta) != c.stamp {
            return Err(HashError::Changed);
        }
        let hashed = outline::hash_file_with(&file, c.stamp.size, progress);
        // The file may have changed while it was hashed (a short read is
        // one way to notice): then it is hashed again once it is stable.
        if Stamp::of(&file.metadata()?) != c.stamp {
            return Err(HashError::Changed);
        }
        let (hash, outline) = hashed?;
        debug!("hashed {:?}: {hash}", c.name);
        Ok(SharedFile {
            name: c.name.clone(),
            path: c.path.clone(),
            stamp: c.stamp,
            hash,
            outline,
        })
    }

    /// Makes `files` the index (with `skipped` and `hashed` as its notes),
    /// unless it serves exactly what the current index does. Returns the
    /// index built, and whether it replaced the current one (only then are
    /// subscribers told).
    pub fn publish(
        &self,
        files: impl IntoIterator<Item = Arc<SharedFile>>,
        skipped: BTreeSet<String>,
        hashed: usize,
    ) -> (Arc<ShareIndex>, bool) {
        let mut index = ShareIndex {
            skipped,
            hashed,
            ..ShareIndex::default()
        };
        for f in files {
            index
                .by_hash
                .entry(f.hash)
                .or_insert_with(|| Arc::clone(&f));
            index.by_name.insert(f.name.clone(), f);
        }
        let old = self.index();
        if index.same_as(&old) {
            return (Arc::new(index), false);
        }
        for s in index.skipped.difference(&old.skipped) {
            info!(share = %self.dir.display(), "not sharing {s}");
        }
        {
            let now = Instant::now();
            let mut retired = self.lock_retired();
            for h in old
                .by_hash
                .keys()
                .filter(|h| !index.by_hash.contains_key(*h))
            {
                retired.insert(*h, now);
            }
            retired.retain(|h, at| at.elapsed() < RETIRED_FOR && !index.by_hash.contains_key(h));
            if retired.len() > RETIRED_MAX {
                let mut by_age: Vec<(ContentHash, Instant)> =
                    retired.iter().map(|(h, t)| (*h, *t)).collect();
                by_age.sort_by_key(|(_, t)| std::cmp::Reverse(*t));
                *retired = by_age.into_iter().take(RETIRED_MAX).collect();
            }
        }
        let index = Arc::new(index);
        self.index.send_replace(Arc::clone(&index));
        (index, true)
    }

    /// Writes the hash cache for the current index (blocking).
    pub fn save_cache(&self) -> io::Result<()> {
        cache::save(&self.cache_dir, &self.index())
    }

    /// Surveys, hashes every candidate (in parallel, with a progress bar on a
    /// terminal when there is much to hash) and publishes the result, all at
    /// once (blocking; [`live`] is the incremental way). Returns the new
    /// index and the previous one.
    pub fn scan(&self) -> io::Result<(Arc<ShareIndex>, Arc<ShareIndex>)> {
        let old = self.index();
        let first = !self.surveyed.load(Ordering::Relaxed);
        let survey = self.survey(&HashMap::new())?;
        let mut skipped = survey.skipped;
        let mut files = Vec::with_capacity(survey.files.len());
        let mut todo = Vec::new();
        for seen in survey.files.into_values() {
            match seen {
                Seen::Known(f) => files.push(f),
                Seen::Unknown(c) => todo.push(c),
            }
        }
        let hashed = self.hash_all(todo, &mut skipped);
        let n = hashed.len();
        files.extend(hashed);
        let (index, changed) = self.publish(files, skipped, n);
        if (changed || first)
            && let Err(e) = self.save_cache()
        {
            warn!(cache = %self.cache_dir.display(), "could not write the hash cache: {e}");
        }
        Ok((index, old))
    }

    /// Hashes the candidates in parallel; files that cannot be hashed are skipped.
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
            "hashing {} file(s), {}",
            todo.len(),
            crate::ui::human_bytes(total)
        );
        let bar = (total >= PROGRESS_THRESHOLD).then(|| crate::ui::byte_bar(total, "hashing"));
        let done = AtomicU64::new(0);
        let started = Instant::now();
        let progress = |n: u64| {
            done.fetch_add(n, Ordering::Relaxed);
            if let Some(b) = &bar {
                b.inc(n);
            }
            Ok(())
        };
        let results: Vec<(FileName, Result<SharedFile, HashError>)> = todo
            .into_par_iter()
            .map(|c| (c.name.clone(), self.hash(&c, &progress)))
            .collect();
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        let secs = started.elapsed().as_secs_f64();
        let bytes = done.load(Ordering::Relaxed);
        info!("hashed {} in {secs:.2}s", crate::ui::human_bytes(bytes));
        let mut out = Vec::new();
        for (name, r) in results {
            match r {
                Ok(f) => out.push(Arc::new(f)),
                Err(HashError::Gone) => {}
                Err(e) => {
                    let why = format!("{name:?}: cannot hash: {e}");
                    warn!("not sharing {why}");
                    skipped.insert(why);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
