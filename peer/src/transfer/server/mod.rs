//! The peer's TCP server: accept loop, connection cap and shutdown (async),
//! with each accepted connection answered on a blocking thread by
//! `respond`.
//!
//! Shaped like mini-redis's `server::run(listener, shutdown)`: the caller binds
//! the listener (tests use port 0) and passes a cancellation token. The
//! connection `Slots` cap concurrent connections; a connection over the cap
//! is answered BUSY and closed without taking a slot.
//!
//! Each accepted connection is turned into a blocking `std::net::TcpStream`
//! wrapped in a [`Connection`] and served on tokio's blocking pool: the data
//! path runs like a plain file→TCP copy, where `tokio::io::copy` over
//! `tokio::fs::File` would move a tenth of that (see `respond.rs`).
//!
//! Shutdown: stop accepting, close the read side of every connection (idle ones
//! end at once, a response being written is finished), and after
//! `shutdown_grace` close whatever is left, which aborts those transfers; a
//! downloader keeps its verified part and resumes elsewhere.

mod respond;

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::connection::{Closer, Connection, Deadlines};
use super::wire::{Status, encode_error};
use crate::share::Share;
use respond::Responder;

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

impl ServerConfig {
    fn deadlines(&self) -> Deadlines {
        Deadlines {
            idle: self.idle_timeout,
            frame: self.request_timeout,
            io: self.io_timeout,
        }
    }
}

/// Who may be served now: one cap on all connections together. Admission
/// rules that depend on the caller (a cap per address) belong here too.
#[derive(Debug)]
struct Slots {
    total: Arc<Semaphore>,
}

impl Slots {
    fn new(max_connections: usize) -> Self {
        Slots {
            total: Arc::new(Semaphore::new(max_connections.max(1))),
        }
    }

    /// A slot for one connection, held until the permit is dropped, or `None`
    /// when the server is full.
    fn try_take(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.total).try_acquire_owned().ok()
    }
}

/// Open connections, so shutdown can close them.
#[derive(Debug, Default)]
struct OpenConnections {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Closer>>,
}

impl OpenConnections {
    fn add(&self, conn: &Connection) -> Option<u64> {
        let closer = conn.closer().ok()?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.open.lock() {
            m.insert(id, closer);
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
                for c in m.values() {
                    c.shutdown(how);
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
    let slots = Slots::new(config.max_connections);
    let tasks = TaskTracker::new();
    let open = Arc::new(OpenConnections::default());
    let deadlines = config.deadlines();
    let responder = Arc::new(Responder::new(share, &config, rescan));
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
        let Some(permit) = slots.try_take() else {
            debug!(%addr, "over the connection cap; answering busy");
            tasks.spawn(answer_busy(stream, addr));
            continue;
        };
        let conn = match stream
            .into_std()
            .and_then(|s| Connection::new(s, addr, deadlines))
        {
            Ok(c) => c,
            Err(e) => {
                warn!(%addr, "could not set up connection: {e}");
                continue;
            }
        };
        let responder = Arc::clone(&responder);
        let open = Arc::clone(&open);
        let shutdown = shutdown.clone();
        tasks.spawn_blocking(move || {
            let id = open.add(&conn);
            responder.serve(conn, &shutdown);
            if let Some(id) = id {
                open.remove(id);
            }
            drop(permit);
        });
    }
    drop(listener);
    tasks.close();
    let n = open.shutdown_all(Shutdown::Read);
    if n > 0 {
        info!(
            "waiting up to {:?} for {n} connection(s) to finish",
            config.shutdown_grace
        );
    }
    if tokio::time::timeout(config.shutdown_grace, tasks.wait())
        .await
        .is_err()
    {
        let n = open.shutdown_all(Shutdown::Both);
        warn!("aborted {n} transfer(s) still running after the shutdown grace period");
        tasks.wait().await;
    }
}

/// Answers BUSY to a connection over the cap, then closes it. Async, so a
/// flood of connections over the cap takes no thread.
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
        std::io::Result::Ok(())
    };
    if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(2), work).await {
        debug!(%addr, "busy answer: {e}");
    }
}
