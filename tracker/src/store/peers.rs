//! Peers: register (with the peer's files), authenticate, show, list, leave,
//! and the heartbeat flush. (Their reachability is `reachability`.)

use std::collections::HashSet;

use sbcftp_api::{FileEntry, PeerId};

use super::files::{FileRow, INLINE_MAX, Indexing, Removal, delete_word_rows, write_files};
use super::{IN_CHUNK, Store, built, fixed, with_pool};

/// A peer row as stored (times in unix milliseconds).
#[derive(Debug, Clone, sqlx_macros::FromRow)]
pub struct PeerRow {
    pub peer_id: PeerId,
    /// `ip:port`, or `[v6]:port`.
    pub addr: String,
    pub registered_at: i64,
    pub last_seen: i64,
    pub file_count: i64,
    /// 1 reachable, 0 not, NULL not checked.
    pub reachable: Option<i64>,
    /// Unix millis of the last check (or claim of one); 0 never.
    pub reachable_checked_at: i64,
    pub unreachable_reason: Option<String>,
}

/// What authenticating a peer needs from its row.
#[derive(Debug, Clone, sqlx_macros::FromRow)]
pub struct PeerAuth {
    /// BLAKE3 of the peer's token, lowercase hex.
    pub token_hash: String,
    /// Unix millis of the last flushed heartbeat.
    pub last_seen: i64,
    /// 1 reachable, 0 not, NULL not checked.
    pub reachable: Option<i64>,
    pub unreachable_reason: Option<String>,
}

/// A peer id read alone.
#[derive(Debug, sqlx_macros::FromRow)]
pub(super) struct PeerIdRow {
    pub peer_id: PeerId,
}

/// A peer's file count, for the per-address quota.
#[derive(Debug, Clone, sqlx_macros::FromRow)]
pub struct PeerCount {
    pub peer_id: PeerId,
    pub file_count: i64,
}

/// A new peer to insert.
#[derive(Debug)]
pub struct NewPeer<'a> {
    pub peer_id: PeerId,
    /// BLAKE3 of the token, lowercase hex.
    pub token_hash: &'a str,
    /// `ip:port`, or `[v6]:port`.
    pub addr: &'a str,
    /// Unix millis: its registration and first heartbeat.
    pub now: i64,
    /// Unix millis the registration's reachability check is recorded as
    /// claimed (0: none, the periodic re-check may take it at once).
    pub reachable_checked_at: i64,
}

impl Store {
    /// Inserts a peer and its files in one transaction (with their word
    /// rows, or, for more than 1,000 files, queued for the indexer).
    pub async fn insert_peer(
        &self,
        peer: &NewPeer<'_>,
        files: &[FileEntry],
    ) -> Result<(), sqlx::Error> {
        let later = files.len() > INLINE_MAX;
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(fixed(&self.sql.insert_peer))
                .bind(peer.peer_id)
                .bind(peer.token_hash)
                .bind(peer.addr)
                .bind(peer.now)
                .bind(peer.now)
                .bind(peer.reachable_checked_at)
                .execute(&mut *tx)
                .await?;
            // No cap here: the handler has checked the list.
            let indexing = if later { Indexing::Later } else { Indexing::Now };
            write_files(
                &mut tx,
                &self.sql,
                &peer.peer_id,
                Removal::Nothing,
                files,
                indexing,
                usize::MAX,
            )
            .await?;
            if later {
                sqlx::query(fixed(&self.sql.queue_peer))
                    .bind(peer.peer_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        if later {
            self.spawn_indexer(peer.peer_id);
        }
        Ok(())
    }

    /// The stored token hash and `last_seen` of a peer, if it exists.
    pub async fn peer_auth(&self, peer_id: &PeerId) -> Result<Option<PeerAuth>, sqlx::Error> {
        with_pool!(self, pool => {
            sqlx::query_as(fixed(&self.sql.peer_auth))
                .bind(peer_id)
                .fetch_optional(pool)
                .await
        })
    }

    /// Deletes a peer, its files and their word rows in one transaction;
    /// false if there was no such peer.
    pub async fn delete_peer(&self, peer_id: &PeerId) -> Result<bool, sqlx::Error> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let found = sqlx::query(fixed(&self.sql.lock_peer))
                .bind(peer_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if found == 0 {
                return Ok(false);
            }
            delete_word_rows(&mut tx, &self.sql, peer_id, None).await?;
            sqlx::query(fixed(&self.sql.delete_peer))
                .bind(peer_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(true)
    }

    /// One online peer.
    pub async fn get_peer(
        &self,
        peer_id: &PeerId,
        min_seen: i64,
    ) -> Result<Option<PeerRow>, sqlx::Error> {
        with_pool!(self, pool => {
            sqlx::query_as(fixed(&self.sql.get_peer))
                .bind(peer_id)
                .bind(min_seen)
                .fetch_optional(pool)
                .await
        })
    }

    /// Up to `limit` files of a peer with names after `after`, by name.
    pub async fn peer_files(
        &self,
        peer_id: &PeerId,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<FileEntry>, sqlx::Error> {
        // No cursor: every name sorts after the empty text.
        let after = after.unwrap_or_default();
        let rows: Vec<FileRow> = with_pool!(self, pool => {
            sqlx::query_as(fixed(&self.sql.peer_files))
                .bind(peer_id)
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(FileEntry::from).collect())
    }

    /// Every peer (online or not yet swept) whose `addr` matches `pattern`
    /// (see `limits::addr_pattern`), with its file count.
    pub async fn peers_at(&self, pattern: &str) -> Result<Vec<PeerCount>, sqlx::Error> {
        with_pool!(self, pool => {
            sqlx::query_as(fixed(&self.sql.peers_at))
                .bind(pattern)
                .fetch_all(pool)
                .await
        })
    }

    /// A peer's row, online or not yet swept.
    pub async fn peer_row(&self, peer_id: &PeerId) -> Result<Option<PeerRow>, sqlx::Error> {
        with_pool!(self, pool => {
            sqlx::query_as(fixed(&self.sql.get_peer))
                .bind(peer_id)
                .bind(0_i64)
                .fetch_optional(pool)
                .await
        })
    }

    /// Up to `limit` online peers with ids after `after`, by id.
    pub async fn list_peers(
        &self,
        min_seen: i64,
        after: Option<PeerId>,
        limit: i64,
    ) -> Result<Vec<PeerRow>, sqlx::Error> {
        // No cursor: every id sorts after the empty text.
        let after = after.map(|id| id.to_string()).unwrap_or_default();
        with_pool!(self, pool => {
            sqlx::query_as(fixed(&self.sql.list_peers))
                .bind(min_seen)
                .bind(&after)
                .bind(limit)
                .fetch_all(pool)
                .await
        })
    }

    /// Number of peers seen since `min_seen`.
    pub async fn count_online(&self, min_seen: i64) -> Result<i64, sqlx::Error> {
        with_pool!(self, pool => {
            sqlx::query_scalar(fixed(&self.sql.count_online))
                .bind(min_seen)
                .fetch_one(pool)
                .await
        })
    }

    /// Heartbeat flush: sets `last_seen = now` for these peers and returns
    /// the ids that no longer exist (swept, or gone through another replica).
    pub async fn touch(&self, ids: &[PeerId], now: i64) -> Result<Vec<PeerId>, sqlx::Error> {
        let mut gone = Vec::new();
        for chunk in ids.chunks(IN_CHUNK) {
            let updated = with_pool!(self, pool => {
                let mut q = sqlx::query(built(self.sql.touch_peers(chunk.len()))).bind(now);
                for id in chunk {
                    q = q.bind(id);
                }
                q.execute(pool).await?.rows_affected()
            });
            if updated < chunk.len() as u64 {
                let existing: Vec<PeerIdRow> = with_pool!(self, pool => {
                    let mut q = sqlx::query_as(built(self.sql.existing_peers(chunk.len())));
                    for id in chunk {
                        q = q.bind(id);
                    }
                    q.fetch_all(pool).await?
                });
                let existing: HashSet<PeerId> = existing.into_iter().map(|r| r.peer_id).collect();
                gone.extend(chunk.iter().filter(|id| !existing.contains(*id)));
            }
        }
        Ok(gone)
    }
}
