//! The background task of liveness: the heartbeat flush and the sweep, plus
//! SQLite's WAL checkpoints.
//!
//! Every `--sweep-interval` the task first flushes, then takes the one-row
//! `sweep_lease` (`UPDATE … WHERE until_ms <= now`, one affected row wins),
//! so when several replicas share a database only one sweeps per interval;
//! the sweeper deletes peers whose `last_seen` is older than the TTL in
//! batches, re-checking staleness in the `DELETE` itself so a heartbeat
//! flushed in between saves the peer. Listings also filter on `last_seen`,
//! so a dead peer is never shown between sweeps.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::Liveness;
use crate::clock::{millis, now_ms};
use crate::store::Store;

/// Stale peers deleted per statement (each takes its files with it, so this
/// bounds one statement to 100 × --max-files-per-peer rows).
const SWEEP_BATCH: i64 = 100;

/// How the background task is timed.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// A peer silent this long is gone.
    pub ttl: Duration,
    /// How often to sweep.
    pub sweep_interval: Duration,
}

/// Flushes heartbeats every second (or a quarter of the TTL if shorter) and
/// sweeps every sweep interval, until `cancel`; flushes once more at the end.
pub async fn run(liveness: Arc<Liveness>, store: Store, timing: Timing, cancel: CancellationToken) {
    let flush_every = Duration::from_secs(1).min(timing.ttl / 4);
    let mut flush_tick = tokio::time::interval(flush_every);
    flush_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sweep_tick = tokio::time::interval(timing.sweep_interval);
    sweep_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let holder = format!("{:016x}", rand::random::<u64>());
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = flush_tick.tick() => liveness.flush(&store).await,
            _ = sweep_tick.tick() => {
                liveness.flush(&store).await;
                if let Err(e) = sweep(&liveness, &store, timing, &holder).await {
                    liveness.stats.sweep_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "sweep failed; will retry");
                }
            }
        }
    }
    liveness.flush(&store).await;
}

/// SQLite only: checkpoints the write-ahead log every second, off the
/// request path (commits do not checkpoint; see `store::connect`).
pub async fn run_checkpoints(store: Store, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {
                if let Err(e) = store.checkpoint().await {
                    tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
                }
            }
        }
    }
}

/// One sweep tick: if this replica gets the lease, deletes stale peers;
/// then counts the online ones for the gauge.
async fn sweep(
    liveness: &Liveness,
    store: &Store,
    timing: Timing,
    holder: &str,
) -> Result<(), sqlx::Error> {
    let stats = &liveness.stats;
    let now = now_ms();
    let cutoff = now - millis(timing.ttl);
    if store
        .take_lease(
            holder,
            now,
            now.saturating_add(millis(timing.sweep_interval)),
        )
        .await?
    {
        stats.sweeps.fetch_add(1, Ordering::Relaxed);
        loop {
            let ids = store.stale_peers(cutoff, SWEEP_BATCH).await?;
            if ids.is_empty() {
                break;
            }
            let deleted = store.delete_stale(&ids, cutoff).await?;
            liveness.forget(ids.iter());
            stats.peers_swept.fetch_add(deleted, Ordering::Relaxed);
            if deleted > 0 {
                tracing::info!(deleted, "swept stale peers");
            }
            if (ids.len() as i64) < SWEEP_BATCH {
                break;
            }
        }
    }
    let online = store.count_online(cutoff).await?;
    stats
        .online_peers
        .store(u64::try_from(online).unwrap_or(0), Ordering::Relaxed);
    Ok(())
}
