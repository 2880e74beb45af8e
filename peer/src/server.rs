//! The peer's TCP server: accept loop, connection cap, and one blocking
//! thread per connection that answers requests from the share index.
//!
//! Shaped like mini-redis's `server::run(listener, shutdown)`: the caller binds
//! the listener (tests use port 0) and passes a cancellation token. A
//! [`Semaphore`] caps concurrent connections; a connection over the cap is
//! answered BUSY and closed without taking a slot.
//!
//! Each accepted connection is turned into a blocking `std::net::TcpStream`
//! and served on tokio's blocking pool; a READ answer is read from the file
//! with positional std reads into a 1 MiB buffer and written with plain
//! `write` calls. This is the data path: it runs like a plain file→TCP copy,
//! where `tokio::io::copy` over `tokio::fs::File` would move a tenth of that.
//! (`std::io::copy` from a `File` to a `TcpStream` was tried: std did not use
//! `sendfile` for it here and fell back to 8 KiB reads and writes.)
//!
//! Deadlines: waiting for the first byte of a request is bounded by
//! `idle_timeout`; the rest of the 56-byte frame must arrive within
//! `request_timeout` (a slow sender cannot hold a slot); every 1 MiB piece of a
//! response must be written within `io_timeout` (a stalled reader cannot
//! either). Requests name content by hash only, looked up in the share index:
//! no byte from the wire ever becomes a path.
//!
//! Shutdown: stop accepting, close the read side of every connection (idle ones
//! end at once, a response being written is finished), and after
//! `shutdown_grace` close whatever is left, which aborts those transfers; a
//! downloader keeps its verified part and resumes elsewhere.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::outline;
use crate::protocol::{
    Kind, REQUEST_LEN, Request, ResponseHeader, Status, encode_error, encode_outline,
};
use crate::share::{Share, SharedFile};

/// Size of the pieces a READ answer is read from disk and written in.
const PIECE: usize = 1 << 20;

/// Limits and deadlines of the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Most connections served at once.
    pub max_connections: usize,
    /// How long a connection may wait between requests.
    pub idle_timeout: Duration,
    /// How long a request frame may take to arrive once it started.
    pub request_timeout: Duration,
    /// How long writing one piece (up to 1 MiB) of an answer may take.
    pub io_timeout: Duration,
    /// Bytes per second all connections together may send (None: unlimited).
    pub max_upload_rate: Option<u64>,
    /// How long transfers in flight may go on after shutdown starts.
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 64,
            idle_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(30),
            max_upload_rate: None,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// The upload limit shared by all connections: each piece reserves its slot
/// in time, and its sender sleeps until the slot starts.
#[derive(Debug)]
struct RateLimiter {
    rate: u64,
    next: Mutex<Instant>,
}

impl RateLimiter {
    /// How long to wait before sending `n` bytes.
    fn reserve(&self, n: u64) -> Duration {
        let now = Instant::now();
        let mut next = match self.next.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let start = (*next).max(now);
        *next = start + Duration::from_secs_f64(n as f64 / self.rate as f64);
        start - now
    }
}

/// Open connections, so shutdown can close them.
#[derive(Debug, Default)]
struct Connections {
    next: AtomicU64,
    open: Mutex<HashMap<u64, TcpStream>>,
}

impl Connections {
    fn add(&self, s: &TcpStream) -> Option<u64> {
        let clone = s.try_clone().ok()?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.open.lock() {
            m.insert(id, clone);
        }
        Some(id)
    }

    fn remove(&self, id: u64) {
        if let Ok(mut m) = self.open.lock() {
            m.remove(&id);
        }
    }

    fn shutdown_all(&self, how: Shutdown) -> usize {
        match self.open.lock() {
            Ok(m) => {
                for s in m.values() {
                    let _ = s.shutdown(how);
                }
                m.len()
            }
            Err(_) => 0,
        }
    }
}

/// Serves `share` on `listener` until `shutdown` is cancelled, then finishes
/// or aborts the connections in flight (see the module docs). `rescan` is
/// notified when a shared file turned out to have changed on disk.
pub async fn run(
    listener: tokio::net::TcpListener,
    share: Arc<Share>,
    config: ServerConfig,
    shutdown: CancellationToken,
    rescan: Arc<Notify>,
) {
    let limit = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let tasks = TaskTracker::new();
    let conns = Arc::new(Connections::default());
    let limiter = config.max_upload_rate.filter(|r| *r > 0).map(|rate| {
        Arc::new(RateLimiter {
            rate,
            next: Mutex::new(Instant::now()),
        })
    });
    let config = Arc::new(config);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, addr) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off a little.
                warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            debug!(%addr, "over the connection cap; answering busy");
            tasks.spawn(answer_busy(stream, addr));
            continue;
        };
        let std_stream = match stream.into_std().and_then(|s| {
            s.set_nonblocking(false)?;
            s.set_nodelay(true)?;
            Ok(s)
        }) {
            Ok(s) => s,
            Err(e) => {
                warn!(%addr, "could not set up connection: {e}");
                continue;
            }
        };
        let share = Arc::clone(&share);
        let config = Arc::clone(&config);
        let shutdown = shutdown.clone();
        let rescan = Arc::clone(&rescan);
        let conns = Arc::clone(&conns);
        let limiter = limiter.clone();
        tasks.spawn_blocking(move || {
            let id = conns.add(&std_stream);
            serve_connection(
                std_stream,
                addr,
                &share,
                &config,
                limiter.as_deref(),
                &shutdown,
                &rescan,
            );
            if let Some(id) = id {
                conns.remove(id);
            }
            drop(permit);
        });
    }
    drop(listener);
    tasks.close();
    let open = conns.shutdown_all(Shutdown::Read);
    if open > 0 {
        info!(
            "waiting up to {:?} for {open} connection(s) to finish",
            config.shutdown_grace
        );
    }
    if tokio::time::timeout(config.shutdown_grace, tasks.wait())
        .await
        .is_err()
    {
        let n = conns.shutdown_all(Shutdown::Both);
        warn!("aborted {n} transfer(s) still running after the shutdown grace period");
        tasks.wait().await;
    }
}

/// Answers BUSY to a connection over the cap, then closes it.
async fn answer_busy(mut stream: tokio::net::TcpStream, addr: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let msg = encode_error(
        Status::Busy,
        "too many connections; try again later or another peer",
    );
    let work = async {
        stream.write_all(&msg).await?;
        stream.shutdown().await?;
        // Drain what the client sent so closing does not reset the connection
        // before it has read the answer.
        let mut sink = [0u8; 1024];
        let mut total = 0;
        while total < 64 * 1024 {
            let n = stream.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            total += n;
        }
        io::Result::Ok(())
    };
    if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(2), work).await {
        debug!(%addr, "busy answer: {e}");
    }
}

/// Why a connection ended (for the debug log).
enum End {
    Closed,
    Idle,
    Error(String),
}

fn serve_connection(
    mut stream: TcpStream,
    addr: SocketAddr,
    share: &Share,
    config: &ServerConfig,
    limiter: Option<&RateLimiter>,
    shutdown: &CancellationToken,
    rescan: &Notify,
) {
    let end = loop {
        if shutdown.is_cancelled() {
            break End::Closed;
        }
        let mut frame = [0u8; REQUEST_LEN];
        match read_frame(&mut stream, &mut frame, config) {
            Ok(FrameRead::Complete) => {}
            Ok(FrameRead::Eof) => break End::Closed,
            Ok(FrameRead::Idle) => break End::Idle,
            Ok(FrameRead::Truncated) => break End::Error("truncated request frame".into()),
            Ok(FrameRead::TooSlow) => {
                let _ = answer_error(
                    &mut stream,
                    config,
                    Status::BadRequest,
                    "request frame not completed in time",
                );
                linger_close(&mut stream);
                break End::Error("request frame too slow".into());
            }
            Err(e) => break End::Error(e.to_string()),
        }
        let req = match Request::decode(&frame) {
            Ok(r) => r,
            Err(e) => {
                debug!(%addr, "bad request: {e}");
                if let Err(e) = answer_error(&mut stream, config, e.status(), &e.to_string()) {
                    break End::Error(e.to_string());
                }
                if e.keeps_framing() {
                    continue;
                }
                linger_close(&mut stream);
                break End::Error(e.to_string());
            }
        };
        let result = match req.kind {
            Kind::Outline => answer_outline(&mut stream, share, config, &req),
            Kind::Read => answer_read(&mut stream, addr, share, config, limiter, &req, rescan),
        };
        match result {
            Ok(true) => {}
            Ok(false) => break End::Error("could not finish an answer".into()),
            Err(e) => break End::Error(e.to_string()),
        }
    };
    match end {
        End::Closed => debug!(%addr, "connection closed"),
        End::Idle => debug!(%addr, "connection idle; closed"),
        End::Error(e) => debug!(%addr, "connection ended: {e}"),
    }
}

enum FrameRead {
    Complete,
    Eof,
    Idle,
    Truncated,
    TooSlow,
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Reads one request frame: the first byte within the idle timeout, the rest
/// within the request deadline.
fn read_frame(
    stream: &mut TcpStream,
    frame: &mut [u8; REQUEST_LEN],
    config: &ServerConfig,
) -> io::Result<FrameRead> {
    stream.set_read_timeout(Some(nonzero(config.idle_timeout)))?;
    let first = loop {
        match stream.read(&mut frame[..]) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_timeout(&e) => return Ok(FrameRead::Idle),
            Err(e) => return Err(e),
        }
    };
    if first == 0 {
        return Ok(FrameRead::Eof);
    }
    let deadline = Instant::now() + config.request_timeout;
    let mut got = first;
    while got < REQUEST_LEN {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(FrameRead::TooSlow);
        }
        stream.set_read_timeout(Some(nonzero(left)))?;
        match stream.read(&mut frame[got..]) {
            Ok(0) => return Ok(FrameRead::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return Ok(FrameRead::TooSlow),
            Err(e) => return Err(e),
        }
    }
    Ok(FrameRead::Complete)
}

fn nonzero(d: Duration) -> Duration {
    d.max(Duration::from_millis(1))
}

/// Writes all of `buf` within `timeout`.
fn write_deadline(stream: &mut TcpStream, mut buf: &[u8], timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    while !buf.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "peer is not reading",
            ));
        }
        stream.set_write_timeout(Some(nonzero(left)))?;
        match stream.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "peer is not reading",
                ));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn answer_error(
    stream: &mut TcpStream,
    config: &ServerConfig,
    status: Status,
    msg: &str,
) -> io::Result<()> {
    write_deadline(stream, &encode_error(status, msg), config.io_timeout)
}

/// Closes after an answer the client may still be reading: stop writing, drain
/// a little of what it sent (briefly), so the close is not a reset that could
/// destroy the answer in flight.
fn linger_close(stream: &mut TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut sink = [0u8; 4096];
    let mut total = 0;
    while total < 64 * 1024 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
}

/// The shared file `req` names, or `None` after answering NOT_FOUND (the
/// connection can go on).
fn shared_or_not_found(
    stream: &mut TcpStream,
    share: &Share,
    config: &ServerConfig,
    req: &Request,
) -> io::Result<Option<Arc<SharedFile>>> {
    let found = share.index().by_hash(&req.hash).cloned();
    if found.is_none() {
        answer_error(
            stream,
            config,
            Status::NotFound,
            "this peer does not share that hash",
        )?;
    }
    Ok(found)
}

/// Answers an OUTLINE request. `Ok(true)`: the connection can go on.
fn answer_outline(
    stream: &mut TcpStream,
    share: &Share,
    config: &ServerConfig,
    req: &Request,
) -> io::Result<bool> {
    let Some(f) = shared_or_not_found(stream, share, config, req)? else {
        return Ok(true);
    };
    let payload = encode_outline(f.stamp.size, &f.cvs);
    let mut out = Vec::with_capacity(16 + payload.len());
    out.extend_from_slice(&ResponseHeader::new(Status::Ok, payload.len() as u64).encode());
    out.extend_from_slice(&payload);
    write_deadline(stream, &out, config.io_timeout)?;
    Ok(true)
}

/// Answers a READ request. `Ok(true)`: the connection can go on; `Ok(false)`:
/// the answer could not be completed and the connection must close.
fn answer_read(
    stream: &mut TcpStream,
    addr: SocketAddr,
    share: &Share,
    config: &ServerConfig,
    limiter: Option<&RateLimiter>,
    req: &Request,
    rescan: &Notify,
) -> io::Result<bool> {
    let Some(f) = shared_or_not_found(stream, share, config, req)? else {
        return Ok(true);
    };
    let size = f.stamp.size;
    let end = match req.offset.checked_add(req.length) {
        Some(end) if end <= size => end,
        _ => {
            answer_error(
                stream,
                config,
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
            rescan.notify_one();
            answer_error(
                stream,
                config,
                Status::Unavailable,
                "the file changed on this peer; ask again later",
            )?;
            return Ok(true);
        }
        Err(e) => {
            warn!(name = %f.name, "cannot open shared file: {e}");
            answer_error(
                stream,
                config,
                Status::Unavailable,
                "the file cannot be read on this peer",
            )?;
            return Ok(true);
        }
    };
    write_deadline(
        stream,
        &ResponseHeader::new(Status::Ok, req.length).encode(),
        config.io_timeout,
    )?;

    let started = Instant::now();
    let piece = match config.max_upload_rate {
        Some(rate) => usize::try_from(rate / 8)
            .unwrap_or(PIECE)
            .clamp(16 * 1024, PIECE),
        None => PIECE,
    };
    let mut buf = vec![
        0u8;
        piece
            .min(usize::try_from(req.length).unwrap_or(piece))
            .max(1)
    ];
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
            if let Some(limiter) = limiter {
                std::thread::sleep(limiter.reserve(n as u64));
            }
            write_deadline(stream, &buf[..n], config.io_timeout)?;
            pos += n as u64;
        }
        Ok(())
    })();
    let sent = pos - req.offset;
    let secs = started.elapsed().as_secs_f64();
    let hash8 = &outline::to_hex(&f.hash)[..8];
    match outcome {
        Ok(()) => {
            info!(
                peer = %addr, name = %f.name, hash = hash8, offset = req.offset, bytes = sent, secs,
                "served {:?} ({hash8}) bytes {}..{end} ({}) to {addr}", f.name, req.offset, crate::ui::human_bytes(sent)
            );
            Ok(true)
        }
        Err(e) => {
            info!(
                peer = %addr, name = %f.name, hash = hash8, offset = req.offset, bytes = sent, secs,
                "transfer of {:?} ({hash8}) to {addr} stopped after {} of {} bytes: {e}", f.name, sent, req.length
            );
            Ok(false)
        }
    }
}
