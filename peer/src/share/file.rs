//! One shared file: what identifies its version on disk ([`Stamp`]), its hash
//! and outline, and opening it for serving only while it is still the version
//! that was hashed.
//!
//! Every open of a shared path ([`open_regular`]) is non-blocking and does not
//! follow a symlink, and checks the file type on the open descriptor (fstat):
//! a FIFO or device swapped in for a shared file after the scan would
//! otherwise block the opening thread forever (a FIFO's open waits for a
//! writer) or be read as if it were the file.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sbcftp_api::{ContentHash, FileEntry, FileName};
use serde::{Deserialize, Serialize};

use crate::transfer::outline::Outline;

/// What identifies a file's version on disk: if any of these change, it is re-hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds part of the modification time.
    pub mtime_nsec: i64,
    pub dev: u64,
    pub ino: u64,
}

impl Stamp {
    /// The stamp of a file's metadata.
    pub fn of(m: &std::fs::Metadata) -> Self {
        Stamp {
            size: m.len(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            dev: m.dev(),
            ino: m.ino(),
        }
    }

    /// The modification time; `None` before the epoch (treated as long ago).
    pub fn modified(&self) -> Option<SystemTime> {
        let secs = u64::try_from(self.mtime).ok()?;
        let nanos = u32::try_from(self.mtime_nsec).unwrap_or(0);
        UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
    }
}

/// Opens `path` for reading without blocking and without following a
/// symlink in its last component, and checks on the descriptor that it is a
/// regular file. `Ok(None)` when it is gone, a symlink, or not a regular file.
///
/// `O_NONBLOCK` makes opening a FIFO or a device return at once; it changes
/// nothing for reads of a regular file.
pub fn open_regular(path: &Path) -> io::Result<Option<(File, Metadata)>> {
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path);
    let file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // O_NOFOLLOW on a symlink fails with ELOOP.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(None);
    }
    Ok(Some((file, meta)))
}

/// One shared file.
#[derive(Debug)]
pub struct SharedFile {
    /// Its name in the share folder.
    pub name: FileName,
    /// The path opened to serve it (a symlink's target, resolved at scan time).
    pub path: PathBuf,
    /// Size, mtime and inode it was hashed with.
    pub stamp: Stamp,
    pub hash: ContentHash,
    pub outline: Outline,
}

impl SharedFile {
    /// This file's content under `name` at `path` (the same file renamed,
    /// hard-linked, or found in the cache): no re-hashing.
    pub fn renamed(self: &Arc<Self>, name: &FileName, path: &Path) -> Arc<SharedFile> {
        if self.name == *name && self.path == path {
            return Arc::clone(self);
        }
        Arc::new(SharedFile {
            name: name.clone(),
            path: path.to_path_buf(),
            stamp: self.stamp,
            hash: self.hash,
            outline: self.outline.clone(),
        })
    }

    /// The tracker's view of this file.
    pub fn entry(&self) -> FileEntry {
        FileEntry {
            name: self.name.clone(),
            size: self.stamp.size,
            hash: self.hash,
        }
    }

    /// Opens the file for serving and checks it is still the version that was
    /// hashed. `Ok(None)` when it changed, vanished, or is no longer a
    /// regular file (the caller answers UNAVAILABLE and asks for a rescan).
    pub fn open_checked(&self) -> io::Result<Option<File>> {
        Ok(open_regular(&self.path)?
            .filter(|(_, m)| Stamp::of(m) == self.stamp)
            .map(|(f, _)| f))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A FIFO, a symlink or a folder where a shared file was is refused at
    /// once (a blocking open of a FIFO would wait for a writer for ever).
    #[test]
    fn only_regular_files_open_and_nothing_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"data").unwrap();
        let (_, meta) = open_regular(&file).unwrap().unwrap();
        assert_eq!(meta.len(), 4);

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(open_regular(&link).unwrap().is_none());
        assert!(open_regular(dir.path()).unwrap().is_none());
        assert!(open_regular(&dir.path().join("missing")).unwrap().is_none());

        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            assert!(open_regular(&fifo).unwrap().is_none());
            // A shared file replaced by a FIFO: refused, not waited on.
            std::fs::remove_file(&file).unwrap();
            std::fs::rename(&fifo, &file).unwrap();
            let shared = SharedFile {
                name: FileName::new("f").unwrap(),
                path: file.clone(),
                stamp: Stamp::of(&meta),
                hash: sbcftp_api::ContentHash::from_bytes(*blake3::hash(b"data").as_bytes()),
                outline: crate::transfer::outline::Outline::verified(
                    4,
                    vec![*blake3::hash(b"data").as_bytes()],
                    &sbcftp_api::ContentHash::from_bytes(*blake3::hash(b"data").as_bytes()),
                )
                .unwrap(),
            };
            assert!(shared.open_checked().unwrap().is_none());
        }
    }
}
