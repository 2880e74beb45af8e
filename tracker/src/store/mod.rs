//! Database access: one [`Store`] over SQLite, MySQL/MariaDB or PostgreSQL,
//! chosen from the URL scheme.
//!
//! # Layout
//!
//! - `connect`: [`Backend`] from the URL, one pool per
//!   backend with its settings, a probe that names why a connection fails.
//! - `migrate`: the migrations of `migrations/<backend>/`, embedded at build
//!   time (adding a migration is adding a file).
//! - [`sql`]: the text of every statement; where a backend needs its own SQL
//!   it is a separate constant, picked in one place.
//! - `peers`: register, authenticate, show, list, leave, heartbeat flush.
//! - `reachability`: the reachability check's results, the re-check's
//!   queue and claims.
//! - `files`: file-list changes (one helper writes file rows and their
//!   search words), the deferred word indexer for large lists, pages of
//!   contents grouped by (hash, size), search by words.
//! - `sweep`: the sweep lease, stale peers, SQLite checkpoints.
//!
//! # How a method is written once for three databases
//!
//! The pool is an enum with one variant per compiled-in backend. The
//! `with_pool!` macro expands a method's body in every arm, so the compiler
//! checks it against each driver's concrete types. Only portable column
//! types are read, `TEXT` as `String` and integers as `i64`; row types
//! derive `FromRow` and parse ids, hashes and names into their
//! `sbcftp_api` types as they are read.
//!
//! Every change is one transaction, so a request that fails half-way leaves
//! the database as it was. Files reference their peer with `ON DELETE
//! CASCADE` (SQLite: `foreign_keys` is on for every connection), so removing
//! a peer removes its files in the same statement. The search words
//! (`file_words`) have no foreign key, to keep registrations fast: every
//! path that removes files removes their word rows in the same transaction.

mod connect;
mod files;
mod migrate;
mod peers;
mod reachability;
pub mod sql;
mod sweep;

use std::sync::Arc;

use sqlx::{AssertSqlSafe, SqlSafeStr};

pub use connect::Backend;
pub use files::{FilesOutcome, HolderCaps};
pub use peers::{NewPeer, PeerAuth, PeerCount, PeerRow};
pub use reachability::{ReachRow, RecheckRow};
use sql::Statements;

#[cfg(not(any(feature = "sqlite", feature = "mysql", feature = "postgres")))]
compile_error!(
    "the tracker needs at least one database backend feature: `sqlite`, `mysql` or `postgres`"
);

/// Ids per `IN (…)` list.
const IN_CHUNK: usize = 500;

/// The pool of the backend in use.
#[derive(Debug, Clone)]
enum Pools {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
    #[cfg(feature = "mysql")]
    MySql(sqlx::MySqlPool),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
}

/// Expands `$body` once per backend with `$pool` bound to that backend's pool.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            #[cfg(feature = "sqlite")]
            $crate::store::Pools::Sqlite($pool) => $body,
            #[cfg(feature = "mysql")]
            $crate::store::Pools::MySql($pool) => $body,
            #[cfg(feature = "postgres")]
            $crate::store::Pools::Postgres($pool) => $body,
        }
    };
}
use with_pool;

/// The database: a pool and the statements of its backend. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pools,
    backend: Backend,
    sql: Arc<Statements>,
    /// Peers whose word rows this process is writing after the response
    /// (see `files`: deferred indexing).
    indexing: Arc<std::sync::Mutex<std::collections::HashSet<sbcftp_api::PeerId>>>,
}

/// A fixed statement of [`Statements`] for sqlx, which otherwise takes only
/// `&'static str` (PostgreSQL's are rendered at start-up). Every statement
/// text is made from the constants of [`sql`] and placeholders, never from
/// input.
fn fixed(sql: &Arc<str>) -> AssertSqlSafe<Arc<str>> {
    AssertSqlSafe(Arc::clone(sql))
}

/// A statement with a variable-length list, built by [`Statements`].
fn built(sql: String) -> AssertSqlSafe<String> {
    AssertSqlSafe(sql)
}

impl Store {
    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// `SELECT 1`.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        with_pool!(self, pool => {
            sqlx::query(fixed(&self.sql.ping)).execute(pool).await?;
        });
        Ok(())
    }

    /// Prepares (without running) every fixed statement of this backend,
    /// so a statement the schema does not support fails here with its text.
    pub async fn prepare_all(&self) -> anyhow::Result<usize> {
        use anyhow::Context;
        use sqlx::Executor;
        let all = self.sql.all();
        for text in all {
            with_pool!(self, pool => {
                pool.prepare(fixed(text).into_sql_str()).await.map(drop)
            })
            .with_context(|| format!("cannot prepare {text}"))?;
        }
        Ok(all.len())
    }

    /// Closes the pool (waits for connections in use to be returned).
    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }
}
