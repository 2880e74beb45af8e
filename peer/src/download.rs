//! Downloading one content from the peers that hold it, verifying every block
//! before it is written, and resuming from the verified part.
//!
//! The file is assembled in a part file next to its final name
//! (`.<name>.<hash8>.sbcftp-part`). Only blocks that match the outline are
//! written, in order, so the part file is always a verified prefix. On start
//! an existing part file is re-verified block by block (cheap: hashing is
//! faster than the disk) and cut back to its last good block. When every block
//! is in, the file is synced and linked to its final name without replacing an
//! existing file (unless `force`), then the part file is removed.
//!
//! Per source: connect, fetch the outline (once per download, checked to merge
//! to the requested hash and to have the size the tracker announced), then one
//! READ of everything still missing. A network thread reads the answer in
//! blocks and hands them to this thread, which verifies and writes them, so
//! the network and the disk overlap. A source that fails, stalls (no byte for
//! `stall_timeout`), answers with an error status, or sends a block that does
//! not verify is reported and dropped; the next source continues from the
//! current verified offset. The protocol's block CVs would let several sources
//! serve different blocks at once; this implementation uses one at a time.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::outline::{self, Cv};
use crate::protocol::{
    MAX_MESSAGE_LEN, RESPONSE_HEADER_LEN, Request, ResponseHeader, Status, decode_cvs,
};

/// A peer that holds the content.
#[derive(Debug, Clone)]
pub struct Source {
    /// The tracker's id for the peer (for messages).
    pub peer_id: String,
    /// Where it serves, `ip:port`.
    pub addr: String,
}

/// What to download and how.
#[derive(Debug, Clone)]
pub struct Job {
    /// The content's hash.
    pub hash: Cv,
    /// Its size as the tracker announced it.
    pub size: u64,
    /// The file name to create in `out_dir` (validated here).
    pub name: String,
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
        /// Its final path.
        path: PathBuf,
        /// Bytes received over the network in this run.
        received: u64,
        /// Bytes that were already verified in a part file.
        resumed: u64,
    },
    /// A file of that name with that content is already there.
    AlreadyThere {
        /// Its path.
        path: PathBuf,
    },
}

/// Why a download did not finish.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// Every source failed; the verified part is kept.
    #[error(
        "no source left ({tried} tried); {verified} of {size} bytes are verified in {part}; run the same command again to resume"
    )]
    NoSourceLeft {
        /// How many sources were tried.
        tried: usize,
        /// Verified bytes kept.
        verified: u64,
        /// Content size.
        size: u64,
        /// The part file.
        part: String,
    },
    /// The user interrupted; the verified part is kept.
    #[error(
        "interrupted; {verified} of {size} bytes are verified in {part}; run the same command again to resume"
    )]
    Interrupted {
        /// Verified bytes kept.
        verified: u64,
        /// Content size.
        size: u64,
        /// The part file.
        part: String,
    },
    /// Another download of the same content into the same folder is running.
    #[error("another download is already writing {part}; wait for it to finish")]
    Busy {
        /// The part file.
        part: String,
    },
    /// A different file already has the name.
    #[error(
        "{path} already exists with different content; not overwriting it (use --force to replace it, or --out to download elsewhere)"
    )]
    Exists {
        /// The existing file.
        path: String,
    },
    /// The name the content would be saved under is not a safe file name.
    #[error("cannot save under the name {name:?}: {why}")]
    BadName {
        /// The name.
        name: String,
        /// Why it is refused.
        why: String,
    },
    /// A local file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> DownloadError {
    let what = what.into();
    move |source| DownloadError::Io { what, source }
}

/// Part file name for a content saved as `name`.
pub fn part_name(name: &str, hash: &Cv) -> String {
    let mut short: String = String::new();
    for c in name.chars() {
        if short.len() + c.len_utf8() > 200 {
            break;
        }
        short.push(c);
    }
    format!(
        ".{short}.{}{}",
        &outline::to_hex(hash)[..8],
        crate::share::PART_SUFFIX
    )
}

/// Hooks for the caller: progress and messages about sources.
pub trait Observer: Sync {
    /// The total is known and `done` bytes are already verified.
    fn start(&self, size: u64, done: u64);
    /// `n` more bytes were verified and written.
    fn advance(&self, n: u64);
    /// Something worth telling the user (a source was dropped, resuming, …).
    fn message(&self, msg: &str);
}

/// Downloads `req` from `sources` (blocking). `cancel` is polled; when it is
/// set the download stops and keeps its verified part.
pub fn download(
    req: &Job,
    sources: &[Source],
    cancel: &AtomicBool,
    obs: &dyn Observer,
) -> Result<Outcome, DownloadError> {
    sbcftp_api::validate_name(&req.name).map_err(|e| DownloadError::BadName {
        name: req.name.clone(),
        why: e.to_string(),
    })?;
    std::fs::create_dir_all(&req.out_dir)
        .map_err(io_err(format!("cannot create {}", req.out_dir.display())))?;
    let final_path = req.out_dir.join(&req.name);
    let part_path = req.out_dir.join(part_name(&req.name, &req.hash));

    if final_path.symlink_metadata().is_ok() {
        if same_content(&final_path, &req.hash, req.size) {
            return Ok(Outcome::AlreadyThere { path: final_path });
        }
        if !req.force {
            return Err(DownloadError::Exists {
                path: final_path.display().to_string(),
            });
        }
    }

    let part = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&part_path)
        .map_err(io_err(format!("cannot open {}", part_path.display())))?;
    // One download per part file: a second `get` of the same content into the
    // same folder would truncate what the first one is writing.
    match part.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(DownloadError::Busy {
                part: part_path.display().to_string(),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => {
            tracing::debug!("cannot lock {}: {e}", part_path.display());
        }
    }
    let mut state = State {
        req,
        part,
        part_path: &part_path,
        cvs: None,
        verified: 0,
        resumed: 0,
        received: 0,
        started: false,
    };

    let mut tried = 0;
    for source in sources {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        if state.cvs.is_some() && state.verified == req.size {
            break;
        }
        tried += 1;
        match state.try_source(source, cancel, obs) {
            Ok(()) => {}
            Err(SourceError::Cancelled) => break,
            Err(SourceError::Local(e)) => return Err(e),
            Err(SourceError::Bad(why)) => {
                obs.message(&format!(
                    "source {} ({}) dropped: {why}",
                    source.addr, source.peer_id
                ));
                tracing::debug!(peer = %source.peer_id, addr = %source.addr, "source dropped: {why}");
            }
        }
    }

    let complete = state.cvs.is_some() && state.verified == req.size;
    if !complete {
        let empty = state.part.metadata().map(|m| m.len() == 0).unwrap_or(false);
        if empty {
            // Nothing was ever written: leave no empty part file behind. (A
            // part file from an earlier run whose outline could not be fetched
            // this time is kept: it was never re-verified, so it is not empty.)
            drop(state);
            let _ = std::fs::remove_file(&part_path);
            let part = part_path.display().to_string();
            return Err(if cancel.load(Ordering::Relaxed) {
                DownloadError::Interrupted {
                    verified: 0,
                    size: req.size,
                    part,
                }
            } else {
                DownloadError::NoSourceLeft {
                    tried,
                    verified: 0,
                    size: req.size,
                    part,
                }
            });
        }
        let part = part_path.display().to_string();
        return Err(if cancel.load(Ordering::Relaxed) {
            DownloadError::Interrupted {
                verified: state.verified,
                size: req.size,
                part,
            }
        } else {
            DownloadError::NoSourceLeft {
                tried,
                verified: state.verified,
                size: req.size,
                part,
            }
        });
    }
    state.finish(&final_path)?;
    Ok(Outcome::Done {
        path: final_path,
        received: state.received,
        resumed: state.resumed,
    })
}

/// Whether the file at `path` has this size and hash.
fn same_content(path: &Path, hash: &Cv, size: u64) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    match f.metadata() {
        Ok(m) if m.is_file() && m.len() == size => {}
        _ => return false,
    }
    matches!(outline::hash_file(&f, size, &|_| {}), Ok((h, _)) if h == *hash)
}

enum SourceError {
    /// The source is unusable; try the next one.
    Bad(String),
    /// A local problem (disk): stop.
    Local(DownloadError),
    /// The user interrupted.
    Cancelled,
}

impl From<io::Error> for SourceError {
    fn from(e: io::Error) -> Self {
        SourceError::Bad(describe(&e))
    }
}

fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            "stalled (no data before the stall timeout)".into()
        }
        io::ErrorKind::UnexpectedEof => "closed the connection early".into(),
        _ => e.to_string(),
    }
}

struct State<'a> {
    req: &'a Job,
    part: File,
    part_path: &'a Path,
    cvs: Option<Vec<Cv>>,
    /// Bytes at the start of the part file that are verified.
    verified: u64,
    resumed: u64,
    received: u64,
    started: bool,
}

/// Block buffers in flight between the network thread and the writer.
const BUFFERS: usize = 6;

/// One block read from the network.
type Block = io::Result<(u64, Vec<u8>)>;

impl State<'_> {
    fn try_source(
        &mut self,
        source: &Source,
        cancel: &AtomicBool,
        obs: &dyn Observer,
    ) -> Result<(), SourceError> {
        let size = self.req.size;
        let mut stream = connect(&source.addr, self.req.connect_timeout)?;
        stream.set_read_timeout(Some(self.req.stall_timeout.max(Duration::from_millis(1))))?;
        stream.set_write_timeout(Some(self.req.stall_timeout.max(Duration::from_millis(1))))?;
        let _ = stream.set_nodelay(true);

        if self.cvs.is_none() {
            let cvs = fetch_outline(&mut stream, &self.req.hash, size)?;
            self.cvs = Some(cvs);
        }
        if !self.started {
            self.started = true;
            self.verify_prefix(obs).map_err(SourceError::Local)?;
            obs.start(size, self.verified);
        }
        if self.verified == size {
            return self.check_empty();
        }
        let Some(cvs) = self.cvs.clone() else {
            return Err(SourceError::Bad("no outline".into()));
        };

        let length = size - self.verified;
        stream.write_all(&Request::read(self.req.hash, self.verified, length).encode())?;
        let header = read_header(&mut stream)?;
        if header.status != Status::Ok {
            return Err(SourceError::Bad(status_message(&mut stream, header)));
        }
        if header.length != length {
            return Err(SourceError::Bad(format!(
                "answered {} bytes for a request of {length}",
                header.length
            )));
        }

        // Three stages overlap: the network thread reads blocks, this thread
        // verifies them, the writer thread writes the verified ones in order.
        let first_block = self.verified / outline::block_size(size);
        let n_blocks = outline::block_count(size);
        // A fixed pool of block buffers circulates between the threads: no
        // allocation (and no page faults) per block.
        let (tx, rx) = mpsc::sync_channel::<Block>(BUFFERS);
        let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
        let (write_tx, write_rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(BUFFERS);
        for _ in 0..BUFFERS {
            let _ = free_tx.send(Vec::new());
        }
        let reader_stream = stream.try_clone()?;
        let writer_file = self.part.try_clone().map_err(|e| {
            SourceError::Local(io_err(format!("cannot write {}", self.part_path.display()))(e))
        })?;
        let start_offset = self.verified;

        let (result, written) = std::thread::scope(|scope| {
            scope.spawn(move || {
                read_blocks(reader_stream, size, first_block, n_blocks, &tx, &free_rx)
            });
            let free_back = free_tx.clone();
            let writer = scope.spawn(move || -> (u64, io::Result<()>) {
                let mut written = 0u64;
                for (start, data) in write_rx {
                    if let Err(e) = writer_file.write_all_at(&data, start) {
                        return (written, Err(e));
                    }
                    written += data.len() as u64;
                    obs.advance(data.len() as u64);
                    let _ = free_back.send(data);
                }
                (written, Ok(()))
            });

            let verified = (|| -> Result<(), SourceError> {
                let mut expect = first_block;
                while expect < n_blocks {
                    if cancel.load(Ordering::Relaxed) {
                        return Err(SourceError::Cancelled);
                    }
                    let (index, data) = match rx.recv_timeout(Duration::from_millis(200)) {
                        Ok(Ok(b)) => b,
                        Ok(Err(e)) => return Err(e.into()),
                        Err(mpsc::RecvTimeoutError::Timeout) => continue,
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            return Err(SourceError::Bad("connection ended".into()));
                        }
                    };
                    let (start, end) = outline::block_range(size, index);
                    if index != expect || !outline::verify_block(size, index, &data, &cvs) {
                        return Err(SourceError::Bad(format!(
                            "sent corrupt data: block {index} (bytes {start}..{end}) does not match the content hash"
                        )));
                    }
                    if write_tx.send((start, data)).is_err() {
                        // The writer stopped: its error is reported below.
                        return Ok(());
                    }
                    expect += 1;
                }
                Ok(())
            })();
            // Stop the network thread whatever happened (it may be blocked in a read).
            if verified.is_err() {
                let _ = stream.shutdown(Shutdown::Both);
            }
            drop(rx);
            drop(write_tx);
            drop(free_tx);
            let (written, write_result) = writer.join().unwrap_or((0, Ok(())));
            let result = match write_result {
                Err(e) => Err(SourceError::Local(io_err(format!(
                    "cannot write {}",
                    self.part_path.display()
                ))(e))),
                Ok(()) => verified,
            };
            (result, written)
        });
        // Only verified blocks were written, in order: the verified prefix grows by what was written.
        self.verified = start_offset + written;
        self.received += written;
        result
    }

    /// A zero-length content has no block to receive; its one (empty) block
    /// must still match.
    fn check_empty(&self) -> Result<(), SourceError> {
        match &self.cvs {
            Some(cvs) if self.req.size > 0 || outline::verify_block(0, 0, &[], cvs) => Ok(()),
            _ => Err(SourceError::Bad(
                "announced an empty file for a non-empty hash".into(),
            )),
        }
    }

    /// Re-verifies an existing part file block by block and cuts it back to
    /// its last good block.
    fn verify_prefix(&mut self, obs: &dyn Observer) -> Result<(), DownloadError> {
        let size = self.req.size;
        let Some(cvs) = &self.cvs else { return Ok(()) };
        let what = || format!("cannot read {}", self.part_path.display());
        let have = self.part.metadata().map_err(io_err(what()))?.len();
        let mut good = 0u64;
        if have > 0 {
            let bs = usize::try_from(outline::block_size(size)).unwrap_or(usize::MAX);
            let mut buf = vec![0u8; bs.min(usize::try_from(have).unwrap_or(bs))];
            for i in 0..outline::block_count(size) {
                let (start, end) = outline::block_range(size, i);
                if end > have {
                    break;
                }
                let len = usize::try_from(end - start).unwrap_or(usize::MAX);
                if buf.len() < len {
                    buf.resize(len, 0);
                }
                self.part
                    .read_exact_at(&mut buf[..len], start)
                    .map_err(io_err(what()))?;
                if !outline::verify_block(size, i, &buf[..len], cvs) {
                    break;
                }
                good = end;
            }
            if good > 0 {
                obs.message(&format!(
                    "resuming: {good} of {size} bytes already verified in {}",
                    self.part_path.display()
                ));
            }
        }
        if have != good {
            self.part.set_len(good).map_err(io_err(format!(
                "cannot truncate {}",
                self.part_path.display()
            )))?;
        }
        self.verified = good;
        self.resumed = good;
        Ok(())
    }

    /// Syncs the part file and gives it its final name.
    fn finish(&mut self, final_path: &Path) -> Result<(), DownloadError> {
        let what = format!("cannot finish {}", final_path.display());
        self.part
            .set_len(self.req.size)
            .map_err(io_err(what.clone()))?;
        self.part.sync_all().map_err(io_err(what.clone()))?;
        if self.req.force {
            std::fs::rename(self.part_path, final_path).map_err(io_err(what.clone()))?;
        } else {
            // A hard link never replaces an existing file, so a file that
            // appeared meanwhile is not overwritten.
            match std::fs::hard_link(self.part_path, final_path) {
                Ok(()) => std::fs::remove_file(self.part_path).map_err(io_err(what.clone()))?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(DownloadError::Exists {
                        path: final_path.display().to_string(),
                    });
                }
                Err(_) => {
                    // Filesystems without hard links: check, then rename.
                    if final_path.symlink_metadata().is_ok() {
                        return Err(DownloadError::Exists {
                            path: final_path.display().to_string(),
                        });
                    }
                    std::fs::rename(self.part_path, final_path).map_err(io_err(what.clone()))?;
                }
            }
        }
        if let Some(d) = final_path.parent().and_then(|dir| File::open(dir).ok()) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Connects to `addr` (`ip:port`) within `timeout`.
fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, SourceError> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| SourceError::Bad(format!("bad address: {e}")))?
        .collect();
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(SourceError::Bad(match last {
        Some(e) => format!("cannot connect: {e}"),
        None => "address resolves to nothing".into(),
    }))
}

fn read_header(stream: &mut TcpStream) -> Result<ResponseHeader, SourceError> {
    let mut h = [0u8; RESPONSE_HEADER_LEN];
    stream.read_exact(&mut h)?;
    ResponseHeader::decode(&h).map_err(|e| SourceError::Bad(format!("protocol error: {e}")))
}

/// Reads an error answer's message (bounded) and describes the status.
fn status_message(stream: &mut TcpStream, header: ResponseHeader) -> String {
    let mut msg = String::new();
    if header.length <= MAX_MESSAGE_LEN {
        let mut buf = vec![0u8; header.length as usize];
        if stream.read_exact(&mut buf).is_ok() {
            msg = crate::ui::safe(&String::from_utf8_lossy(&buf));
        }
    }
    if msg.is_empty() {
        format!("answered {}", header.status)
    } else {
        format!("answered {}: {msg}", header.status)
    }
}

/// Fetches and checks the outline of `hash`, which should have `size` bytes.
fn fetch_outline(stream: &mut TcpStream, hash: &Cv, size: u64) -> Result<Vec<Cv>, SourceError> {
    stream.write_all(&Request::outline(*hash).encode())?;
    let header = read_header(stream)?;
    if header.status != Status::Ok {
        return Err(SourceError::Bad(status_message(stream, header)));
    }
    let expected = outline::outline_len(size);
    if header.length != expected {
        return Err(SourceError::Bad(format!(
            "outline is {} bytes; a content of {size} bytes needs {expected}",
            header.length
        )));
    }
    // `expected` is at most 8 + 32 * 2^16 bytes: safe to allocate.
    let mut buf =
        vec![0u8; usize::try_from(expected).map_err(|e| SourceError::Bad(e.to_string()))?];
    stream.read_exact(&mut buf)?;
    let mut sz = [0u8; 8];
    sz.copy_from_slice(&buf[..8]);
    let announced = u64::from_be_bytes(sz);
    if announced != size {
        return Err(SourceError::Bad(format!(
            "has {announced} bytes of this content; the tracker says {size}"
        )));
    }
    let cvs = decode_cvs(&buf[8..]);
    if !outline::outline_matches(size, &cvs, hash) {
        return Err(SourceError::Bad(
            "sent an outline that does not match the content hash".into(),
        ));
    }
    Ok(cvs)
}

/// The network thread: reads blocks `first..n` of the READ answer.
fn read_blocks(
    mut stream: TcpStream,
    size: u64,
    first: u64,
    n: u64,
    tx: &mpsc::SyncSender<Block>,
    free: &mpsc::Receiver<Vec<u8>>,
) {
    for i in first..n {
        let (start, end) = outline::block_range(size, i);
        let len = usize::try_from(end - start).unwrap_or(usize::MAX);
        // Blocks until the writer hands a buffer back (or has stopped).
        let Ok(mut buf) = free.recv() else { return };
        if buf.len() != len {
            if buf.capacity() < len && buf.try_reserve_exact(len - buf.len()).is_err() {
                let _ = tx.send(Err(io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    "block too large",
                )));
                return;
            }
            buf.resize(len, 0);
        }
        let r = read_full(&mut stream, &mut buf);
        let failed = r.is_err();
        if tx.send(r.map(|()| (i, buf))).is_err() || failed {
            return;
        }
    }
}

/// `read_exact` that keeps partial progress meaningful for stall detection:
/// each read may wait at most the stream's read timeout.
fn read_full(stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<()> {
    let mut got = 0;
    let started = Instant::now();
    while got < buf.len() {
        match stream.read(&mut buf[got..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::debug!(after = ?started.elapsed(), got, "block read failed: {e}");
                return Err(e);
            }
        }
    }
    Ok(())
}
