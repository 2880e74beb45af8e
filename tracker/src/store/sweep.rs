//! The sweep's statements: the one-row lease that lets one replica sweep per
//! interval, stale peers and their deletion, and SQLite's WAL checkpoint.

use sbcftp_api::PeerId;

use super::files::delete_word_rows;
use super::peers::PeerIdRow;
use super::{Store, built, fixed, with_pool};

impl Store {
    /// Tries to take the sweep lease until `until`; true if this replica holds it.
    pub async fn take_lease(
        &self,
        holder: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, sqlx::Error> {
        let n = with_pool!(self, pool => {
            sqlx::query(fixed(&self.sql.take_lease))
                .bind(holder)
                .bind(until)
                .bind(now)
                .bind(holder)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    /// Up to `limit` peers last seen before `before`.
    pub async fn stale_peers(&self, before: i64, limit: i64) -> Result<Vec<PeerId>, sqlx::Error> {
        let rows: Vec<PeerIdRow> = with_pool!(self, pool => {
            sqlx::query_as(fixed(&self.sql.stale_peers))
                .bind(before)
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(|r| r.peer_id).collect())
    }

    /// Deletes these peers (their files and word rows) if they are still
    /// stale, one transaction per peer (a heartbeat flushed since they were
    /// selected saves a peer, and rolls its word rows back); returns how
    /// many were deleted.
    pub async fn delete_stale(&self, ids: &[PeerId], before: i64) -> Result<u64, sqlx::Error> {
        let mut deleted = 0;
        let stmt = self.sql.delete_stale(1);
        for id in ids {
            deleted += with_pool!(self, pool => {
                let mut tx = pool.begin().await?;
                // The write lock first (SQLite), and the existence check.
                let found = sqlx::query(fixed(&self.sql.lock_peer))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if found == 0 {
                    continue;
                }
                delete_word_rows(&mut tx, &self.sql, id, None).await?;
                let n = sqlx::query(built(stmt.clone()))
                    .bind(id)
                    .bind(before)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if n == 0 {
                    tx.rollback().await?;
                } else {
                    tx.commit().await?;
                }
                n
            });
        }
        Ok(deleted)
    }

    /// SQLite: copies the write-ahead log back into the database file
    /// ([`CHECKPOINT_SQLITE`](super::sql::CHECKPOINT_SQLITE), which never
    /// blocks readers or writers). Other backends: nothing.
    pub async fn checkpoint(&self) -> Result<(), sqlx::Error> {
        match &self.pool {
            #[cfg(feature = "sqlite")]
            super::Pools::Sqlite(pool) => {
                sqlx::query(super::sql::CHECKPOINT_SQLITE)
                    .execute(pool)
                    .await?;
            }
            #[allow(unreachable_patterns)]
            _ => {}
        }
        Ok(())
    }
}
