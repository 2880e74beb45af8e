//! Answering the requests of one connection, on a blocking thread.
//!
//! A request names content by hash only, looked up in the share index: no
//! byte from the wire ever becomes a path. A READ answer is read from the
//! file with positional std reads into a buffer of up to 1 MiB and written
//! piece by piece through the [`Connection`], each piece within the write
//! deadline. This is the data path: it runs like a plain file→TCP copy.
//! (`std::io::copy` from a `File` to a `TcpStream` was tried: std did not use
//! `sendfile` for it here and fell back to 8 KiB reads and writes. `sendfile`
//! itself, through rustix, was measured against this loop: it saved the
//! server about 7 % of its CPU, but the downloader on the same machine spent
//! 1.5 to 2 times more system time receiving, and 4 of 5 paired runs were
//! slower; see BENCHMARKS.md.)
//!
//! An upload limit is shared by all connections ([`Pacer`]): each piece
//! reserves its slot in time and its sender sleeps until the slot starts.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::ServerConfig;
use crate::share::{Lookup, Share, SharedFile};
use crate::transfer::connection::{Connection, Incoming};
use crate::transfer::pace::Pacer;
use crate::transfer::wire::{Kind, Request, Status};

/// Largest piece a READ answer is read from disk and written in.
const PIECE: usize = 1 << 20;

/// What every connection's answers need: the share, the upload limit, and
/// the rescan signal. Shared by all connections.
#[derive(Debug)]
pub(super) struct Responder {
    share: Arc<Share>,
    pacer: Option<Pacer>,
    /// Size of the pieces a READ answer is sent in (smaller under a low
    /// upload limit, so the pacing stays smooth).
    piece: usize,
    rescan: Arc<Notify>,
    /// How long one connection may be used (checked between requests).
    lifetime: Duration,
}

/// Why a connection ended (for the debug log).
enum End {
    Closed,
    Idle,
    /// A request was refused with an answer, and the stream cannot be trusted
    /// to be in frame any more: close gently.
    Rejected(String),
    /// A READ answer could not be completed (already logged).
    Unfinished,
    Failed(io::Error),
}

impl Responder {
    pub(super) fn new(share: Arc<Share>, config: &ServerConfig, rescan: Arc<Notify>) -> Self {
        let rate = config.max_upload_rate.filter(|r| *r > 0);
        let piece = match rate {
            Some(rate) => usize::try_from(rate / 8)
                .unwrap_or(PIECE)
                .clamp(16 * 1024, PIECE),
            None => PIECE,
        };
        Responder {
            share,
            pacer: Pacer::new(rate),
            piece,
            rescan,
            lifetime: config.connection_lifetime,
        }
    }

    /// Answers requests on `conn` until the client closes, goes idle, breaks
    /// the framing, uses up the connection's lifetime, or `shutdown` is
    /// cancelled.
    pub(super) fn serve(&self, mut conn: Connection, shutdown: &CancellationToken) {
        let addr = conn.peer();
        // One buffer for all of this connection's READ answers: a downloader
        // sends one READ per block, and a fresh 1 MiB buffer per answer costs
        // a page fault per 4 KiB.
        let mut buf = Vec::new();
        let opened = Instant::now();
        let end = loop {
            if shutdown.is_cancelled() {
                break End::Closed;
            }
            let req = match conn.read_request() {
                Ok(Incoming::Request(r)) => r,
                Ok(Incoming::Closed) => break End::Closed,
                Ok(Incoming::Idle) => break End::Idle,
                Ok(Incoming::TooSlow) => {
                    let _ =
                        conn.write_error(Status::BadRequest, "request frame not completed in time");
                    break End::Rejected("request frame too slow".into());
                }
                Ok(Incoming::Malformed(e)) => {
                    debug!(%addr, "bad request: {e}");
                    if let Err(e) = conn.write_error(e.status(), &e.to_string()) {
                        break End::Failed(e);
                    }
                    if e.keeps_framing() {
                        continue;
                    }
                    break End::Rejected(e.to_string());
                }
                Err(e) => break End::Failed(e),
            };
            if opened.elapsed() >= self.lifetime {
                // Every request gets an answer, this one included.
                let _ = conn.write_error(
                    Status::Busy,
                    "this connection has been open for its whole lifetime; reconnect",
                );
                break End::Rejected("connection lifetime over".into());
            }
            let result = match req.kind {
                Kind::Outline => self.answer_outline(&mut conn, &req),
                Kind::Read => self.answer_read(&mut conn, addr, &req, &mut buf),
            };
            match result {
                Ok(true) => {}
                Ok(false) => break End::Unfinished,
                Err(e) => break End::Failed(e),
            }
        };
        match end {
            End::Closed => debug!(%addr, "connection closed"),
            End::Idle => debug!(%addr, "connection idle; closed"),
            End::Rejected(why) => {
                conn.linger_close();
                debug!(%addr, "connection ended: {why}");
            }
            End::Unfinished => debug!(%addr, "connection ended: could not finish an answer"),
            End::Failed(e) => debug!(%addr, "connection ended: {e}"),
        }
    }

    /// The shared file `req` names, or `None` after answering NOT_FOUND, or
    /// UNAVAILABLE for a content this peer shared until it changed a moment
    /// ago (the connection can go on).
    fn shared_or_not_found(
        &self,
        conn: &mut Connection,
        req: &Request,
    ) -> io::Result<Option<Arc<SharedFile>>> {
        match self.share.lookup(&req.hash) {
            Lookup::Shared(f) => return Ok(Some(f)),
            Lookup::Retired => conn.write_error(
                Status::Unavailable,
                "the file changed on this peer; ask again later",
            )?,
            Lookup::Unknown => {
                conn.write_error(Status::NotFound, "this peer does not share that hash")?
            }
        }
        Ok(None)
    }

    /// Answers an OUTLINE request. `Ok(true)`: the connection can go on.
    fn answer_outline(&self, conn: &mut Connection, req: &Request) -> io::Result<bool> {
        if let Some(f) = self.shared_or_not_found(conn, req)? {
            conn.write_answer(&f.outline.to_payload())?;
        }
        Ok(true)
    }

    /// Answers a READ request. `Ok(true)`: the connection can go on;
    /// `Ok(false)`: the answer could not be completed and the connection must
    /// close.
    fn answer_read(
        &self,
        conn: &mut Connection,
        addr: SocketAddr,
        req: &Request,
        buf: &mut Vec<u8>,
    ) -> io::Result<bool> {
        let Some(f) = self.shared_or_not_found(conn, req)? else {
            return Ok(true);
        };
        let size = f.stamp.size;
        let end = match req.offset.checked_add(req.length) {
            Some(end) if end <= size => end,
            _ => {
                conn.write_error(
                    Status::BadRange,
                    &format!(
                        "range starts at {} for {} bytes; the content has {size}",
                        req.offset, req.length
                    ),
                )?;
                return Ok(true);
            }
        };
        let file = match f.open_checked() {
            Ok(Some(file)) => file,
            Ok(None) => {
                info!(name = %f.name, "shared file changed on disk; rescanning");
                self.rescan.notify_one();
                conn.write_error(
                    Status::Unavailable,
                    "the file changed on this peer; ask again later",
                )?;
                return Ok(true);
            }
            Err(e) => {
                warn!(name = %f.name, "cannot open shared file: {e}");
                conn.write_error(Status::Unavailable, "the file cannot be read on this peer")?;
                return Ok(true);
            }
        };
        conn.write_ok_header(req.length)?;

        let started = Instant::now();
        let len = usize::try_from(req.length).unwrap_or(self.piece);
        let want = self.piece.min(len).max(1);
        if buf.len() < want {
            buf.resize(want, 0);
        }
        let mut pos = req.offset;
        let outcome: io::Result<()> = (|| {
            while pos < end {
                let want = usize::try_from(end - pos)
                    .unwrap_or(buf.len())
                    .min(buf.len());
                let n = file.read_at(&mut buf[..want], pos)?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shrank while being served",
                    ));
                }
                if let Some(pacer) = &self.pacer {
                    std::thread::sleep(pacer.reserve(n as u64));
                }
                conn.write_piece(&buf[..n])?;
                pos += n as u64;
            }
            Ok(())
        })();
        // One line per READ, so per block for a downloader: debug, not info.
        let sent = pos - req.offset;
        let secs = started.elapsed().as_secs_f64();
        let hash = f.hash.to_string();
        let hash8 = &hash[..8];
        match outcome {
            Ok(()) => {
                debug!(
                    "served {:?} ({hash8}) bytes {}..{end} ({}) to {addr} in {secs:.2}s",
                    f.name,
                    req.offset,
                    crate::ui::human_bytes(sent)
                );
                Ok(true)
            }
            Err(e) => {
                debug!(
                    "transfer of {:?} ({hash8}) bytes {}.. to {addr} stopped after {} of {}: {e}",
                    f.name,
                    req.offset,
                    crate::ui::human_bytes(sent),
                    crate::ui::human_bytes(req.length)
                );
                Ok(false)
            }
        }
    }
}
