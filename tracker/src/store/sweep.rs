//! The sweep's statements: the one-row lease that lets one replica sweep per
//! interval, stale peers and their deletion, and SQLite's WAL checkpoint.

use sbcftp_api::PeerId;

use super::peers::PeerIdRow;
use super::{IN_CHUNK, Store, built, fixed, with_pool};

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

    /// Deletes these peers (and their files) if they are still stale; returns
    /// how many were deleted.
    pub async fn delete_stale(&self, ids: &[PeerId], before: i64) -> Result<u64, sqlx::Error> {
        let mut deleted = 0;
        for chunk in ids.chunks(IN_CHUNK) {
            deleted += with_pool!(self, pool => {
                let mut q = sqlx::query(built(self.sql.delete_stale(chunk.len())));
                for id in chunk {
                    q = q.bind(id);
                }
                q.bind(before).execute(pool).await?.rows_affected()
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
