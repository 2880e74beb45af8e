//! Reachability: can other peers reach a peer at the address the tracker
//! lists for it? A peer behind a firewall or a NAT without a forwarded port
//! registers fine, but every download from it fails; the check finds that
//! out and says so (in listings, where unreachable holders come last, and
//! in heartbeat answers, so `serve` tells its user what to open).
//!
//! A check is one TCP connection to the peer's advertised address, one
//! OUTLINE request for a random hash (written with `sbcftp_api::wire`, the
//! peers' own protocol code), and one valid response header back (a peer
//! answers NOT_FOUND; any status in the protocol counts, BUSY included),
//! each step within `--reachability-timeout`. Nothing else is sent or read.
//!
//! It cannot be turned against others:
//!
//! - it only ever connects to the address a registration came from (the
//!   same address the tracker lists), on the port that registration
//!   advertised, once per registration, plus a periodic re-check of online
//!   peers every `--reachability-recheck` (at most [`RECHECK_BATCH`] per
//!   tick of [`RECHECK_TICK`], or of the re-check interval if shorter; with several replicas on one database, a claim in the
//!   database makes exactly one replica re-check a peer);
//! - at most [`MAX_RUNNING`] checks run at once; a registration that finds
//!   them all busy is not checked (its peer shows "not checked" until the
//!   re-check), so registering never waits for a slot;
//! - at most [`PER_IP`] checks per [`PER_IP_WINDOW`] go to one IP address,
//!   whatever the ports.
//!
//! The result is written to the peer's row (`reachable`,
//! `reachable_checked_at`, `unreachable_reason`) and to the liveness cache,
//! which heartbeat answers read; each replica also reads the results other
//! replicas wrote since its last look, every [`RECHECK_TICK`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sbcftp_api::wire::{
    MAX_MESSAGE_LEN, RESPONSE_HEADER_LEN, Request, ResponseError, ResponseHeader, Status,
};
use sbcftp_api::{ContentHash, PeerId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::{millis, now_ms};
use crate::liveness::{Liveness, Reach};
use crate::store::Store;

/// Most checks running at once.
pub const MAX_RUNNING: usize = 64;
/// Most checks sent to one IP address per [`PER_IP_WINDOW`].
pub const PER_IP: u32 = 30;
/// The window of [`PER_IP`].
pub const PER_IP_WINDOW: Duration = Duration::from_secs(60);
/// Most IP addresses whose check counts are kept (beyond that, checks to
/// new addresses wait for old windows to expire).
const MAX_IPS: usize = 65_536;
/// How often the re-check looks for peers that are due, and reads other
/// replicas' results.
pub const RECHECK_TICK: Duration = Duration::from_secs(5);
/// Most peers re-checked per tick.
pub const RECHECK_BATCH: i64 = 64;

/// How checks are made.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Whether checks are made at all.
    pub enabled: bool,
    /// Limit on connecting, and then on the answer.
    pub timeout: Duration,
    /// How often an online peer is checked again (zero: never).
    pub recheck: Duration,
    /// A peer silent this long is gone (not re-checked).
    pub ttl: Duration,
}

/// Runs the checks; shared by the handlers and the re-check task.
#[derive(Debug)]
pub struct Checker {
    settings: Settings,
    store: Store,
    liveness: Arc<Liveness>,
    running: Arc<Semaphore>,
    per_ip: Mutex<PerIp>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

/// Why a peer could not be reached: a short fixed phrase, shown to users.
pub type Unreachable = String;

impl Checker {
    pub fn new(settings: Settings, store: Store, liveness: Arc<Liveness>) -> Self {
        Checker {
            settings,
            store,
            liveness,
            running: Arc::new(Semaphore::new(MAX_RUNNING)),
            per_ip: Mutex::new(PerIp::default()),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        }
    }

    /// Whether checks are made.
    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// Checks a peer that just registered from `addr` (its IP and advertised
    /// port), in the background. Never waits: over a limit, the peer is
    /// left "not checked".
    pub fn after_registration(self: &Arc<Self>, peer_id: PeerId, addr: SocketAddr) {
        if !self.settings.enabled {
            return;
        }
        let Ok(slot) = Arc::clone(&self.running).try_acquire_owned() else {
            skipped(&peer_id, addr, "too many checks running");
            return;
        };
        if !self.admit(addr.ip()) {
            skipped(&peer_id, addr, "too many checks to this address");
            return;
        }
        let me = Arc::clone(self);
        self.tasks.spawn(async move {
            me.check(peer_id, addr).await;
            drop(slot);
        });
    }

    /// One check of `peer_id` at `addr`, recorded; stops early at shutdown.
    async fn check(&self, peer_id: PeerId, addr: SocketAddr) {
        let outcome = tokio::select! {
            r = probe(addr, self.settings.timeout) => r,
            () = self.stop.cancelled() => return,
        };
        let at = now_ms();
        let (reachable, reason) = match &outcome {
            Ok(()) => (true, None),
            Err(why) => (false, Some(why.as_str())),
        };
        metrics::counter!(
            "sbcftp_reachability_checks_total",
            "result" => if reachable { "reachable" } else { "unreachable" }
        )
        .increment(1);
        match &outcome {
            Ok(()) => tracing::debug!(%peer_id, %addr, "peer is reachable"),
            Err(why) => tracing::info!(%peer_id, %addr, reason = %why, "peer is not reachable"),
        }
        // The cache first: a heartbeat answer is never behind the listings.
        self.liveness.set_reach(
            &peer_id,
            Reach {
                reachable: Some(reachable),
                reason: reason.map(str::to_owned),
            },
        );
        if let Err(e) = self
            .store
            .set_reachability(&peer_id, reachable, at, reason)
            .await
        {
            tracing::warn!(%peer_id, error = %e, "cannot record a reachability check");
        }
    }

    /// Counts a check to `ip`; false when over [`PER_IP`].
    fn admit(&self, ip: IpAddr) -> bool {
        self.per_ip
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(ip, Instant::now())
    }

    /// The re-check task: every [`RECHECK_TICK`], reads the results other
    /// replicas recorded, and checks again the online peers whose last
    /// check is older than the re-check interval. Ends at `cancel`, after
    /// stopping and waiting for the checks in flight.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        if !self.settings.enabled {
            return;
        }
        // A short re-check interval (tests) ticks as often, down to a second.
        let every = match self.settings.recheck {
            d if d.is_zero() => RECHECK_TICK,
            d => d.clamp(Duration::from_secs(1), RECHECK_TICK),
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Results from before start-up are loaded with each peer's cache entry.
        let mut since = now_ms();
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = tick.tick() => {
                    let started = now_ms();
                    match self.refresh(since).await {
                        // A little overlap: a result written just before
                        // `started` by a slower replica is read next time too.
                        Ok(()) => since = started - millis(every),
                        Err(e) => tracing::warn!(error = %e, "cannot read reachability results"),
                    }
                    if let Err(e) = self.recheck().await {
                        tracing::warn!(error = %e, "cannot pick peers to re-check");
                    }
                }
            }
        }
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Copies results recorded since `since` (by any replica) into the cache.
    async fn refresh(&self, since: i64) -> Result<(), sqlx::Error> {
        for row in self.store.checked_since(since).await? {
            self.liveness.set_reach(
                &row.peer_id,
                Reach::from_row(row.reachable, row.unreachable_reason),
            );
        }
        Ok(())
    }

    /// Claims and checks the peers that are due.
    async fn recheck(self: &Arc<Self>) -> Result<(), sqlx::Error> {
        if !self.settings.enabled || self.settings.recheck.is_zero() {
            return Ok(());
        }
        let now = now_ms();
        let due = self
            .store
            .recheck_due(
                now - millis(self.settings.ttl),
                now - millis(self.settings.recheck),
                RECHECK_BATCH,
            )
            .await?;
        for row in due {
            if !self
                .store
                .claim_recheck(&row.peer_id, row.reachable_checked_at, now)
                .await?
            {
                continue;
            }
            let Ok(addr) = row.addr.parse::<SocketAddr>() else {
                tracing::warn!(peer_id = %row.peer_id, addr = %row.addr, "stored address does not parse");
                continue;
            };
            if !self.admit(addr.ip()) {
                skipped(&row.peer_id, addr, "too many checks to this address");
                continue;
            }
            let Ok(slot) = Arc::clone(&self.running).acquire_owned().await else {
                break;
            };
            let me = Arc::clone(self);
            self.tasks.spawn(async move {
                me.check(row.peer_id, addr).await;
                drop(slot);
            });
        }
        Ok(())
    }
}

/// Checks per IP address in the current window: its start and count.
#[derive(Debug, Default)]
struct PerIp(HashMap<IpAddr, (Instant, u32)>);

impl PerIp {
    /// Counts a check to `ip` at `now`; false when over [`PER_IP`] in its
    /// window (or when too many addresses are tracked).
    fn admit(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.0.len() >= MAX_IPS && !self.0.contains_key(&ip) {
            self.0
                .retain(|_, (start, _)| now.duration_since(*start) < PER_IP_WINDOW);
            if self.0.len() >= MAX_IPS {
                return false;
            }
        }
        let (start, count) = self.0.entry(ip).or_insert((now, 0));
        if now.duration_since(*start) >= PER_IP_WINDOW {
            (*start, *count) = (now, 0);
        }
        if *count >= PER_IP {
            return false;
        }
        *count += 1;
        true
    }
}

fn skipped(peer_id: &PeerId, addr: SocketAddr, why: &str) {
    metrics::counter!("sbcftp_reachability_checks_total", "result" => "skipped").increment(1);
    tracing::debug!(%peer_id, %addr, "reachability not checked: {why}");
}

/// Connects to `addr`, sends an OUTLINE for a random hash, and reads one
/// response header, each within `timeout`. `Ok` when the header is in the
/// peer protocol; else why not.
pub async fn probe(addr: SocketAddr, timeout: Duration) -> Result<(), Unreachable> {
    let connect = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await;
    let mut stream = match connect {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(io_reason(&e)),
        Err(_) => return Err("connection timed out".into()),
    };
    let exchange = async {
        let hash = ContentHash::from_bytes(rand::random());
        stream.write_all(&Request::outline(hash).encode()).await?;
        let mut header = [0u8; RESPONSE_HEADER_LEN];
        stream.read_exact(&mut header).await?;
        std::io::Result::Ok(header)
    };
    let header = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err("the connection was closed without an answer".into());
        }
        Ok(Err(e)) => return Err(io_reason(&e)),
        Err(_) => {
            return Err(format!(
                "connected, but no answer within {}s",
                timeout.as_secs_f64()
            ));
        }
    };
    match ResponseHeader::decode(&header) {
        Ok(h) => {
            // Read the short message too, so closing does not reset the
            // peer's side of the connection.
            if h.status != Status::Ok && h.length <= MAX_MESSAGE_LEN {
                let mut msg = vec![0u8; usize::try_from(h.length).unwrap_or(0)];
                let _ = tokio::time::timeout(timeout, stream.read_exact(&mut msg)).await;
            }
            Ok(())
        }
        // A peer of another protocol version still speaks the protocol.
        Err(ResponseError::UnsupportedVersion(_)) => Ok(()),
        Err(_) => Err("something answered, but not an SBCFTP peer".into()),
    }
}

/// A fixed phrase for an I/O error (its kind; never the error's own text).
fn io_reason(e: &std::io::Error) -> Unreachable {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "connection refused".into(),
        K::TimedOut => "connection timed out".into(),
        K::ConnectionReset => "connection reset".into(),
        K::HostUnreachable => "host unreachable".into(),
        K::NetworkUnreachable => "network unreachable".into(),
        kind => kind.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_to_one_address_are_limited_per_window() {
        let mut per_ip = PerIp::default();
        let t0 = Instant::now();
        let a: IpAddr = [192, 0, 2, 1].into();
        let b: IpAddr = [192, 0, 2, 2].into();
        for _ in 0..PER_IP {
            assert!(per_ip.admit(a, t0));
        }
        assert!(!per_ip.admit(a, t0));
        assert!(!per_ip.admit(a, t0 + PER_IP_WINDOW / 2));
        // Other addresses have their own count; a new window starts afresh.
        assert!(per_ip.admit(b, t0));
        assert!(per_ip.admit(a, t0 + PER_IP_WINDOW));
    }

    #[tokio::test]
    async fn a_closed_port_and_a_stranger_are_unreachable() {
        let timeout = Duration::from_secs(5);
        // Nothing listens: refused.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
            l.local_addr().unwrap_or_else(|e| panic!("{e}")).port()
        };
        let closed = SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(
            probe(closed, timeout).await,
            Err("connection refused".into())
        );
        // Something that answers in another protocol.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            if let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        assert_eq!(
            probe(addr, timeout).await,
            Err("something answered, but not an SBCFTP peer".into())
        );
    }
}
