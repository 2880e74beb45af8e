//! The part file: where a download is assembled, next to its final name, as
//! `.<name>.<hash8>.sbcftp-part` (the share scan never shares such a file).
//!
//! Its life: [`open`](PartFile::open) creates or reopens it and locks it, so
//! a second download of the same content into the same folder is refused
//! instead of truncating the first one's work;
//! [`verify_prefix`](PartFile::verify_prefix) re-verifies what an earlier run
//! left (cheap: hashing is faster than the disk) and cuts it back to its last
//! good block; verified blocks are [written](PartFile::write_at) into it; and
//! [`finish`](PartFile::finish) syncs it and gives it its final name without
//! replacing a file that is already there. Only verified blocks are ever
//! written, so whatever a failure leaves behind is a verified prefix that the
//! next run resumes from.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sbcftp_api::{ContentHash, FileName};

use super::error::LocalError;
use super::outline::{self, Outline};

/// Suffix of a download in progress; such files are never shared.
pub const PART_SUFFIX: &str = ".sbcftp-part";

/// Part file name for a content saved as `name`: the name (cut to 200 bytes),
/// the hash's first 8 hex digits, and [`PART_SUFFIX`], as a dotfile.
pub fn part_name(name: &str, hash: &ContentHash) -> String {
    let mut short = String::new();
    for c in name.chars() {
        if short.len() + c.len_utf8() > 200 {
            break;
        }
        short.push(c);
    }
    format!(".{short}.{}{PART_SUFFIX}", &hash.to_string()[..8])
}

/// An open, locked part file.
#[derive(Debug)]
pub struct PartFile {
    file: File,
    path: PathBuf,
}

impl PartFile {
    /// Opens (creating it if needed) the part file for content `hash` saved as
    /// `name` in `dir`, and locks it. Its bytes are not trusted until
    /// [`verify_prefix`](PartFile::verify_prefix).
    pub fn open(dir: &Path, name: &FileName, hash: &ContentHash) -> Result<Self, LocalError> {
        let path = dir.join(part_name(name, hash));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(LocalError::io(format!("cannot open {}", path.display())))?;
        // One download per part file: a second `get` of the same content into
        // the same folder would truncate what the first one is writing.
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LocalError::Busy {
                    part: path.display().to_string(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                tracing::debug!("cannot lock {}: {e}", path.display());
            }
        }
        Ok(PartFile { file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file holds no byte at all.
    pub fn is_empty(&self) -> bool {
        self.file.metadata().is_ok_and(|m| m.len() == 0)
    }

    /// Re-verifies the bytes already in the file, block by block, against
    /// `outline`, and cuts the file back to the end of its last good block.
    /// Returns the length of the verified prefix.
    pub fn verify_prefix(&mut self, outline: &Outline) -> Result<u64, LocalError> {
        let what = || format!("cannot read {}", self.path.display());
        let have = self.file.metadata().map_err(LocalError::io(what()))?.len();
        let mut good = 0u64;
        if have > 0 {
            let bs = usize::try_from(outline::block_size(outline.size())).unwrap_or(usize::MAX);
            let mut buf = vec![0u8; bs.min(usize::try_from(have).unwrap_or(bs))];
            for i in 0..outline.block_count() {
                let (start, end) = outline.block_range(i);
                if end > have {
                    break;
                }
                let len = usize::try_from(end - start).unwrap_or(usize::MAX);
                if buf.len() < len {
                    buf.resize(len, 0);
                }
                self.file
                    .read_exact_at(&mut buf[..len], start)
                    .map_err(LocalError::io(what()))?;
                if !outline.verify_block(i, &buf[..len]) {
                    break;
                }
                good = end;
            }
        }
        if have != good {
            self.file.set_len(good).map_err(LocalError::io(format!(
                "cannot truncate {}",
                self.path.display()
            )))?;
        }
        Ok(good)
    }

    /// Writes a verified block that starts at byte `start`.
    pub fn write_at(&self, start: u64, data: &[u8]) -> Result<(), LocalError> {
        self.file
            .write_all_at(data, start)
            .map_err(LocalError::io(format!(
                "cannot write {}",
                self.path.display()
            )))
    }

    /// Gives the complete part file (`size` bytes) its final name: syncs it,
    /// then links it to `final_path` without replacing an existing file
    /// (unless `force`), removes the part name and syncs the folder. On
    /// [`LocalError::Exists`] the part file is kept.
    pub fn finish(self, final_path: &Path, size: u64, force: bool) -> Result<(), LocalError> {
        let what = format!("cannot finish {}", final_path.display());
        let exists = || LocalError::Exists {
            path: final_path.display().to_string(),
        };
        self.file.set_len(size).map_err(LocalError::io(&what))?;
        self.file.sync_all().map_err(LocalError::io(&what))?;
        if force {
            std::fs::rename(&self.path, final_path).map_err(LocalError::io(&what))?;
        } else {
            // A hard link never replaces an existing file, so a file that
            // appeared meanwhile is not overwritten.
            match std::fs::hard_link(&self.path, final_path) {
                Ok(()) => std::fs::remove_file(&self.path).map_err(LocalError::io(&what))?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(exists()),
                Err(_) => {
                    // Filesystems without hard links: check, then rename.
                    if final_path.symlink_metadata().is_ok() {
                        return Err(exists());
                    }
                    std::fs::rename(&self.path, final_path).map_err(LocalError::io(&what))?;
                }
            }
        }
        if let Some(d) = final_path.parent().and_then(|dir| File::open(dir).ok()) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Closes and deletes the part file (nothing worth keeping was written).
    pub fn remove(self) {
        let PartFile { file, path } = self;
        drop(file);
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write;

    const MIB: usize = 1 << 20;

    fn name(n: &str) -> FileName {
        FileName::new(n).unwrap()
    }

    /// A content of `len` bytes, its hash and outline.
    fn content(len: usize) -> (Vec<u8>, ContentHash, Outline) {
        let data: Vec<u8> = (0..len).map(|i| (i * 131 % 251) as u8).collect();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&data).unwrap();
        let (hash, outline) = outline::hash_file(&f, len as u64, &|_| {}).unwrap();
        (data, hash, outline)
    }

    #[test]
    fn names_are_dotfiles_cut_on_a_char_boundary() {
        let hash = ContentHash::from_bytes(*blake3::hash(b"x").as_bytes());
        let hex8 = &blake3::hash(b"x").to_hex()[..8];
        assert_eq!(
            part_name("a.txt", &hash),
            format!(".a.txt.{hex8}.sbcftp-part")
        );
        let long = "é".repeat(150); // 300 bytes
        let name = part_name(&long, &hash);
        assert_eq!(name, format!(".{}.{hex8}.sbcftp-part", "é".repeat(100)));
    }

    #[test]
    fn one_download_per_part_file() {
        let dir = tempfile::tempdir().unwrap();
        let (_, hash, _) = content(10);
        let first = PartFile::open(dir.path(), &name("f"), &hash).unwrap();
        assert!(first.path().starts_with(dir.path()));
        assert!(first.is_empty());
        match PartFile::open(dir.path(), &name("f"), &hash) {
            Err(LocalError::Busy { part }) => assert!(part.ends_with(".sbcftp-part"), "{part}"),
            other => panic!("{other:?}"),
        }
        // Another name is another part file.
        PartFile::open(dir.path(), &name("g"), &hash).unwrap();
        drop(first);
        let again = PartFile::open(dir.path(), &name("f"), &hash).unwrap();
        let path = again.path().to_owned();
        again.remove();
        assert!(!path.exists());
    }

    #[test]
    fn the_prefix_is_cut_back_to_the_last_good_block() {
        let dir = tempfile::tempdir().unwrap();
        let (data, hash, outline) = content(4 * MIB + 7);
        let mut part = PartFile::open(dir.path(), &name("f"), &hash).unwrap();
        assert_eq!(part.verify_prefix(&outline).unwrap(), 0);

        // Two good blocks, a third with one byte flipped, and half a fourth.
        let mut bytes = data[..3 * MIB + MIB / 2].to_vec();
        bytes[2 * MIB + 5] ^= 1;
        part.write_at(0, &bytes).unwrap();
        assert_eq!(part.verify_prefix(&outline).unwrap(), 2 * MIB as u64);
        assert_eq!(std::fs::read(part.path()).unwrap(), &data[..2 * MIB]);

        // Half a block past a good prefix is cut off too.
        part.write_at(2 * MIB as u64, &data[2 * MIB..2 * MIB + 10])
            .unwrap();
        assert_eq!(part.verify_prefix(&outline).unwrap(), 2 * MIB as u64);

        // The whole content, including the short last block, verifies.
        part.write_at(0, &data).unwrap();
        assert_eq!(part.verify_prefix(&outline).unwrap(), data.len() as u64);

        // Garbage in the first block: nothing is kept.
        part.write_at(0, b"garbage").unwrap();
        assert_eq!(part.verify_prefix(&outline).unwrap(), 0);
        assert!(part.is_empty());
    }

    #[test]
    fn finish_links_without_overwriting() {
        let dir = tempfile::tempdir().unwrap();
        let (data, hash, outline) = content(MIB + 3);
        let done = |dir: &Path| {
            let mut part = PartFile::open(dir, &name("f"), &hash).unwrap();
            part.write_at(0, &data).unwrap();
            assert_eq!(part.verify_prefix(&outline).unwrap(), data.len() as u64);
            part
        };
        let final_path = dir.path().join("f");

        // Free name: the part file becomes the file.
        let part = done(dir.path());
        let part_path = part.path().to_owned();
        part.finish(&final_path, data.len() as u64, false).unwrap();
        assert_eq!(std::fs::read(&final_path).unwrap(), data);
        assert!(!part_path.exists());

        // A file appeared under the name: it is not touched, the part is kept.
        std::fs::write(&final_path, b"mine").unwrap();
        let part = done(dir.path());
        match part.finish(&final_path, data.len() as u64, false) {
            Err(LocalError::Exists { path }) => assert_eq!(path, final_path.display().to_string()),
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read(&final_path).unwrap(), b"mine");
        assert_eq!(std::fs::read(&part_path).unwrap(), data);

        // With force it is replaced.
        let part = done(dir.path());
        part.finish(&final_path, data.len() as u64, true).unwrap();
        assert_eq!(std::fs::read(&final_path).unwrap(), data);
        assert!(!part_path.exists());
    }

    #[test]
    fn an_empty_content_finishes_as_an_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let (_, hash, outline) = content(0);
        let mut part = PartFile::open(dir.path(), &name("empty"), &hash).unwrap();
        assert_eq!(part.verify_prefix(&outline).unwrap(), 0);
        let final_path = dir.path().join("empty");
        part.finish(&final_path, 0, false).unwrap();
        assert_eq!(std::fs::read(&final_path).unwrap(), b"");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
