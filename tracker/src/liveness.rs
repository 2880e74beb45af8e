//! Liveness: heartbeats at near no-op cost, and the sweep of stale peers.
//!
//! A heartbeat must cost about as much as an empty route whatever the peer
//! shares, so it does not touch the database: the tracker keeps the token
//! hash of every peer it has seen (`peer_id → BLAKE3(token)` and when it was
//! last known alive, loaded from the database on a miss), checks the bearer
//! token against it in constant time and records the peer id in a pending
//! set. An entry not refreshed within the TTL is checked against the database
//! again, so a peer that missed its heartbeats is dead (404) even before the
//! sweep removes its row, and cannot come back with a late heartbeat. A background task flushes that
//! set every second (and at shutdown) with one `UPDATE … WHERE peer_id IN
//! (…)` per 500 peers; ids whose row is gone (swept, or left through another
//! replica) are dropped from the cache, so their next heartbeat is a 404 and
//! the peer registers again.
//!
//! The same task sweeps: every `--sweep-interval` it first flushes, then
//! takes the one-row `sweep_lease` (`UPDATE … WHERE until_ms <= now`, one
//! affected row wins), so when several replicas share a database only one
//! sweeps per interval; the sweeper deletes peers whose `last_seen` is older
//! than the TTL in batches, re-checking staleness in the `DELETE` itself so a
//! heartbeat flushed in between saves the peer. Listings also filter on
//! `last_seen`, so a dead peer is never shown between sweeps.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use sbcftp_api::PeerId;

use crate::error::Error;
use crate::state::AppState;
use crate::store::{PeerAuth, Store};

/// Stale peers deleted per statement (each takes its files with it, so this
/// bounds one statement to 100 × --max-files-per-peer rows).
const SWEEP_BATCH: i64 = 100;

/// Counters of this tracker instance, rendered into `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Heartbeats accepted.
    pub heartbeats: AtomicU64,
    /// Sweeps this instance ran (it held the lease).
    pub sweeps: AtomicU64,
    /// Peers this instance's sweeps removed.
    pub peers_swept: AtomicU64,
    /// Sweeps or flushes that failed (database errors).
    pub sweep_errors: AtomicU64,
    /// Heartbeat flushes that failed.
    pub flush_errors: AtomicU64,
    /// Online peers at the last count.
    pub online_peers: AtomicU64,
    /// Duration of the last heartbeat flush, in microseconds.
    pub last_flush_micros: AtomicU64,
}

/// The heartbeat cache and pending set.
#[derive(Debug, Default)]
pub struct Liveness {
    tokens: RwLock<HashMap<PeerId, Arc<Known>>>,
    pending: Mutex<HashSet<PeerId>>,
    /// Counters.
    pub stats: Stats,
}

/// What the cache knows about one peer.
#[derive(Debug)]
struct Known {
    token_hash: blake3::Hash,
    /// When the peer was last known alive (unix millis).
    alive_at: AtomicI64,
}

/// BLAKE3 hex of a token, as stored.
pub fn hash_token(token: &str) -> blake3::Hash {
    blake3::hash(token.as_bytes())
}

impl Liveness {
    /// Checks `token` for `peer_id`: 404 if there is no such live peer, 403
    /// if the token is wrong. Goes to the database on a cache miss, or when
    /// the cached entry is older than the TTL.
    pub async fn authenticate(
        &self,
        store: &Store,
        peer_id: &PeerId,
        token: &str,
        ttl_ms: i64,
    ) -> Result<(), Error> {
        let now = crate::now_ms();
        let cached = self.read_tokens().get(peer_id).cloned();
        let known = match cached {
            Some(k) if now - k.alive_at.load(Ordering::Relaxed) <= ttl_ms => k,
            _ => {
                let Some(PeerAuth {
                    token_hash: hex,
                    last_seen,
                }) = store.peer_auth(peer_id).await?
                else {
                    self.forget(std::iter::once(peer_id));
                    return Err(no_peer(&peer_id.to_string()));
                };
                if now - last_seen > ttl_ms {
                    // Missed its heartbeats: dead, whether or not swept yet.
                    self.forget(std::iter::once(peer_id));
                    return Err(no_peer(&peer_id.to_string()));
                }
                let Ok(h) = blake3::Hash::from_hex(hex.as_bytes()) else {
                    tracing::error!(%peer_id, "stored token hash is not valid hex");
                    return Err(Error::Forbidden(
                        "the token does not match this peer".into(),
                    ));
                };
                self.remember_at(peer_id, h, last_seen)
            }
        };
        // blake3::Hash equality is constant-time.
        if hash_token(token) == known.token_hash {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "the bearer token does not belong to peer {peer_id}"
            )))
        }
    }

    /// Caches a peer's token hash after registration at `registered_at`
    /// (the same instant as its `last_seen` row, so the cache never thinks a
    /// peer alive that listings already hide).
    pub fn remember(&self, peer_id: &PeerId, hash: blake3::Hash, registered_at: i64) {
        self.remember_at(peer_id, hash, registered_at);
    }

    fn remember_at(&self, peer_id: &PeerId, token_hash: blake3::Hash, alive_at: i64) -> Arc<Known> {
        let known = Arc::new(Known {
            token_hash,
            alive_at: AtomicI64::new(alive_at),
        });
        self.write_tokens().insert(*peer_id, known.clone());
        known
    }

    /// Drops peers from the cache and the pending set.
    pub fn forget<'a>(&self, ids: impl IntoIterator<Item = &'a PeerId> + Clone) {
        {
            let mut t = self.write_tokens();
            for id in ids.clone() {
                t.remove(id);
            }
        }
        let mut p = self.lock_pending();
        for id in ids {
            p.remove(id);
        }
    }

    /// Records a heartbeat (of an authenticated peer), to be written at the
    /// next flush.
    pub fn beat(&self, peer_id: &PeerId) {
        if let Some(k) = self.read_tokens().get(peer_id) {
            k.alive_at.store(crate::now_ms(), Ordering::Relaxed);
        }
        self.lock_pending().insert(*peer_id);
        self.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
    }

    fn read_tokens(&self) -> std::sync::RwLockReadGuard<'_, HashMap<PeerId, Arc<Known>>> {
        self.tokens.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_tokens(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<PeerId, Arc<Known>>> {
        self.tokens.write().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashSet<PeerId>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes pending heartbeats to the database.
    pub async fn flush(&self, store: &Store) {
        let ids: Vec<PeerId> = std::mem::take(&mut *self.lock_pending())
            .into_iter()
            .collect();
        if ids.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        match store.touch(&ids, crate::now_ms()).await {
            Ok(gone) => {
                if !gone.is_empty() {
                    tracing::debug!(count = gone.len(), "heartbeats for peers that are gone");
                    self.forget(gone.iter());
                }
            }
            Err(e) => {
                self.stats.flush_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, peers = ids.len(), "heartbeat flush failed; will retry");
                self.lock_pending().extend(ids);
            }
        }
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.stats
            .last_flush_micros
            .store(micros, Ordering::Relaxed);
        metrics::histogram!("sbcftp_heartbeat_flush_seconds")
            .record(started.elapsed().as_secs_f64());
    }
}

/// 404 for an unknown peer.
pub fn no_peer(peer_id: &str) -> Error {
    Error::NotFound(format!(
        "no peer {peer_id:?} is registered (it may have been swept after missing heartbeats; register again)"
    ))
}

/// Flushes heartbeats every second (or a quarter of the TTL if shorter) and
/// sweeps every sweep interval, until `cancel`; flushes once more at the end.
pub async fn run_background(state: AppState, cancel: CancellationToken) {
    let ttl = state.config.peer_ttl;
    let flush_every = Duration::from_secs(1).min(ttl / 4);
    let mut flush_tick = tokio::time::interval(flush_every);
    flush_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sweep_tick = tokio::time::interval(state.config.sweep_interval);
    sweep_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let holder = format!("{:016x}", rand::random::<u64>());
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = flush_tick.tick() => state.liveness.flush(&state.store).await,
            _ = sweep_tick.tick() => {
                state.liveness.flush(&state.store).await;
                if let Err(e) = sweep(&state, &holder).await {
                    state.liveness.stats.sweep_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "sweep failed; will retry");
                }
            }
        }
    }
    state.liveness.flush(&state.store).await;
}

/// SQLite only: checkpoints the write-ahead log every second, off the
/// request path (commits do not checkpoint; see `Store::connect`).
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

async fn sweep(state: &AppState, holder: &str) -> Result<(), sqlx::Error> {
    let store = &state.store;
    let stats = &state.liveness.stats;
    let now = crate::now_ms();
    let interval_ms = i64::try_from(state.config.sweep_interval.as_millis()).unwrap_or(i64::MAX);
    if store
        .take_lease(holder, now, now.saturating_add(interval_ms))
        .await?
    {
        stats.sweeps.fetch_add(1, Ordering::Relaxed);
        let cutoff = now - crate::ttl_ms(&state.config);
        loop {
            let ids = store.stale_peers(cutoff, SWEEP_BATCH).await?;
            if ids.is_empty() {
                break;
            }
            let deleted = store.delete_stale(&ids, cutoff).await?;
            state.liveness.forget(ids.iter());
            stats.peers_swept.fetch_add(deleted, Ordering::Relaxed);
            if deleted > 0 {
                tracing::info!(deleted, "swept stale peers");
            }
            if (ids.len() as i64) < SWEEP_BATCH {
                break;
            }
        }
    }
    let online = store
        .count_online(now - crate::ttl_ms(&state.config))
        .await?;
    stats
        .online_peers
        .store(u64::try_from(online).unwrap_or(0), Ordering::Relaxed);
    Ok(())
}
