//! The part file: where a download is assembled, next to its final name, as
//! `.<name>.<hash8>.sbcftp-part` (the share scan never shares such a file).
//!
//! Its life: [`open`](PartFile::open) creates or reopens it without following
//! a symbolic link, checks that it is a plain file of ours, and locks it, so a
//! link planted under that name in a shared download folder cannot redirect
//! the write, and a second download of the same content into the same folder
//! is refused instead of overwriting the first one's work;
//! [`verified_blocks`](PartFile::verified_blocks) re-verifies what an earlier
//! run left; verified blocks are [written](PartFile::write_at) into it at
//! their place, in any order; and [`finish`](PartFile::finish) syncs it and
//! gives it its final name without replacing a file that is already there.
//!
//! Only verified blocks are ever written, so whatever a failure leaves behind
//! is a set of verified blocks at their places, with holes between them (a
//! sparse file). Which blocks are there is not recorded beside the file: a
//! resumed download re-verifies the file instead, because a record could not
//! be trusted anyway (the file may have changed behind its back, or lost its
//! last writes in a crash), and checking costs little: holes are skipped
//! with `SEEK_DATA`/`SEEK_HOLE` without reading them, and the blocks that are
//! there are hashed in parallel, faster than the disk reads them (BENCHMARKS.md,
//! "Resume").

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use rustix::fs::{OFlags, SeekFrom};
use rustix::io::Errno;
use sbcftp_api::{ContentHash, FileName};

use super::error::LocalError;
use super::outline::Outline;

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
    /// `name` in `dir`, and locks it. A symbolic link, a file with other hard
    /// links, another user's file or anything but a regular file under that
    /// name is refused ([`LocalError::Unsafe`]). Its bytes are not trusted
    /// until [`verified_blocks`](PartFile::verified_blocks).
    pub fn open(dir: &Path, name: &FileName, hash: &ContentHash) -> Result<Self, LocalError> {
        let path = dir.join(part_name(name, hash));
        let unsafe_file = |why| LocalError::Unsafe {
            path: path.display().to_string(),
            why,
        };
        // O_NOFOLLOW: a symbolic link as the last component fails with ELOOP
        // instead of being followed. O_NONBLOCK: a FIFO planted there cannot
        // hang the open (and is refused below); regular files ignore it.
        let flags = OFlags::NOFOLLOW | OFlags::NONBLOCK;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(i32::try_from(flags.bits()).unwrap_or(0))
            .open(&path)
            .map_err(|e| {
                if e.raw_os_error() == Some(Errno::LOOP.raw_os_error()) {
                    unsafe_file("it is a symbolic link")
                } else {
                    LocalError::io(format!("cannot open {}", path.display()))(e)
                }
            })?;
        // What was opened, not what the path names now.
        let meta = file
            .metadata()
            .map_err(LocalError::io(format!("cannot read {}", path.display())))?;
        if !meta.file_type().is_file() {
            return Err(unsafe_file("it is not a regular file"));
        }
        if meta.nlink() != 1 {
            return Err(unsafe_file("it has another name (a hard link)"));
        }
        if meta.uid() != rustix::process::geteuid().as_raw() {
            return Err(unsafe_file("it belongs to another user"));
        }
        // One download per part file: a second `get` of the same content into
        // the same folder would overwrite what the first one is writing.
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

    /// Re-verifies the blocks already in the file against `outline`: for each
    /// block, whether the file holds it, verified. Holes (blocks never
    /// written) are skipped without reading them; the blocks that are there
    /// are read and hashed in parallel. Nothing is changed: a block that does
    /// not verify is simply written again later.
    pub fn verified_blocks(&self, outline: &Outline) -> Result<Vec<bool>, LocalError> {
        self.verified_blocks_in(outline, 0..outline.block_count())
    }

    /// [`verified_blocks`](PartFile::verified_blocks) for the blocks in `range` only.
    pub fn verified_blocks_in(
        &self,
        outline: &Outline,
        range: std::ops::Range<u64>,
    ) -> Result<Vec<bool>, LocalError> {
        let what = || format!("cannot read {}", self.path.display());
        let have = self.file.metadata().map_err(LocalError::io(what()))?.len();
        let data = data_ranges(&self.file, have);
        let present =
            |start: u64, end: u64| end <= have && data.iter().any(|&(s, e)| s <= start && end <= e);
        range
            .into_par_iter()
            .map_init(Vec::new, |buf, i| {
                let (start, end) = outline.block_range(i);
                if start == end {
                    // A zero-length content's one (empty) block.
                    return Ok(outline.verify_block(i, &[]));
                }
                if !present(start, end) {
                    return Ok(false);
                }
                let len = usize::try_from(end - start).unwrap_or(usize::MAX);
                buf.resize(len, 0);
                self.file
                    .read_exact_at(buf, start)
                    .map_err(LocalError::io(what()))?;
                Ok(outline.verify_block(i, buf))
            })
            .collect()
    }

    /// Writes a verified block that starts at byte `start`.
    pub fn write_at(&self, start: u64, data: &[u8]) -> Result<(), LocalError> {
        self.file
            .write_all_at(data, start)
            .map_err(|e| write_error(&self.path, e))
    }

    /// Gives the complete part file (`size` bytes) its final name: syncs it,
    /// then links it to `final_path` without replacing an existing file
    /// (unless `force`), removes the part name, checks that the final name is
    /// the file that was written, and syncs the folder. On
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
        // The part name was only a name: had it been swapped for another file
        // (or a link) since it was opened, the final name would be that.
        let ours = self.file.metadata().map_err(LocalError::io(&what))?;
        match final_path.symlink_metadata() {
            Ok(m) if m.dev() == ours.dev() && m.ino() == ours.ino() => {}
            _ => {
                return Err(LocalError::Unsafe {
                    path: final_path.display().to_string(),
                    why: "the part file was replaced by another file while the download finished",
                });
            }
        }
        sync_dir(final_path.parent().unwrap_or(Path::new(".")))
    }

    /// Closes and deletes the part file (nothing worth keeping was written).
    pub fn remove(self) {
        let PartFile { file, path } = self;
        drop(file);
        let _ = std::fs::remove_file(path);
    }
}

/// The byte ranges of `file` (of `len` bytes) that hold data, as
/// `SEEK_DATA`/`SEEK_HOLE` report them; the whole file where the filesystem
/// cannot tell.
fn data_ranges(file: &File, len: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < len {
        let start = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(s) => s,
            // No data after `pos`.
            Err(Errno::NXIO) => break,
            Err(_) => return vec![(0, len)],
        };
        let end = match rustix::fs::seek(file, SeekFrom::Hole(start)) {
            Ok(e) if e > start => e.min(len),
            _ => return vec![(0, len)],
        };
        out.push((start, end));
        pos = end;
    }
    out
}

/// A failed write to the part file at `path`: a full disk (or quota) says
/// so, so the user knows what to free.
fn write_error(path: &Path, e: io::Error) -> LocalError {
    let path = path.display().to_string();
    match e.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            LocalError::DiskFull { path, source: e }
        }
        _ => LocalError::io(format!("cannot write {path}"))(e),
    }
}

/// Syncs the folder `dir`, so a new name in it survives a crash. A
/// filesystem that cannot sync folders (EINVAL) is not an error.
fn sync_dir(dir: &Path) -> Result<(), LocalError> {
    let what = || {
        format!(
            "cannot sync the folder {} (the file is complete, but its name may not survive a crash)",
            dir.display()
        )
    };
    let d = File::open(dir).map_err(LocalError::io(what()))?;
    match d.sync_all() {
        Err(e) if e.raw_os_error() == Some(Errno::INVAL.raw_os_error()) => {
            tracing::debug!("{} cannot be synced: {e}", dir.display());
            Ok(())
        }
        r => r.map_err(LocalError::io(what())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::transfer::outline;
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
    fn blocks_are_verified_where_they_are_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let (data, hash, outline) = content(5 * MIB + 7);
        let part = PartFile::open(dir.path(), &name("f"), &hash).unwrap();
        assert_eq!(part.verified_blocks(&outline).unwrap(), [false; 6]);

        // Blocks 1 and 4 (out of order), block 3 with one byte flipped, and
        // the short last block cut in half.
        let block = |i: usize| &data[i * MIB..((i + 1) * MIB).min(data.len())];
        part.write_at(4 * MIB as u64, block(4)).unwrap();
        part.write_at(MIB as u64, block(1)).unwrap();
        let mut bad = block(3).to_vec();
        bad[77] ^= 1;
        part.write_at(3 * MIB as u64, &bad).unwrap();
        part.write_at(5 * MIB as u64, &block(5)[..3]).unwrap();
        assert_eq!(
            part.verified_blocks(&outline).unwrap(),
            [false, true, false, false, true, false]
        );
        // Nothing was cut or changed by looking.
        assert_eq!(file_len(part.path()), 5 * MIB as u64 + 3);

        // The rest arrives; the file verifies whole.
        for i in [0, 2, 3, 5] {
            part.write_at((i * MIB) as u64, block(i)).unwrap();
        }
        assert_eq!(part.verified_blocks(&outline).unwrap(), [true; 6]);
        assert_eq!(std::fs::read(part.path()).unwrap(), data);
    }

    fn file_len(p: &Path) -> u64 {
        std::fs::metadata(p).unwrap().len()
    }

    #[test]
    fn a_planted_link_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let (_, hash, _) = content(10);
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let planted = dir.path().join(part_name("f", &hash));

        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        match PartFile::open(dir.path(), &name("f"), &hash) {
            Err(e @ LocalError::Unsafe { .. }) => {
                assert!(e.to_string().contains("symbolic link"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        // A dangling link is not created through either.
        std::fs::remove_file(&victim).unwrap();
        assert!(PartFile::open(dir.path(), &name("f"), &hash).is_err());
        assert!(!victim.exists());

        std::fs::remove_file(&planted).unwrap();
        std::fs::write(&victim, b"precious").unwrap();
        std::fs::hard_link(&victim, &planted).unwrap();
        match PartFile::open(dir.path(), &name("f"), &hash) {
            Err(e @ LocalError::Unsafe { .. }) => {
                assert!(e.to_string().contains("hard link"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        std::fs::remove_file(&planted).unwrap();
        std::fs::create_dir(&planted).unwrap();
        assert!(PartFile::open(dir.path(), &name("f"), &hash).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn finish_links_without_overwriting() {
        let dir = tempfile::tempdir().unwrap();
        let (data, hash, outline) = content(MIB + 3);
        let done = |dir: &Path| {
            let part = PartFile::open(dir, &name("f"), &hash).unwrap();
            part.write_at(0, &data).unwrap();
            assert_eq!(part.verified_blocks(&outline).unwrap(), [true, true]);
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
    fn a_full_disk_says_so_and_what_to_do() {
        let full = write_error(Path::new("/d/.f.part"), io::Error::from_raw_os_error(28));
        assert!(matches!(full, LocalError::DiskFull { .. }), "{full:?}");
        assert_eq!(
            full.to_string(),
            "cannot write /d/.f.part: the disk is full"
        );
        let stopped = crate::transfer::error::DownloadError::Stopped {
            cause: full,
            verified: 3,
            size: 9,
            part: "/d/.f.part".into(),
        };
        assert_eq!(
            crate::ui::error_chain(&stopped),
            "cannot write /d/.f.part: the disk is full; 3 B of 9 B verified in /d/.f.part; run the same command again to resume once that is fixed: No space left on device (os error 28)"
        );
        let other = write_error(Path::new("/d/x"), io::Error::from_raw_os_error(5));
        assert!(
            other.to_string().starts_with("cannot write /d/x: "),
            "{other}"
        );
    }

    #[test]
    fn an_empty_content_finishes_as_an_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let (_, hash, outline) = content(0);
        let part = PartFile::open(dir.path(), &name("empty"), &hash).unwrap();
        assert_eq!(part.verified_blocks(&outline).unwrap(), [true]);
        let final_path = dir.path().join("empty");
        part.finish(&final_path, 0, false).unwrap();
        assert_eq!(std::fs::read(&final_path).unwrap(), b"");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
