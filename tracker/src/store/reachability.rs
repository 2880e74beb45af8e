//! Reachability: the result of each check, the peers due for a re-check, and
//! the claim that makes one replica (of several on one database) re-check
//! a peer, not all of them.

use sbcftp_api::PeerId;

use super::{Store, fixed, with_pool};

/// A peer due for a re-check.
#[derive(Debug, Clone, sqlx_macros::FromRow)]
pub struct RecheckRow {
    pub peer_id: PeerId,
    /// `ip:port`, or `[v6]:port`: the only address the check connects to.
    pub addr: String,
    /// The value a claim compares against.
    pub reachable_checked_at: i64,
}

/// A peer's recorded reachability.
#[derive(Debug, Clone, sqlx_macros::FromRow)]
pub struct ReachRow {
    pub peer_id: PeerId,
    /// 1 reachable, 0 not, NULL not checked.
    pub reachable: Option<i64>,
    pub reachable_checked_at: i64,
    pub unreachable_reason: Option<String>,
}

impl Store {
    /// Records a check's result, made at `at` (unix millis).
    pub async fn set_reachability(
        &self,
        peer_id: &PeerId,
        reachable: bool,
        at: i64,
        reason: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        with_pool!(self, pool => {
            sqlx::query(fixed(&self.sql.set_reachability))
                .bind(i64::from(reachable))
                .bind(at)
                .bind(reason)
                .bind(peer_id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Up to `limit` peers seen since `min_seen` whose last check is older
    /// than `before`, oldest first.
    pub async fn recheck_due(
        &self,
        min_seen: i64,
        before: i64,
        limit: i64,
    ) -> Result<Vec<RecheckRow>, sqlx::Error> {
        with_pool!(self, pool => {
            sqlx::query_as(fixed(&self.sql.recheck_due))
                .bind(min_seen)
                .bind(before)
                .bind(limit)
                .fetch_all(pool)
                .await
        })
    }

    /// Claims the re-check of a peer last checked at `old` for `now`; false
    /// when another replica claimed it first (or the peer is gone).
    pub async fn claim_recheck(
        &self,
        peer_id: &PeerId,
        old: i64,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let n = with_pool!(self, pool => {
            sqlx::query(fixed(&self.sql.claim_recheck))
                .bind(now)
                .bind(peer_id)
                .bind(old)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    /// Peers whose reachability was checked (or claimed) at or after `since`.
    pub async fn checked_since(&self, since: i64) -> Result<Vec<ReachRow>, sqlx::Error> {
        with_pool!(self, pool => {
            sqlx::query_as(fixed(&self.sql.checked_since))
                .bind(since)
                .fetch_all(pool)
                .await
        })
    }
}
