//! Downloading one content from every peer that holds it at once, verifying
//! every block before it is written, and resuming from the verified blocks
//! (blocking; the `get` command runs it on tokio's blocking pool).
//!
//! The shape of it, the way BitTorrent and Syncthing do it:
//!
//! - **Sources.** Every holder, in random order (a flood of fake holders at
//!   the top of a listing cannot stall the start), at most
//!   [`Job::max_sources`] at once; the others wait and replace sources that
//!   end. Each runs on a thread of its own (`source.rs`).
//! - **Outline and size.** The size comes from an outline that merges to
//!   the content hash, never from the tracker's listing: other registrants
//!   can lie about it. Merging proves the block CVs but not the exact size
//!   (see [`Outline::from_payload_unsized`]). So each source that connects
//!   while no outline is proven sends its outline together with the last
//!   block as that outline places it (unless the part file already holds
//!   it, verified); the first whose last block verifies is adopted, and a
//!   source whose last block does not verify is dropped. The sources race:
//!   a slow one cannot hold up the start. Then the part file is re-verified
//!   against the proven outline (`part.rs`), and the blocks it lacks are
//!   handed out.
//! - **Scheduling.** Blocks are handed out one at a time to whichever
//!   source asks (`schedule.rs`), each source keeping a window of pipelined
//!   requests in flight; an endgame gives idle sources the blocks others
//!   still hold, and the first verified copy wins.
//! - **Verification.** This thread checks every block against its CV. A
//!   corrupt block drops its source for this download, named with the block
//!   (the observer's [`Observer::dropped`]), and the block goes back on the
//!   list. Sources that stall, trickle, refuse or break the protocol are
//!   dropped too; broken connections are retried a few times first.
//! - **Disk.** Verified blocks are written at their place by a writer
//!   thread (`pipeline.rs`); the part file only ever holds verified blocks,
//!   so Ctrl-C, a failure, or a full disk leave something the same command
//!   resumes from. When every block is in, the part file gets its final name.
//! - **No source left.** The observer is asked once for more sources
//!   ([`Observer::more_sources`]: `get` asks the tracker again).
//!
//! The download's own thread (starting sources, adopting the outline,
//! verifying blocks) is `download/coordinator.rs`.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use rand::seq::SliceRandom;
use sbcftp_api::{ContentHash, FileName, PeerId};

use super::connection::{Closer, Connection};
use super::error::{DownloadError, LocalError, RemoteError};
use super::outline::{self, Outline};
use super::pace::Pacer;
use super::part::PartFile;
use super::pipeline::Pool;
use super::schedule::Scheduler;

mod coordinator;

use self::coordinator::{Coordinator, End};

/// A peer that holds the content.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// The rate floor, in bytes per second: a block must arrive within the
    /// stall timeout plus its length at this rate, or its source is dropped.
    pub min_source_rate: u64,
    /// A limit on the download, all sources together (bytes per second).
    pub max_download_rate: Option<u64>,
    /// Most sources used at once.
    pub max_sources: usize,
}

impl Job {
    /// The rate floor, never zero.
    pub(super) fn min_rate(&self) -> u64 {
        self.min_source_rate.max(1)
    }
}

/// How a download ended well.
#[derive(Debug)]
pub enum Outcome {
    /// The file was downloaded and verified.
    Done { path: PathBuf },
    /// A file of that name with that content is already there.
    AlreadyThere { path: PathBuf },
}

/// What a download did, whether it succeeded or not.
#[derive(Debug, Default)]
pub struct Report {
    /// The content's size, once an outline gave it.
    pub size: Option<u64>,
    /// Bytes that were already verified in a part file from an earlier run.
    pub resumed: u64,
    /// Bytes of verified blocks received over the network in this run.
    pub received: u64,
    /// Every source tried, in the order tried.
    pub sources: Vec<SourceReport>,
}

/// What one source did.
#[derive(Debug, Clone)]
pub struct SourceReport {
    pub source: Source,
    /// Bytes of the blocks it sent that were verified and used.
    pub bytes: u64,
    /// Those blocks.
    pub blocks: u64,
    /// Bytes it sent that were not used: copies that came second in the
    /// endgame, and corrupt blocks.
    pub unused: u64,
    /// Why it was dropped, if it was.
    pub dropped: Option<String>,
}

/// Hooks for the caller: progress, messages about sources, more sources.
pub trait Observer: Sync {
    /// The total is known and `done` bytes are already verified.
    fn start(&self, size: u64, done: u64);
    /// `n` more bytes were verified and written.
    fn advance(&self, n: u64);
    /// Something worth telling the user (resuming, …).
    fn message(&self, msg: &str);
    /// `n` sources are in use now.
    fn sources(&self, n: usize) {
        let _ = n;
    }
    /// `source` was dropped for this download.
    fn dropped(&self, source: &Source, why: &RemoteError) {
        self.message(&format!(
            "source {} ({}) dropped: {}",
            source.addr,
            source.peer_id,
            crate::ui::error_chain(why)
        ));
    }
    /// Every source has ended with blocks still missing: more sources to
    /// try, if the caller knows any (asked once per download).
    fn more_sources(&self) -> Vec<Source> {
        Vec::new()
    }
}

/// Downloads `job` from `sources` (blocking). `cancel` is polled; when it is
/// set the download stops and keeps its verified blocks. The report says
/// what each source did, whatever the outcome.
pub fn download(
    job: &Job,
    sources: &[Source],
    cancel: &AtomicBool,
    obs: &dyn Observer,
) -> (Report, Result<Outcome, DownloadError>) {
    let mut report = Report::default();
    let result = run(job, sources, cancel, obs, &mut report);
    (report, result)
}

fn run(
    job: &Job,
    sources: &[Source],
    cancel: &AtomicBool,
    obs: &dyn Observer,
    report: &mut Report,
) -> Result<Outcome, DownloadError> {
    std::fs::create_dir_all(&job.out_dir).map_err(LocalError::io(format!(
        "cannot create {}",
        job.out_dir.display()
    )))?;
    let final_path = job.out_dir.join(&job.name);
    if final_path.symlink_metadata().is_ok() {
        if same_content(&final_path, &job.hash) {
            return Ok(Outcome::AlreadyThere { path: final_path });
        }
        if !job.force {
            return Err(LocalError::Exists {
                path: final_path.display().to_string(),
            }
            .into());
        }
    }
    let part = PartFile::open(&job.out_dir, &job.name, &job.hash)?;

    let mut order: Vec<Source> = Vec::with_capacity(sources.len());
    for s in sources {
        if !order.iter().any(|o| o.addr == s.addr) {
            order.push(s.clone());
        }
    }
    order.shuffle(&mut rand::rng());

    let (events, inbox) = mpsc::channel();
    let swarm = Swarm {
        job,
        outline: OnceLock::new(),
        sched: Scheduler::new(),
        pool: Pool::new(),
        pacer: Pacer::new(job.max_download_rate),
        events,
        open: Mutex::new(HashMap::new()),
        banned: Mutex::new(HashSet::new()),
        stopped: AtomicBool::new(false),
        part: &part,
    };
    let end = std::thread::scope(|scope| {
        let mut c = Coordinator::new(&swarm, &part, obs, report, order.into());
        let end = c.run(scope, &inbox, cancel);
        // Stop everything: sources blocked in a read, a wait, or a buffer
        // wait all wake up and end; the writer writes what is queued.
        swarm.stop();
        let (written, write_result) = match c.writer.take() {
            Some(w) => w.finish(),
            None => (0, Ok(())),
        };
        let end = match (end, write_result) {
            (_, Err(e)) => End::Local(e),
            (end, Ok(())) => end,
        };
        (end, written)
    });
    let (end, written) = end;
    // Events still queued (blocks read after the end) are dropped here.
    drop(inbox);

    let size = report.size;
    let verified = report.resumed + written;
    let part_path = part.path().display().to_string();
    match end {
        End::Complete => {
            let size = size.unwrap_or(0);
            part.finish(&final_path, size, job.force)
                .map_err(|cause| stopped(cause, verified, size, &part_path))?;
            Ok(Outcome::Done { path: final_path })
        }
        End::Local(cause) => {
            let Some(size) = size else {
                return Err(cause.into());
            };
            Err(stopped(cause, verified, size, &part_path))
        }
        End::Cancelled | End::NoSourceLeft => {
            // Nothing was ever written: leave no empty part file behind.
            if part.is_empty() {
                part.remove();
            }
            let tried = report.sources.len();
            match (size, end) {
                (None, End::Cancelled) => Err(DownloadError::InterruptedEarly),
                (None, _) => Err(DownloadError::NoOutline { tried }),
                (Some(size), End::Cancelled) => Err(DownloadError::Interrupted {
                    verified,
                    size,
                    part: part_path,
                }),
                (Some(size), _) => Err(DownloadError::NoSourceLeft {
                    tried,
                    verified,
                    size,
                    part: part_path,
                }),
            }
        }
    }
}

/// A local failure once the size is known: the verified part is kept.
fn stopped(cause: LocalError, verified: u64, size: u64, part: &str) -> DownloadError {
    match cause {
        // Not a failure of the part: say it as it is.
        e @ LocalError::Exists { .. } => e.into(),
        cause => DownloadError::Stopped {
            cause,
            verified,
            size,
            part: part.to_owned(),
        },
    }
}

/// Whether the file at `path` is a regular file with this hash.
fn same_content(path: &Path, hash: &ContentHash) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    let size = match f.metadata() {
        Ok(m) if m.is_file() => m.len(),
        _ => return false,
    };
    size <= sbcftp_api::MAX_FILE_SIZE
        && matches!(outline::hash_file(&f, size, &|_| {}), Ok((h, _)) if h == *hash)
}

/// What the source threads send to the download's thread.
#[derive(Debug)]
pub(super) enum Event {
    /// An outline that merges to the hash, and the last block as it places
    /// it, as received (`None`: the part file holds that block, verified).
    Outline {
        id: usize,
        outline: Outline,
        last: Option<Vec<u8>>,
    },
    /// A block as received, not yet verified.
    Block {
        id: usize,
        index: u64,
        data: Vec<u8>,
    },
    /// The source's thread ended: nothing left for it, or why it failed.
    Ended {
        id: usize,
        result: Result<(), RemoteError>,
    },
    /// The writer failed (its error comes when it is joined).
    WriteFailed,
}

/// What the source threads share with the download's thread.
#[derive(Debug)]
pub(super) struct Swarm<'a> {
    pub(super) job: &'a Job,
    /// The first outline that merged; set once.
    pub(super) outline: OnceLock<Outline>,
    pub(super) sched: Scheduler,
    pub(super) pool: Pool,
    /// `--max-download-rate`, over all sources.
    pub(super) pacer: Option<Pacer>,
    pub(super) events: mpsc::Sender<Event>,
    /// Open connections by source, so a dropped source's thread (or every
    /// thread, at the end) can be woken from a blocked read.
    open: Mutex<HashMap<usize, Closer>>,
    /// Sources dropped for what they sent: never connected to again.
    banned: Mutex<HashSet<usize>>,
    stopped: AtomicBool,
    /// Read by sources to see whether it already holds the last block.
    pub(super) part: &'a PartFile,
}

/// Keeps a source's connection known to the download while it is open.
pub(super) struct Opened<'s, 'a> {
    swarm: &'s Swarm<'a>,
    id: usize,
}

impl Drop for Opened<'_, '_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.swarm.open.lock() {
            m.remove(&self.id);
        }
    }
}

impl<'a> Swarm<'a> {
    /// Registers source `id`'s new connection; `None` if the download is
    /// already over (the caller ends).
    pub(super) fn opened<'s>(&'s self, id: usize, conn: &Connection) -> Option<Opened<'s, 'a>> {
        let closer = conn.closer().ok()?;
        let mut m = self.open.lock().ok()?;
        if self.stopped.load(Ordering::Relaxed) {
            return None;
        }
        m.insert(id, closer);
        Some(Opened { swarm: self, id })
    }

    /// Whether the download is over (every source is being stopped).
    pub(super) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// Whether source `id` was dropped for what it sent.
    pub(super) fn is_banned(&self, id: usize) -> bool {
        self.banned.lock().map(|b| b.contains(&id)).unwrap_or(true)
    }

    /// Drops source `id` for what it sent: closes its connection (its thread
    /// ends with an error) and never connects to it again.
    fn ban(&self, id: usize) {
        if let Ok(mut b) = self.banned.lock() {
            b.insert(id);
        }
        self.close(id);
    }

    /// Closes source `id`'s connection (its thread ends with an error).
    fn close(&self, id: usize) {
        if let Ok(m) = self.open.lock()
            && let Some(c) = m.get(&id)
        {
            c.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Ends every source and hands out nothing more.
    fn stop(&self) {
        if let Ok(m) = self.open.lock() {
            self.stopped.store(true, Ordering::Relaxed);
            for c in m.values() {
                c.shutdown(std::net::Shutdown::Both);
            }
        }
        self.sched.stop();
        self.pool.stop();
    }
}
