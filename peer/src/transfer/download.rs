//! Downloading one content from the peers that hold it, verifying every block
//! before it is written, and resuming from the verified part (blocking; the
//! `get` command runs it on tokio's blocking pool).
//!
//! The file is assembled in a [`PartFile`] next to its final name. [`download`]
//! tries the sources one after another. Per source: connect, fetch the outline
//! (once per download, checked to merge to the requested hash and to have the
//! size the tracker announced), re-verify what an earlier run left in the part
//! file (once), then one READ of everything still missing, moved through the
//! pipeline (`pipeline.rs`: network, verification and disk overlap). A
//! source that fails is reported with its [`RemoteError`] and dropped; the next
//! source continues from the current verified offset. When every block is in,
//! the part file is given its final name.
//!
//! The protocol's block CVs would let several sources serve different blocks
//! at once; this implementation uses one at a time. Scheduling several is a
//! change to this loop and to the pipeline's network stage; the part file,
//! the connection and the error kinds stay as they are.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sbcftp_api::{ContentHash, FileName, PeerId};

use super::connection::{Connection, Deadlines};
use super::error::{DownloadError, LocalError, RemoteError, Violation};
use super::outline::{self, Outline};
use super::part::PartFile;
use super::pipeline::{self, Stop};
use super::wire::Request;

/// A peer that holds the content.
#[derive(Debug, Clone)]
pub struct Source {
    /// The tracker's id for the peer (for messages).
    pub peer_id: PeerId,
    /// Where it serves, `ip:port`.
    pub addr: String,
}

/// What to download and how.
#[derive(Debug, Clone)]
pub struct Job {
    pub hash: ContentHash,
    /// Its size as the tracker announced it.
    pub size: u64,
    /// The file name to create in `out_dir`.
    pub name: FileName,
    /// The folder to download into (created if missing).
    pub out_dir: PathBuf,
    /// Replace an existing file of that name with different content.
    pub force: bool,
    /// A source that sends no byte for this long is dropped.
    pub stall_timeout: Duration,
    /// How long connecting to a source may take.
    pub connect_timeout: Duration,
}

/// How a download ended well.
#[derive(Debug)]
pub enum Outcome {
    /// The file was downloaded and verified.
    Done {
        path: PathBuf,
        /// Bytes received over the network in this run.
        received: u64,
        /// Bytes that were already verified in a part file.
        resumed: u64,
    },
    /// A file of that name with that content is already there.
    AlreadyThere { path: PathBuf },
}

/// Hooks for the caller: progress and messages about sources.
pub trait Observer: Sync {
    /// The total is known and `done` bytes are already verified.
    fn start(&self, size: u64, done: u64);
    /// `n` more bytes were verified and written.
    fn advance(&self, n: u64);
    /// Something worth telling the user (resuming, …).
    fn message(&self, msg: &str);
    /// `source` was dropped for this download.
    fn dropped(&self, source: &Source, why: &RemoteError) {
        self.message(&format!(
            "source {} ({}) dropped: {}",
            source.addr,
            source.peer_id,
            crate::ui::error_chain(why)
        ));
    }
}

/// Downloads `job` from `sources` (blocking). `cancel` is polled; when it is
/// set the download stops and keeps its verified part.
pub fn download(
    job: &Job,
    sources: &[Source],
    cancel: &AtomicBool,
    obs: &dyn Observer,
) -> Result<Outcome, DownloadError> {
    std::fs::create_dir_all(&job.out_dir).map_err(LocalError::io(format!(
        "cannot create {}",
        job.out_dir.display()
    )))?;
    let final_path = job.out_dir.join(&job.name);
    if final_path.symlink_metadata().is_ok() {
        if same_content(&final_path, &job.hash, job.size) {
            return Ok(Outcome::AlreadyThere { path: final_path });
        }
        if !job.force {
            return Err(LocalError::Exists {
                path: final_path.display().to_string(),
            }
            .into());
        }
    }

    let mut part = PartFile::open(&job.out_dir, &job.name, &job.hash)?;
    let mut state = State {
        job,
        outline: None,
        verified: 0,
        resumed: 0,
        received: 0,
    };
    let mut tried = 0;
    for source in sources {
        if cancel.load(Ordering::Relaxed) || state.complete() {
            break;
        }
        tried += 1;
        match state.try_source(source, &mut part, cancel, obs) {
            Ok(()) => {}
            Err(Stop::Cancelled) => break,
            Err(Stop::Local(e)) => return Err(e.into()),
            Err(Stop::Remote(why)) => {
                tracing::debug!(peer = %source.peer_id, addr = %source.addr, "source dropped: {why}");
                obs.dropped(source, &why);
            }
        }
    }

    if !state.complete() {
        let part_path = part.path().display().to_string();
        // Nothing was ever written: leave no empty part file behind. (A part
        // file from an earlier run whose outline could not be fetched this
        // time is kept: it was never re-verified, so it is not empty.)
        if part.is_empty() {
            part.remove();
        }
        let (verified, size) = (state.verified, job.size);
        return Err(if cancel.load(Ordering::Relaxed) {
            DownloadError::Interrupted {
                verified,
                size,
                part: part_path,
            }
        } else {
            DownloadError::NoSourceLeft {
                tried,
                verified,
                size,
                part: part_path,
            }
        });
    }
    part.finish(&final_path, job.size, job.force)?;
    Ok(Outcome::Done {
        path: final_path,
        received: state.received,
        resumed: state.resumed,
    })
}

/// Whether the file at `path` has this size and hash.
fn same_content(path: &Path, hash: &ContentHash, size: u64) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    match f.metadata() {
        Ok(m) if m.is_file() && m.len() == size => {}
        _ => return false,
    }
    matches!(outline::hash_file(&f, size, &|_| {}), Ok((h, _)) if h == *hash)
}

/// Where a download stands between sources.
struct State<'a> {
    job: &'a Job,
    /// Fetched from the first source that had a good one.
    outline: Option<Outline>,
    /// Bytes at the start of the part file that are verified.
    verified: u64,
    /// Bytes that were verified in the part file from an earlier run.
    resumed: u64,
    /// Bytes received and written in this run.
    received: u64,
}

impl State<'_> {
    fn complete(&self) -> bool {
        self.outline.is_some() && self.verified == self.job.size
    }

    /// Fetches what is missing from one source.
    fn try_source(
        &mut self,
        source: &Source,
        part: &mut PartFile,
        cancel: &AtomicBool,
        obs: &dyn Observer,
    ) -> Result<(), Stop> {
        let (hash, size) = (self.job.hash, self.job.size);
        let mut conn = Connection::connect(
            &source.addr,
            self.job.connect_timeout,
            Deadlines::client(self.job.stall_timeout),
        )?;
        let outline = match &mut self.outline {
            Some(outline) => outline,
            empty => {
                // The first good outline: now the part file can be checked.
                let outline = empty.insert(fetch_outline(&mut conn, &hash, size)?);
                self.verified = part.verify_prefix(outline)?;
                self.resumed = self.verified;
                if self.verified > 0 {
                    obs.message(&format!(
                        "resuming: {} of {size} bytes already verified in {}",
                        self.verified,
                        part.path().display()
                    ));
                }
                obs.start(size, self.verified);
                outline
            }
        };
        if self.verified == size {
            // Nothing to receive. A zero-length content's one (empty) block
            // must still match.
            if size == 0 && !outline.verify_block(0, &[]) {
                return Err(RemoteError::from(Violation::NotEmpty).into());
            }
            return Ok(());
        }

        let length = size - self.verified;
        conn.send(&Request::read(hash, self.verified, length))?;
        let answered = conn.read_ok_header()?;
        if answered != length {
            return Err(RemoteError::from(Violation::WrongLength {
                expected: length,
                actual: answered,
            })
            .into());
        }
        let first_block = self.verified / outline::block_size(size);
        let (written, result) = pipeline::run(conn, outline, part, first_block, cancel, obs);
        // Only verified blocks were written, in order: the verified prefix
        // grows by what was written.
        self.verified += written;
        self.received += written;
        result
    }
}

/// Fetches the outline of `hash`, which should have `size` bytes, and checks it.
fn fetch_outline(
    conn: &mut Connection,
    hash: &ContentHash,
    size: u64,
) -> Result<Outline, RemoteError> {
    conn.send(&Request::outline(*hash))?;
    let answered = conn.read_ok_header()?;
    let expected = outline::outline_len(size);
    if answered != expected {
        return Err(Violation::OutlineLength {
            size,
            expected,
            actual: answered,
        }
        .into());
    }
    // `expected` is at most 8 + 32 * 2^16 bytes: safe to allocate.
    let mut buf = vec![0u8; expected as usize];
    conn.read_payload(&mut buf)?;
    Ok(Outline::from_payload(&buf, size, hash).map_err(Violation::from)?)
}
