//! Liveness: heartbeats at near no-op cost, and the sweep of stale peers.
//!
//! A heartbeat must cost about as much as an empty route whatever the peer
//! shares, so it does not touch the database: the tracker keeps the token
//! hash of every peer it has seen (`peer_id → BLAKE3(token)` and when it was
//! last known alive, loaded from the database on a miss), checks the bearer
//! token against it in constant time and records the peer id in a pending
//! set. An entry not refreshed within the TTL is checked against the
//! database again, so a peer that missed its heartbeats is dead (404) even
//! before the sweep removes its row, and cannot come back with a late
//! heartbeat. [`background`] flushes that set every second (and at
//! shutdown) with one `UPDATE … WHERE peer_id IN (…)` per 500 peers; ids
//! whose row is gone (swept, or left through another replica) are dropped
//! from the cache, so their next heartbeat is a 404 and the peer registers
//! again.
//!
//! The cache also holds each peer's last known reachability ([`Reach`]),
//! so a heartbeat can answer with it without the database: set by this
//! replica's checks (`crate::reachability`), read from the row when an
//! entry is loaded, and refreshed from other replicas' checks.
//!
//! This module knows nothing of HTTP: it answers with [`AuthError`], which
//! the HTTP layer (`error.rs`) turns into a status.

pub mod background;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use sbcftp_api::PeerId;

use crate::clock::now_ms;
use crate::store::{PeerAuth, Store};

/// Why a peer could not be authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No such peer, or it missed its heartbeats for the TTL.
    #[error("no peer {0} is registered")]
    UnknownPeer(PeerId),
    /// The token is not this peer's.
    #[error("the bearer token does not belong to peer {0}")]
    WrongToken(PeerId),
    /// The database could not be asked.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Counters of this tracker instance, rendered into `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Heartbeats accepted.
    pub heartbeats: AtomicU64,
    /// Sweeps this instance ran (it held the lease).
    pub sweeps: AtomicU64,
    /// Peers this instance's sweeps removed.
    pub peers_swept: AtomicU64,
    /// Sweeps that failed (database errors).
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
    pub stats: Stats,
}

/// What the cache knows about one peer.
#[derive(Debug)]
struct Known {
    token_hash: blake3::Hash,
    /// When the peer was last known alive (unix millis).
    alive_at: AtomicI64,
    reach: Mutex<Reach>,
}

/// A peer's last known reachability, as heartbeat answers show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    /// `None`: not checked.
    pub reachable: Option<bool>,
    /// Why the last check failed.
    pub reason: Option<String>,
}

impl Reach {
    /// From a row's `reachable` (1, 0, NULL) and `unreachable_reason`.
    pub fn from_row(reachable: Option<i64>, reason: Option<String>) -> Self {
        let reachable = reachable.map(|v| v == 1);
        Reach {
            reason: reason.filter(|_| reachable == Some(false)),
            reachable,
        }
    }
}

/// BLAKE3 of a token, as stored (in hex).
pub fn hash_token(token: &str) -> blake3::Hash {
    blake3::hash(token.as_bytes())
}

impl Liveness {
    /// Checks `token` for `peer_id`, a peer seen within `ttl_ms`. Goes to
    /// the database on a cache miss, or when the cached entry is older than
    /// the TTL.
    pub async fn authenticate(
        &self,
        store: &Store,
        peer_id: &PeerId,
        token: &str,
        ttl_ms: i64,
    ) -> Result<(), AuthError> {
        let now = now_ms();
        let cached = self.read_tokens().get(peer_id).cloned();
        let known = match cached {
            Some(k) if now - k.alive_at.load(Ordering::Relaxed) <= ttl_ms => k,
            _ => {
                let Some(PeerAuth {
                    token_hash,
                    last_seen,
                    reachable,
                    unreachable_reason,
                }) = store.peer_auth(peer_id).await?
                else {
                    self.forget([peer_id]);
                    return Err(AuthError::UnknownPeer(*peer_id));
                };
                if now - last_seen > ttl_ms {
                    // Missed its heartbeats: dead, whether or not swept yet.
                    self.forget([peer_id]);
                    return Err(AuthError::UnknownPeer(*peer_id));
                }
                let Ok(hash) = blake3::Hash::from_hex(token_hash.as_bytes()) else {
                    tracing::error!(%peer_id, "stored token hash is not valid hex");
                    return Err(AuthError::WrongToken(*peer_id));
                };
                let reach = Reach::from_row(reachable, unreachable_reason);
                self.cache(peer_id, hash, last_seen, reach)
            }
        };
        // blake3::Hash equality is constant-time.
        if hash_token(token) == known.token_hash {
            Ok(())
        } else {
            Err(AuthError::WrongToken(*peer_id))
        }
    }

    /// Caches a peer's token hash, alive at `alive_at`. At registration that
    /// is the instant of its `last_seen` row, so the cache never thinks a
    /// peer alive that listings already hide.
    pub fn remember(&self, peer_id: &PeerId, token_hash: blake3::Hash, alive_at: i64) {
        self.cache(peer_id, token_hash, alive_at, Reach::default());
    }

    fn cache(
        &self,
        peer_id: &PeerId,
        token_hash: blake3::Hash,
        alive_at: i64,
        reach: Reach,
    ) -> Arc<Known> {
        let known = Arc::new(Known {
            token_hash,
            alive_at: AtomicI64::new(alive_at),
            reach: Mutex::new(reach),
        });
        self.write_tokens().insert(*peer_id, Arc::clone(&known));
        known
    }

    /// Records a peer's reachability, if the peer is cached.
    pub fn set_reach(&self, peer_id: &PeerId, reach: Reach) {
        if let Some(k) = self.read_tokens().get(peer_id) {
            *k.reach.lock().unwrap_or_else(|e| e.into_inner()) = reach;
        }
    }

    /// A cached peer's last known reachability (not checked if unknown).
    pub fn reach(&self, peer_id: &PeerId) -> Reach {
        self.read_tokens()
            .get(peer_id)
            .map(|k| k.reach.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }

    /// Drops peers from the cache and the pending set.
    pub fn forget<'a>(&self, ids: impl IntoIterator<Item = &'a PeerId> + Clone) {
        {
            let mut tokens = self.write_tokens();
            for id in ids.clone() {
                tokens.remove(id);
            }
        }
        let mut pending = self.lock_pending();
        for id in ids {
            pending.remove(id);
        }
    }

    /// Records a heartbeat (of an authenticated peer), to be written at the
    /// next flush.
    pub fn beat(&self, peer_id: &PeerId) {
        if let Some(k) = self.read_tokens().get(peer_id) {
            k.alive_at.store(now_ms(), Ordering::Relaxed);
        }
        self.lock_pending().insert(*peer_id);
        self.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes pending heartbeats to the database; on failure they stay
    /// pending for the next flush.
    pub async fn flush(&self, store: &Store) {
        let ids: Vec<PeerId> = std::mem::take(&mut *self.lock_pending())
            .into_iter()
            .collect();
        if ids.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        match store.touch(&ids, now_ms()).await {
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

    fn read_tokens(&self) -> RwLockReadGuard<'_, HashMap<PeerId, Arc<Known>>> {
        self.tokens.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_tokens(&self) -> RwLockWriteGuard<'_, HashMap<PeerId, Arc<Known>>> {
        self.tokens.write().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_pending(&self) -> MutexGuard<'_, HashSet<PeerId>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests;
