//! The hash cache, `<cache dir>/hashes.json`: the hash and outline of every
//! shared file with the [`Stamp`] it was hashed at, so a restart re-hashes
//! nothing unchanged.
//!
//! It is written atomically (a temp file, synced, renamed over the old one).
//! An entry is trusted only if its outline merges to its hash; a cache that
//! cannot be read or parsed is ignored with a warning, and everything is
//! hashed again.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use sbcftp_api::{ContentHash, FileName};

use super::{ShareIndex, SharedFile, Stamp};
use crate::transfer::outline::{ChainingValue, Outline};

/// Name of the cache file inside the cache directory.
const CACHE_FILE: &str = "hashes.json";

const CACHE_VERSION: u32 = 1;

/// On-disk cache format.
#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    entries: Vec<CacheEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheEntry {
    name: FileName,
    stamp: Stamp,
    hash: ContentHash,
    /// The outline, concatenated hex CVs.
    cvs: String,
}

/// The cached files in `cache_dir`, by name (their `path` is not set).
pub(super) fn load(cache_dir: &Path) -> HashMap<FileName, SharedFile> {
    let path = cache_dir.join(CACHE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return HashMap::new(),
        Err(e) => {
            warn!(cache = %path.display(), "could not read the hash cache, re-hashing: {e}");
            return HashMap::new();
        }
    };
    let parsed: CacheFile = match serde_json::from_slice(&bytes) {
        Ok(c) => c,
        Err(e) => {
            warn!(cache = %path.display(), "hash cache is unreadable, re-hashing: {e}");
            return HashMap::new();
        }
    };
    if parsed.version != CACHE_VERSION {
        return HashMap::new();
    }
    let mut out = HashMap::new();
    for e in parsed.entries {
        if e.cvs.len() % 64 != 0 {
            continue;
        }
        let cvs: Option<Vec<ChainingValue>> = (0..e.cvs.len() / 64)
            .map(|i| e.cvs.get(i * 64..i * 64 + 64).and_then(cv_from_hex))
            .collect();
        // A cache entry is trusted only if its outline merges to its hash.
        let Some(outline) = cvs.and_then(|cvs| Outline::verified(e.stamp.size, cvs, &e.hash))
        else {
            continue;
        };
        out.insert(
            e.name.clone(),
            SharedFile {
                name: e.name,
                path: PathBuf::new(),
                stamp: e.stamp,
                hash: e.hash,
                outline,
            },
        );
    }
    debug!(entries = out.len(), "loaded the hash cache");
    out
}

fn cv_to_hex(cv: &ChainingValue) -> String {
    blake3::Hash::from_bytes(*cv).to_hex().to_string()
}

fn cv_from_hex(hex: &str) -> Option<ChainingValue> {
    blake3::Hash::from_hex(hex).ok().map(|h| *h.as_bytes())
}

/// Writes the cache for `index` into `cache_dir` (created if missing).
pub(super) fn save(cache_dir: &Path, index: &ShareIndex) -> io::Result<()> {
    std::fs::create_dir_all(cache_dir)?;
    let file = CacheFile {
        version: CACHE_VERSION,
        entries: index
            .files()
            .map(|f| CacheEntry {
                name: f.name.clone(),
                stamp: f.stamp,
                hash: f.hash,
                cvs: f.outline.cvs().iter().map(cv_to_hex).collect(),
            })
            .collect(),
    };
    let bytes = serde_json::to_vec(&file).map_err(io::Error::other)?;
    let mut tmp = tempfile::NamedTempFile::new_in(cache_dir)?;
    tmp.write_all(&bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(cache_dir.join(CACHE_FILE))
        .map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::share::Share;

    #[test]
    fn a_corrupt_cache_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"data").unwrap();
        let cache = dir.path().join("cache");
        std::fs::create_dir(&cache).unwrap();
        std::fs::write(cache.join(CACHE_FILE), b"{not json").unwrap();
        let s = Share::new(dir.path(), Some(&cache)).unwrap();
        let (idx, _) = s.scan().unwrap();
        assert_eq!(idx.hashed(), 1);
        assert_eq!(
            idx.entries()[0].hash.as_bytes(),
            blake3::hash(b"data").as_bytes()
        );
        // The rewritten cache is used next time.
        let s = Share::new(dir.path(), Some(&cache)).unwrap();
        assert_eq!(s.scan().unwrap().0.hashed(), 0);
    }
}
