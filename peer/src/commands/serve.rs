//! The `sbcftp-peer serve` command: hash the share folder, start the TCP
//! server ([`crate::transfer::server`], which answers other peers), and keep
//! the tracker informed until shutdown. This module is the orchestration;
//! it moves no file bytes itself.
//!
//! The tracker side is one loop: register (retrying transient failures with
//! exponential backoff), heartbeat at the interval the tracker returns, and
//! register again by itself when a heartbeat or file update answers 404 (the
//! tracker restarted with a new database, or swept us after an outage). The
//! folder is rescanned every `--rescan-interval` (stat only, thanks to the
//! hash cache) and whenever the server finds a shared file changed; a change
//! is sent as one `PATCH`. On shutdown the server stops accepting and finishes
//! or aborts transfers, and the peer leaves the tracker (`DELETE`) so it
//! disappears at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sbcftp_api::PatchFilesRequest;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::cli::ServeArgs;
use crate::share::{Share, ShareIndex};
use crate::tracker_client::{Registration, TrackerClient, TrackerError};
use crate::transfer::server::{self, ServerConfig};

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
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local: SocketAddr = listener
        .local_addr()
        .context("cannot read the listening address")?;
    info!(addr = %local, share = %share.dir().display(), "listening on {local}");

    let local_ip = (!args.listen.ip().is_unspecified()).then(|| args.listen.ip());
    let client = TrackerClient::new(tracker, registration_key, local_ip)?;

    let scanner = Arc::clone(&share);
    let scan = tokio::task::spawn_blocking(move || scanner.scan());
    let scanned = tokio::select! {
        r = scan => r,
        _ = shutdown.cancelled() => {
            info!("stopped while hashing; hashes done so far are lost, the next start hashes again");
            return Ok(());
        }
    };
    let (index, _) = scanned
        .context("hashing task failed")?
        .with_context(|| format!("cannot scan the share folder {}", share.dir().display()))?;
    info!(
        files = index.len(),
        "sharing {} file(s) from {}",
        index.len(),
        share.dir().display()
    );

    let rescan = Arc::new(Notify::new());
    let server_cfg = ServerConfig {
        max_connections: args.max_connections,
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
        Arc::clone(&rescan),
    ));

    let port = args.advertise_port.unwrap_or(local.port());
    let mut keeper = Keeper {
        client,
        share,
        port,
        reg: None,
        announced: index,
        interval: Duration::from_secs(15),
        backoff: Backoff::default(),
    };
    let result = keeper.run(&shutdown, &rescan, args.rescan_interval).await;

    // Leave first, so no new downloader picks this peer, then drain the server.
    server_stop.cancel();
    keeper.leave().await;
    if let Err(e) = server.await {
        warn!("server task failed: {e}");
    }
    info!("stopped");
    result
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
}

impl Keeper {
    async fn run(
        &mut self,
        shutdown: &CancellationToken,
        rescan: &Notify,
        rescan_every: Duration,
    ) -> anyhow::Result<()> {
        let mut rescan_tick = tokio::time::interval(rescan_every.max(Duration::from_secs(1)));
        rescan_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        rescan_tick.reset();
        // A deadline, not a sleep per loop turn, so rescans never postpone heartbeats.
        let mut next_at = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep_until(next_at) => {
                    next_at = tokio::time::Instant::now() + self.tick().await?;
                }
                _ = rescan_tick.tick() => self.rescan().await?,
                _ = rescan.notified() => self.rescan().await?,
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
                debug!("heartbeat ok");
                Ok(self.interval)
            }
            Err(TrackerError::NotFound(_)) => {
                info!(peer_id = %reg.peer_id, "the tracker no longer knows this peer; registering again");
                self.reg = None;
                Ok(Duration::ZERO)
            }
            Err(e) if e.is_transient() => {
                let wait = self.backoff.next().min(self.interval);
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
                info!(
                    peer_id = %r.peer_id, addr = %r.addr, files = index.len(),
                    "registered with the tracker as {} at {}", r.peer_id, r.addr
                );
                self.reg = Some(Registration {
                    peer_id: r.peer_id,
                    token: r.token,
                });
                self.announced = index;
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

    async fn rescan(&mut self) -> anyhow::Result<()> {
        let share = Arc::clone(&self.share);
        let scanned = tokio::task::spawn_blocking(move || share.scan()).await;
        let index = match scanned {
            Ok(Ok((index, _))) => index,
            Ok(Err(e)) => {
                warn!("cannot rescan the share folder: {e}");
                return Ok(());
            }
            Err(e) => {
                warn!("rescan task failed: {e}");
                return Ok(());
            }
        };
        let (add, remove) = index.diff(&self.announced);
        if add.is_empty() && remove.is_empty() {
            return Ok(());
        }
        let Some(reg) = self.reg.clone() else {
            // Not registered: the next registration sends the new list.
            return Ok(());
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
            }
            Err(e) if e.is_transient() => {
                warn!("cannot update the tracker, retrying at the next rescan: {e}")
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
        Ok(())
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
