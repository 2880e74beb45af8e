//! One shared file: what identifies its version on disk ([`Stamp`]), its hash
//! and outline, and opening it for serving only while it is still the version
//! that was hashed.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use sbcftp_api::{ContentHash, FileEntry, FileName};
use serde::{Deserialize, Serialize};

use crate::transfer::outline::Outline;

/// What identifies a file's version on disk: if any of these change, it is re-hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The tracker's view of this file.
    pub fn entry(&self) -> FileEntry {
        FileEntry {
            name: self.name.clone(),
            size: self.stamp.size,
            hash: self.hash,
        }
    }

    /// Opens the file for serving and checks it is still the version that was
    /// hashed. `Ok(None)` when it changed or vanished (the caller answers
    /// UNAVAILABLE and asks for a rescan).
    pub fn open_checked(&self) -> io::Result<Option<File>> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let m = file.metadata()?;
        if !m.is_file() || Stamp::of(&m) != self.stamp {
            return Ok(None);
        }
        Ok(Some(file))
    }
}
