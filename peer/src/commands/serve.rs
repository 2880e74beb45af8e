//! The `sbcftp-peer serve` command: keep the share folder's index live
//! ([`crate::share::live`]: watched, hashed off this path), start the TCP
//! server ([`crate::transfer::server`], which answers other peers), and keep
//! the tracker informed until shutdown. This module is the orchestration;
//! it moves no file bytes and hashes nothing itself.
//!
//! The tracker side is one task, the `Keeper`: register (retrying
//! transient failures with exponential backoff), heartbeat at the interval
//! the tracker returns, and register again by itself when a heartbeat or
//! file update answers 404 (the tracker restarted with a new database, or
//! swept us after an outage). Every new index the live folder publishes is
//! sent as one `PATCH` (changes of the same moment batched together). The
//! keeper never waits for hashing, however large, so heartbeats keep the
//! peer id alive while a big file is hashed; every tracker call races the
//! shutdown signal, so Ctrl-C is never held up either.
//!
//! On shutdown the server stops accepting and finishes or aborts transfers,
//! and the peer leaves the tracker (`DELETE`) so it disappears at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sbcftp_api::PatchFilesRequest;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::cli::ServeArgs;
use crate::share::live::{self, LiveConfig};
use crate::share::{Share, ShareIndex};
use crate::tracker_client::{Registration, TrackerClient, TrackerError};
use crate::transfer::server::{self, ServerConfig, default_per_address};

/// How long index changes gather before they are sent in one PATCH.
const BATCH: Duration = Duration::from_millis(100);

/// Longest wait between retries when the tracker is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Runs `serve` until `shutdown` is cancelled.
pub async fn run(
    args: ServeArgs,
    tracker: &str,
    registration_key: Option<String>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let share_dir = &args.share;
    if !share_dir.is_dir() {
        anyhow::bail!(
            "share folder {} does not exist or is not a folder; create it or pass --share",
            share_dir.display()
        );
    }
    let share = Arc::new(Share::new(share_dir, args.cache_dir.as_deref())?);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| listen_error(args.listen, e))?;
    let local: SocketAddr = listener
        .local_addr()
        .context("cannot read the listening address")?;
    info!(
        "listening on {local}; share folder {}",
        share.dir().display()
    );

    let local_ip = (!args.listen.ip().is_unspecified()).then(|| args.listen.ip());
    let client = TrackerClient::new(tracker, registration_key, local_ip)?;

    // Files whose hash is known (cached, or unchanged) are shared at once;
    // the others are hashed in the background and announced when done.
    let rescan = Arc::new(Notify::new());
    let live_cfg = LiveConfig {
        settle: args.settle_time,
        rescan_every: args.rescan_interval,
        max_hash_rate: args.max_hash_rate.filter(|r| *r > 0),
    };
    let live_stop = shutdown.child_token();
    let live = live::start(
        Arc::clone(&share),
        live_cfg,
        Arc::clone(&rescan),
        live_stop.clone(),
    )
    .await
    .with_context(|| format!("cannot scan the share folder {}", share.dir().display()))?;
    let index = share.index();
    info!(
        "sharing {} file(s) from {}",
        index.len(),
        share.dir().display()
    );

    let server_cfg = ServerConfig {
        max_connections: args.max_connections,
        max_per_address: args
            .max_connections_per_address
            .unwrap_or_else(|| default_per_address(args.max_connections)),
        connection_lifetime: args.connection_lifetime,
        idle_timeout: args.idle_timeout,
        request_timeout: args.io_timeout,
        io_timeout: args.io_timeout,
        max_upload_rate: args.max_upload_rate,
        shutdown_grace: args.shutdown_grace,
    };
    let server_stop = shutdown.child_token();
    let server = tokio::spawn(server::run(
        listener,
        Arc::clone(&share),
        server_cfg,
        server_stop.clone(),
        rescan,
    ));

    let port = args.advertise_port.unwrap_or(local.port());
    let mut keeper = Keeper {
        client,
        share,
        port,
        reg: None,
        announced: Arc::new(ShareIndex::default()),
        interval: Duration::from_secs(15),
        backoff: Backoff::default(),
        next_tick: Instant::now(),
        retry_sync: None,
        addr: String::new(),
        told: None,
        failed_heartbeats: 0,
    };
    let result = keeper.run(&shutdown).await;

    // Leave first, so no new downloader picks this peer, then drain the server.
    live_stop.cancel();
    server_stop.cancel();
    keeper.leave().await;
    if let Err(e) = server.await {
        warn!("server task failed: {e}");
    }
    if let Err(e) = live.await {
        warn!("share folder task failed: {e}");
    }
    info!("stopped");
    result
}

/// Why `serve` cannot listen on `addr`, and what to do instead.
fn listen_error(addr: SocketAddr, e: std::io::Error) -> anyhow::Error {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
            "cannot listen on {addr}: the port is in use (another sbcftp-peer serve?); stop it or pass another --listen port (port 0 picks a free one)"
        ),
        std::io::ErrorKind::AddrNotAvailable => anyhow::anyhow!(
            "cannot listen on {addr}: no network interface of this machine has {}; pass one of its addresses, or 0.0.0.0 for all",
            addr.ip()
        ),
        std::io::ErrorKind::PermissionDenied => anyhow::anyhow!(
            "cannot listen on {addr}: permission denied (ports below 1024 need privileges); pass a --listen port from 1024 up"
        ),
        _ => anyhow::Error::new(e).context(format!("cannot listen on {addr}")),
    }
}

/// Exponential backoff between retries.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let d = Duration::from_secs(1u64 << self.failures.min(5)).min(MAX_BACKOFF);
        self.failures += 1;
        d
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Keeps the tracker's view of this peer up to date.
struct Keeper {
    client: TrackerClient,
    share: Arc<Share>,
    port: u16,
    reg: Option<Registration>,
    /// The file list the tracker has.
    announced: Arc<ShareIndex>,
    interval: Duration,
    backoff: Backoff,
    /// When to register or heartbeat next.
    next_tick: Instant,
    /// When to retry a file update that failed.
    retry_sync: Option<Instant>,
    /// The address the tracker lists this peer under.
    addr: String,
    /// The reachability last told to the user.
    told: Option<bool>,
    /// Heartbeats failed in a row (logged as resumed when one succeeds).
    failed_heartbeats: u32,
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Runs `work` unless `shutdown` comes first (then `None`).
async fn unless_shutdown<T>(
    shutdown: &CancellationToken,
    work: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        r = work => Some(r),
        () = shutdown.cancelled() => None,
    }
}

impl Keeper {
    async fn run(&mut self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let mut changes = self.share.subscribe();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                // A deadline, not a sleep per loop turn, so file updates
                // never postpone heartbeats.
                () = tokio::time::sleep_until(self.next_tick) => {
                    let Some(wait) = unless_shutdown(shutdown, self.tick()).await else {
                        return Ok(());
                    };
                    self.next_tick = Instant::now() + wait?;
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        // The share is gone (cannot happen while we hold it).
                        return Ok(());
                    }
                    // Changes of the same moment go in one PATCH.
                    if unless_shutdown(shutdown, tokio::time::sleep(BATCH)).await.is_none() {
                        return Ok(());
                    }
                    changes.borrow_and_update();
                    if unless_shutdown(shutdown, self.sync()).await.is_none() {
                        return Ok(());
                    }
                }
                () = sleep_until(self.retry_sync) => {
                    if unless_shutdown(shutdown, self.sync()).await.is_none() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Registers or heartbeats; returns how long to wait before the next tick.
    async fn tick(&mut self) -> anyhow::Result<Duration> {
        let Some(reg) = self.reg.clone() else {
            return self.register().await;
        };
        match self.client.heartbeat(&reg).await {
            Ok(hb) => {
                self.backoff.reset();
                self.interval = Duration::from_secs(hb.heartbeat_interval_secs.max(1));
                if self.failed_heartbeats > 0 {
                    info!(
                        "heartbeats resumed after {} failed attempt(s)",
                        self.failed_heartbeats
                    );
                    self.failed_heartbeats = 0;
                }
                debug!("heartbeat ok");
                self.tell_reachability(hb.reachable, hb.unreachable_reason.as_deref());
                Ok(self.interval)
            }
            Err(TrackerError::NotFound(_)) => {
                info!(peer_id = %reg.peer_id, "the tracker no longer knows this peer; registering again");
                self.reg = None;
                Ok(Duration::ZERO)
            }
            Err(e) if e.is_transient() => {
                let wait = self.backoff.next().min(self.interval);
                self.failed_heartbeats += 1;
                warn!("heartbeat failed, retrying in {wait:?}: {e}");
                Ok(wait)
            }
            Err(e) => {
                warn!("heartbeat refused ({e}); registering again");
                self.reg = None;
                Ok(self.backoff.next())
            }
        }
    }

    async fn register(&mut self) -> anyhow::Result<Duration> {
        let index = self.share.index();
        match self.client.register(self.port, index.entries()).await {
            Ok(r) => {
                self.backoff.reset();
                self.interval = Duration::from_secs(r.heartbeat_interval_secs.max(1));
                self.failed_heartbeats = 0;
                info!(
                    "registered with the tracker as {} at {} ({} file(s))",
                    r.peer_id,
                    r.addr,
                    index.len()
                );
                self.reg = Some(Registration {
                    peer_id: r.peer_id,
                    token: r.token,
                });
                self.addr = r.addr;
                self.announced = index;
                // The index may have moved on while registering.
                self.retry_sync = Some(Instant::now());
                Ok(self.interval)
            }
            Err(e) if e.is_transient() => {
                let wait = self.backoff.next();
                warn!("cannot register with the tracker, retrying in {wait:?}: {e}");
                Ok(wait)
            }
            Err(e) => Err(anyhow::Error::new(e).context(format!(
                "the tracker at {} refused the registration",
                self.client.base()
            ))),
        }
    }

    /// Says, once and again whenever it changes, whether the tracker could
    /// reach this peer (as the heartbeat answers tell; nothing while it is
    /// not checked).
    fn tell_reachability(&mut self, reachable: Option<bool>, reason: Option<&str>) {
        let Some(now) = reachable else { return };
        if self.told == Some(now) {
            return;
        }
        self.told = Some(now);
        let addr = &self.addr;
        if now {
            info!("the tracker can reach you at {addr}");
        } else {
            let why = crate::ui::safe(reason.unwrap_or("no answer"));
            let port = self.port;
            warn!(
                "the tracker could not reach you at {addr} ({why}): open TCP port {port} in your firewall or router, or pass --listen / --advertise-port"
            );
        }
    }

    /// Sends what changed in the share since the tracker was last told.
    async fn sync(&mut self) {
        self.retry_sync = None;
        let index = self.share.index();
        let (add, remove) = index.diff(&self.announced);
        if add.is_empty() && remove.is_empty() {
            self.announced = index;
            return;
        }
        let Some(reg) = self.reg.clone() else {
            // Not registered: the next registration sends the whole list.
            return;
        };
        info!(
            added = add.len(),
            removed = remove.len(),
            "share folder changed; updating the tracker"
        );
        let patch = PatchFilesRequest { add, remove };
        match self.client.patch_files(&reg, &patch).await {
            Ok(_) => self.announced = index,
            Err(TrackerError::NotFound(_)) => {
                info!("the tracker no longer knows this peer; registering again");
                self.reg = None;
                self.next_tick = Instant::now();
            }
            Err(e) if e.is_transient() => {
                let wait = self.backoff.next().min(self.interval);
                warn!("cannot update the tracker, retrying in {wait:?}: {e}");
                self.retry_sync = Some(Instant::now() + wait);
            }
            Err(e) => {
                // Refused (e.g. too many files): replace the whole list so the
                // tracker is at least consistent, or report why not.
                warn!("the tracker refused the file update: {e}");
                match self.client.replace_files(&reg, index.entries()).await {
                    Ok(_) => self.announced = index,
                    Err(e) => warn!("the tracker refused the file list: {e}"),
                }
            }
        }
    }

    async fn leave(&mut self) {
        let Some(reg) = self.reg.take() else { return };
        match tokio::time::timeout(Duration::from_secs(5), self.client.leave(&reg)).await {
            Ok(Ok(())) => info!(peer_id = %reg.peer_id, "left the tracker"),
            Ok(Err(TrackerError::NotFound(_))) => {
                info!("the tracker had already forgotten this peer")
            }
            Ok(Err(e)) => {
                warn!("could not leave the tracker (it will drop this peer after its TTL): {e}")
            }
            Err(_) => warn!("leaving the tracker timed out (it will drop this peer after its TTL)"),
        }
    }
}
