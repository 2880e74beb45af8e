//! The peer's TCP server: accept loop, connection cap and shutdown (async),
//! with each accepted connection answered on a blocking thread by
//! `respond`.
//!
//! Shaped like mini-redis's `server::run(listener, shutdown)`: the caller binds
//! the listener (tests use port 0) and passes a cancellation token. The
//! connection `Slots` cap concurrent connections, in all and per address
//! (an IPv4 address, or an IPv6 /64: one host's share), so that one client
//! holding cheap idle connections cannot make the peer answer BUSY to
//! everyone else; a connection over either cap is answered BUSY and closed
//! without taking a slot or a thread. A connection's lifetime is bounded too
//! (`connection_lifetime`, checked between requests in `respond`), so a
//! client that keeps sending cheap requests cannot hold a slot for ever.
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
use std::net::{IpAddr, Shutdown, SocketAddr};
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
    /// Most connections served at once to one address (see [`AddrKey`]).
    pub max_per_address: usize,
    /// How long one connection may be used (checked between requests).
    pub connection_lifetime: Duration,
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
            max_per_address: default_per_address(64),
            connection_lifetime: Duration::from_secs(600),
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

/// The default per-address cap for a total cap of `max_connections`: an
/// eighth of it, at least 2 (and never more than the total).
pub fn default_per_address(max_connections: usize) -> usize {
    (max_connections / 8).max(2).min(max_connections.max(1))
}

/// What the per-address cap counts by: an IPv4 address, or the /64 of an
/// IPv6 address (one host or home network usually has a whole /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddrKey(IpAddr);

impl AddrKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => AddrKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddrKey(IpAddr::V4(v4)),
                None => AddrKey(IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into())),
            },
        }
    }
}

/// Who may be served now: a cap on all connections together and a cap per
/// address.
#[derive(Debug)]
struct Slots {
    total: Arc<Semaphore>,
    per_address: usize,
    by_address: Arc<Mutex<HashMap<AddrKey, usize>>>,
}

/// A connection's slot; dropping it frees the slot.
#[derive(Debug)]
struct Slot {
    _total: OwnedSemaphorePermit,
    key: AddrKey,
    by_address: Arc<Mutex<HashMap<AddrKey, usize>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

/// Why a connection was not given a slot.
#[derive(Debug, Clone, Copy)]
enum Full {
    Server,
    Address,
}

impl Slots {
    fn new(max_connections: usize, per_address: usize) -> Self {
        Slots {
            total: Arc::new(Semaphore::new(max_connections.max(1))),
            per_address: per_address.max(1),
            by_address: Arc::default(),
        }
    }

    /// A slot for one connection from `ip`, held until it is dropped.
    fn try_take(&self, ip: IpAddr) -> Result<Slot, Full> {
        let key = AddrKey::of(ip);
        let mut m = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.get(&key).copied().unwrap_or(0);
        if n >= self.per_address {
            return Err(Full::Address);
        }
        let permit = Arc::clone(&self.total)
            .try_acquire_owned()
            .map_err(|_| Full::Server)?;
        m.insert(key, n + 1);
        Ok(Slot {
            _total: permit,
            key,
            by_address: Arc::clone(&self.by_address),
        })
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
    let slots = Slots::new(config.max_connections, config.max_per_address);
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
        let slot = match slots.try_take(addr.ip()) {
            Ok(slot) => slot,
            Err(full) => {
                debug!(%addr, ?full, "over the connection cap; answering busy");
                tasks.spawn(answer_busy(stream, addr, full));
                continue;
            }
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
            drop(slot);
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

/// Answers BUSY to a connection over a cap, then closes it. Async, so a
/// flood of connections over the cap takes no thread.
async fn answer_busy(mut stream: tokio::net::TcpStream, addr: SocketAddr, full: Full) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let msg = encode_error(
        Status::Busy,
        match full {
            Full::Server => "too many connections; try again later or another peer",
            Full::Address => {
                "too many connections from your address; close some, or try again later"
            }
        },
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn per_address_cap_counts_hosts_and_frees_on_drop() {
        let slots = Slots::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = slots.try_take(a).unwrap();
        let _a2 = slots.try_take(a).unwrap();
        assert!(matches!(slots.try_take(a), Err(Full::Address)));
        // The same host as an IPv4-mapped IPv6 address is the same address.
        assert!(matches!(
            slots.try_take("::ffff:192.0.2.1".parse().unwrap()),
            Err(Full::Address)
        ));
        let _b1 = slots.try_take(b).unwrap();
        assert!(matches!(slots.try_take(b), Err(Full::Server)));
        drop(a1);
        let _b2 = slots.try_take(b).unwrap();
        // One IPv6 /64 is one address.
        let slots = Slots::new(8, 1);
        let _v6 = slots.try_take("2001:db8::1".parse().unwrap()).unwrap();
        assert!(matches!(
            slots.try_take("2001:db8::ffff:2".parse().unwrap()),
            Err(Full::Address)
        ));
        assert!(slots.try_take("2001:db8:0:1::1".parse().unwrap()).is_ok());
    }

    #[test]
    fn default_per_address_is_a_small_fraction() {
        assert_eq!(default_per_address(64), 8);
        assert_eq!(default_per_address(2), 2);
        assert_eq!(default_per_address(1), 1);
        assert_eq!(default_per_address(1000), 125);
    }
}
