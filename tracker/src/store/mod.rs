//! Database access: one [`Store`] over SQLite, MySQL/MariaDB or PostgreSQL,
//! chosen from the URL scheme.
//!
//! The pool is an enum with one variant per compiled-in backend. Each method
//! is written once: the `with_pool!` macro expands its body in every arm, so
//! the compiler checks it against each driver's concrete types while the SQL
//! comes from [`sql`] (written once with `?`, rendered for PostgreSQL at
//! start-up). Only portable column types are read: `String` and `i64`.
//!
//! Every change is one transaction, so a request that fails half-way leaves
//! the database as it was. Files reference their peer with `ON DELETE
//! CASCADE` (SQLite: sqlx turns `foreign_keys` on for every connection), so
//! removing a peer removes its files in the same statement.

pub mod sql;

use std::borrow::Cow;
use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, ConnectOptions, Row, SqlSafeStr};

use sbcftp_api::{Content, ContentHash, FileEntry, FileName, PeerId, PeerRef};
use sql::{Dialect, Queries};

#[cfg(not(any(feature = "sqlite", feature = "mysql", feature = "postgres")))]
compile_error!(
    "the tracker needs at least one database backend feature: `sqlite`, `mysql` or `postgres`"
);

/// sqlx logs statements slower than this (with their full text, which for a
/// 1000-row insert is long) at [`SLOW_LEVEL`]: debug, not warn, since large
/// registrations and SQLite checkpoints are slow by nature.
const SLOW_STATEMENT: Duration = Duration::from_secs(1);
const SLOW_LEVEL: log::LevelFilter = log::LevelFilter::Debug;

/// Rows per multi-row `INSERT` (4 parameters each; every backend takes 4000).
const INSERT_CHUNK: usize = 1000;
/// Ids per `IN (…)` list.
const IN_CHUNK: usize = 500;

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite:`
    Sqlite,
    /// `mysql:` or `mariadb:`
    MySql,
    /// `postgres:` or `postgresql:`
    Postgres,
}

impl Backend {
    /// The backend of a database URL, or an error that says what is accepted.
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        let scheme = url
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match scheme.as_str() {
            "sqlite" => Ok(Backend::Sqlite),
            "mysql" | "mariadb" => Ok(Backend::MySql),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => bail!(
                "unsupported database URL scheme {scheme:?}: use sqlite://FILE?mode=rwc, \
                 mysql://USER:PASS@HOST/DB or postgres://USER:PASS@HOST/DB"
            ),
        }
    }

    /// The cargo feature that compiles this backend in.
    pub fn feature(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::MySql => "mysql",
            Backend::Postgres => "postgres",
        }
    }
}

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
            Pools::Sqlite($pool) => $body,
            #[cfg(feature = "mysql")]
            Pools::MySql($pool) => $body,
            #[cfg(feature = "postgres")]
            Pools::Postgres($pool) => $body,
        }
    };
}

/// A peer row as stored.
#[derive(Debug, Clone)]
pub struct PeerRow {
    /// Identifier.
    pub peer_id: PeerId,
    /// `ip:port`.
    pub addr: String,
    /// Unix millis.
    pub registered_at: i64,
    /// Unix millis.
    pub last_seen: i64,
    /// Number of files.
    pub file_count: i64,
}

/// A new peer to insert.
#[derive(Debug)]
pub struct NewPeer<'a> {
    /// Identifier.
    pub peer_id: PeerId,
    /// BLAKE3 hex of the token.
    pub token_hash: &'a str,
    /// `ip:port`.
    pub addr: &'a str,
    /// Unix millis.
    pub now: i64,
}

/// Outcome of a file-list change.
#[derive(Debug, PartialEq, Eq)]
pub enum FilesOutcome {
    /// Done; the peer now has this many files.
    Done(u64),
    /// No such peer.
    NoPeer,
    /// The change would leave the peer with this many files, over the cap;
    /// nothing was changed.
    OverCap(u64),
}

/// The database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pools,
    backend: Backend,
    dialect: Dialect,
    q: std::sync::Arc<Queries>,
}

fn safe(s: &std::sync::Arc<str>) -> AssertSqlSafe<std::sync::Arc<str>> {
    AssertSqlSafe(s.clone())
}

/// The files in hash order: inserting in the order of the `files(hash, …)`
/// index walks its pages once, front to back, instead of at random.
fn by_hash(files: &[FileEntry]) -> Vec<&FileEntry> {
    let mut v: Vec<&FileEntry> = files.iter().collect();
    v.sort_unstable_by_key(|f| f.hash);
    v
}

fn size_i64(size: u64) -> i64 {
    // Validated sizes are at most 2^53 - 1.
    i64::try_from(size).unwrap_or(i64::MAX)
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A column's text parsed into an API value; a stored value that does not
/// parse is a decode error (the tracker writes only valid ones).
fn parsed<T>(text: String) -> Result<T, sqlx::Error>
where
    T: TryFrom<String, Error = sbcftp_api::InvalidField>,
{
    T::try_from(text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// One direct connection before the pool is built, so that a start-up
/// failure names its cause (refused, unknown host, bad password) rather
/// than the pool's "timed out". A macro because each driver's connection
/// type is concrete.
macro_rules! probe {
    ($opts:expr, $timeout:expr, $shown:expr) => {{
        use sqlx::Connection;
        let conn = tokio::time::timeout($timeout.max(Duration::from_secs(5)), $opts.connect())
            .await
            .map_err(|_| anyhow::anyhow!("cannot connect to database {}: timed out", $shown))?
            .with_context(|| format!("cannot connect to database {}", $shown))?;
        let _ = conn.close().await;
    }};
}

impl Store {
    /// Connects to the database named by `url` (without running migrations).
    pub async fn connect(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let backend = Backend::from_url(url)?;
        let shown = crate::config::redact_url(url);
        let pool = match backend {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => {
                use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
                use std::str::FromStr;
                let opts = SqliteConnectOptions::from_str(url)
                    .with_context(|| format!("invalid SQLite URL {shown}"))?
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(5))
                    .foreign_keys(true)
                    // No checkpoint at commit: with a large hash index a
                    // registration of 10,000 files dirties ~10,000 pages, and
                    // copying them back inside the request took most of its
                    // time. `checkpoint()` runs in the background instead.
                    .pragma("wal_autocheckpoint", "0")
                    // Once checkpointed, shrink the log back to 64 MiB.
                    .pragma("journal_size_limit", "67108864")
                    .log_slow_statements(SLOW_LEVEL, SLOW_STATEMENT);
                probe!(opts, acquire_timeout, shown);
                // An in-memory database lives in one connection: keep
                // exactly one, forever. A file takes a few (WAL: readers run
                // beside the one writer).
                let in_memory = url.contains(":memory:") || url.contains("mode=memory");
                let mut pool_opts = sqlx::pool::PoolOptions::<sqlx::Sqlite>::new()
                    .max_connections(max_connections.min(8))
                    .acquire_timeout(acquire_timeout);
                if in_memory {
                    pool_opts = pool_opts
                        .max_connections(1)
                        .min_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None);
                }
                let pool = pool_opts
                    .connect_with(opts)
                    .await
                    .with_context(|| format!("cannot open database {shown}"))?;
                Pools::Sqlite(pool)
            }
            #[cfg(feature = "mysql")]
            Backend::MySql => {
                use sqlx::Executor;
                use sqlx::mysql::MySqlConnectOptions;
                use std::str::FromStr;
                let url = url.replacen("mariadb:", "mysql:", 1);
                let opts = MySqlConnectOptions::from_str(&url)
                    .with_context(|| format!("invalid MySQL URL {shown}"))?
                    .charset("utf8mb4")
                    .log_slow_statements(SLOW_LEVEL, SLOW_STATEMENT);
                probe!(opts, acquire_timeout, shown);
                let pool = sqlx::pool::PoolOptions::<sqlx::MySql>::new()
                    .max_connections(max_connections)
                    .acquire_timeout(acquire_timeout)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // No gap locks: concurrent file-list changes of
                            // different peers must not deadlock each other.
                            conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                                .await?;
                            Ok(())
                        })
                    })
                    .connect_with(opts)
                    .await
                    .with_context(|| format!("cannot connect to database {shown}"))?;
                Pools::MySql(pool)
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres => {
                use sqlx::postgres::PgConnectOptions;
                use std::str::FromStr;
                let url = url.replacen("postgresql:", "postgres:", 1);
                let opts = PgConnectOptions::from_str(&url)
                    .with_context(|| format!("invalid PostgreSQL URL {shown}"))?
                    .application_name("sbcftp-tracker")
                    .log_slow_statements(SLOW_LEVEL, SLOW_STATEMENT);
                probe!(opts, acquire_timeout, shown);
                let pool = sqlx::pool::PoolOptions::<sqlx::Postgres>::new()
                    .max_connections(max_connections)
                    .acquire_timeout(acquire_timeout)
                    .connect_with(opts)
                    .await
                    .with_context(|| format!("cannot connect to database {shown}"))?;
                Pools::Postgres(pool)
            }
            #[allow(unreachable_patterns)]
            other => bail!(
                "this tracker was built without the `{f}` cargo feature, so it cannot use {shown}; \
                 rebuild with `cargo build -p sbcftp-tracker --features {f}`",
                f = other.feature()
            ),
        };
        let dialect = Dialect {
            numbered: backend == Backend::Postgres,
            like_ignores_case: backend == Backend::Sqlite,
            files_first_join: backend == Backend::MySql,
        };
        Ok(Store {
            pool,
            backend,
            dialect,
            q: std::sync::Arc::new(Queries::new(dialect)),
        })
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Runs the migrations of this backend (`migrations/<backend>/`).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let m = |version: i64, desc: &'static str, sql: &'static str| {
            Migration::new(
                version,
                Cow::Borrowed(desc),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        };
        #[allow(unused_variables)]
        let pick = |sqlite: &'static str, mysql: &'static str, pg: &'static str| match self.backend
        {
            Backend::Sqlite => sqlite,
            Backend::MySql => mysql,
            Backend::Postgres => pg,
        };
        let migrator = Migrator::with_migrations(vec![m(
            1,
            "init",
            pick(
                include_str!("../../../migrations/sqlite/0001_init.sql"),
                include_str!("../../../migrations/mysql/0001_init.sql"),
                include_str!("../../../migrations/postgres/0001_init.sql"),
            ),
        )]);
        with_pool!(self, pool => migrator.run(pool).await).context("database migration failed")?;
        Ok(())
    }

    /// `SELECT 1`.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        with_pool!(self, pool => {
            sqlx::query(safe(&self.q.ping)).execute(pool).await?;
        });
        Ok(())
    }

    /// SQLite: copies the write-ahead log back into the database file
    /// (`PRAGMA wal_checkpoint(PASSIVE)`, which never blocks readers or
    /// writers). Other backends: nothing.
    pub async fn checkpoint(&self) -> Result<(), sqlx::Error> {
        #[cfg(feature = "sqlite")]
        if let Pools::Sqlite(pool) = &self.pool {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(pool)
                .await?;
        }
        Ok(())
    }

    /// Closes the pool (waits for connections in use to be returned).
    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }

    /// Inserts a peer and its files in one transaction.
    pub async fn insert_peer(
        &self,
        peer: &NewPeer<'_>,
        files: &[FileEntry],
    ) -> Result<(), sqlx::Error> {
        let count = i64::try_from(files.len()).unwrap_or(i64::MAX);
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(safe(&self.q.insert_peer))
                .bind(peer.peer_id.to_string())
                .bind(peer.token_hash)
                .bind(peer.addr)
                .bind(peer.now)
                .bind(peer.now)
                .bind(count)
                .execute(&mut *tx)
                .await?;
            for chunk in by_hash(files).chunks(INSERT_CHUNK) {
                let text = self.dialect.render(&sql::insert_files(chunk.len()));
                let mut q = sqlx::query(AssertSqlSafe(text));
                for f in chunk {
                    q = q.bind(peer.peer_id.to_string()).bind(f.name.as_str()).bind(size_i64(f.size)).bind(f.hash.to_string());
                }
                q.execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The stored token hash and `last_seen` of a peer, if it exists.
    pub async fn peer_auth(&self, peer_id: &PeerId) -> Result<Option<(String, i64)>, sqlx::Error> {
        with_pool!(self, pool => {
            let row = sqlx::query(safe(&self.q.peer_auth)).bind(peer_id.to_string()).fetch_optional(pool).await?;
            match row {
                Some(r) => Ok(Some((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?))),
                None => Ok(None),
            }
        })
    }

    /// Replaces a peer's whole file list.
    pub async fn replace_files(
        &self,
        peer_id: &PeerId,
        files: &[FileEntry],
    ) -> Result<FilesOutcome, sqlx::Error> {
        let count = i64::try_from(files.len()).unwrap_or(i64::MAX);
        let peer_id = &peer_id.to_string();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let found = sqlx::query(safe(&self.q.set_file_count))
                .bind(count)
                .bind(peer_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if found == 0 {
                return Ok(FilesOutcome::NoPeer);
            }
            sqlx::query(safe(&self.q.delete_files)).bind(peer_id).execute(&mut *tx).await?;
            for chunk in by_hash(files).chunks(INSERT_CHUNK) {
                let text = self.dialect.render(&sql::insert_files(chunk.len()));
                let mut q = sqlx::query(AssertSqlSafe(text));
                for f in chunk {
                    q = q.bind(peer_id).bind(f.name.as_str()).bind(size_i64(f.size)).bind(f.hash.to_string());
                }
                q.execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(FilesOutcome::Done(files.len() as u64))
    }

    /// Removes files by name (and the names about to be re-added), adds
    /// files, and keeps the result within `cap` files, in one transaction.
    pub async fn patch_files(
        &self,
        peer_id: &PeerId,
        remove: &[FileName],
        add: &[FileEntry],
        cap: usize,
    ) -> Result<FilesOutcome, sqlx::Error> {
        let peer_id = &peer_id.to_string();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let found = sqlx::query(safe(&self.q.lock_peer))
                .bind(peer_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if found == 0 {
                return Ok(FilesOutcome::NoPeer);
            }
            let names: Vec<&str> = remove
                .iter()
                .map(FileName::as_str)
                .chain(add.iter().map(|f| f.name.as_str()))
                .collect();
            for chunk in names.chunks(IN_CHUNK) {
                let text = self.dialect.render(&sql::delete_files_named(chunk.len()));
                let mut q = sqlx::query(AssertSqlSafe(text)).bind(peer_id);
                for name in chunk {
                    q = q.bind(*name);
                }
                q.execute(&mut *tx).await?;
            }
            for chunk in by_hash(add).chunks(INSERT_CHUNK) {
                let text = self.dialect.render(&sql::insert_files(chunk.len()));
                let mut q = sqlx::query(AssertSqlSafe(text));
                for f in chunk {
                    q = q.bind(peer_id).bind(f.name.as_str()).bind(size_i64(f.size)).bind(f.hash.to_string());
                }
                q.execute(&mut *tx).await?;
            }
            let count: i64 = sqlx::query(safe(&self.q.count_files))
                .bind(peer_id)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            let count_u = u64_of(count);
            if count_u > cap as u64 {
                tx.rollback().await?;
                return Ok(FilesOutcome::OverCap(count_u));
            }
            sqlx::query(safe(&self.q.set_file_count))
                .bind(count)
                .bind(peer_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(FilesOutcome::Done(count_u))
        })
    }

    /// Deletes a peer and its files; false if there was no such peer.
    pub async fn delete_peer(&self, peer_id: &PeerId) -> Result<bool, sqlx::Error> {
        with_pool!(self, pool => {
            let n = sqlx::query(safe(&self.q.delete_peer)).bind(peer_id.to_string()).execute(pool).await?.rows_affected();
            Ok(n > 0)
        })
    }

    /// One online peer and its files.
    pub async fn get_peer(
        &self,
        peer_id: &PeerId,
        min_seen: i64,
    ) -> Result<Option<(PeerRow, Vec<FileEntry>)>, sqlx::Error> {
        let peer_id = &peer_id.to_string();
        with_pool!(self, pool => {
            let Some(row) = sqlx::query(safe(&self.q.get_peer))
                .bind(peer_id)
                .bind(min_seen)
                .fetch_optional(pool)
                .await?
            else {
                return Ok(None);
            };
            let peer = PeerRow {
                peer_id: parsed(row.try_get(0)?)?,
                addr: row.try_get(1)?,
                registered_at: row.try_get(2)?,
                last_seen: row.try_get(3)?,
                file_count: row.try_get(4)?,
            };
            let rows = sqlx::query(safe(&self.q.peer_files)).bind(peer_id).fetch_all(pool).await?;
            let mut files = Vec::with_capacity(rows.len());
            for r in rows {
                files.push(FileEntry {
                    name: parsed(r.try_get(0)?)?,
                    size: u64_of(r.try_get::<i64, _>(1)?),
                    hash: parsed(r.try_get(2)?)?,
                });
            }
            Ok(Some((peer, files)))
        })
    }

    /// Up to `limit` online peers with ids after `after`, by id.
    pub async fn list_peers(
        &self,
        min_seen: i64,
        after: Option<PeerId>,
        limit: i64,
    ) -> Result<Vec<PeerRow>, sqlx::Error> {
        let after = after.map(|id| id.to_string()).unwrap_or_default();
        with_pool!(self, pool => {
            let rows = sqlx::query(safe(&self.q.list_peers))
                .bind(min_seen)
                .bind(&after)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|row| {
                    Ok(PeerRow {
                        peer_id: parsed(row.try_get(0)?)?,
                        addr: row.try_get(1)?,
                        registered_at: row.try_get(2)?,
                        last_seen: row.try_get(3)?,
                        file_count: row.try_get(4)?,
                    })
                })
                .collect()
        })
    }

    /// Up to `limit` distinct hashes after `after` held by online peers,
    /// optionally only those with a name matching the `LIKE` pattern.
    pub async fn hash_page(
        &self,
        min_seen: i64,
        after: Option<ContentHash>,
        pattern: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ContentHash>, sqlx::Error> {
        let after = after.map(|h| h.to_string()).unwrap_or_default();
        with_pool!(self, pool => {
            let rows = match pattern {
                None => {
                    sqlx::query(safe(&self.q.hash_page))
                        .bind(min_seen)
                        .bind(&after)
                        .bind(limit)
                        .fetch_all(pool)
                        .await?
                }
                Some(p) => {
                    sqlx::query(safe(&self.q.hash_page_q))
                        .bind(min_seen)
                        .bind(&after)
                        .bind(p)
                        .bind(limit)
                        .fetch_all(pool)
                        .await?
                }
            };
            rows.iter().map(|r| parsed(r.try_get::<String, _>(0)?)).collect()
        })
    }

    /// The contents with these hashes, each with at most `per_content`
    /// holders (online peers only), in hash order. Hashes no online peer
    /// holds are left out.
    pub async fn contents(
        &self,
        hashes: &[ContentHash],
        min_seen: i64,
        per_content: i64,
    ) -> Result<Vec<Content>, sqlx::Error> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let mut out: Vec<Content> = Vec::with_capacity(hashes.len());
        for chunk in hashes.chunks(IN_CHUNK) {
            let text = self.dialect.render(&sql::contents(chunk.len()));
            with_pool!(self, pool => {
                let mut q = sqlx::query(AssertSqlSafe(text));
                for h in chunk {
                    q = q.bind(h.to_string());
                }
                let rows = q.bind(min_seen).bind(per_content).fetch_all(pool).await?;
                for r in rows {
                    let hash: ContentHash = parsed(r.try_get(0)?)?;
                    let name: FileName = parsed(r.try_get(1)?)?;
                    let size = u64_of(r.try_get::<i64, _>(2)?);
                    let peer_id: PeerId = parsed(r.try_get(3)?)?;
                    let addr: String = r.try_get(4)?;
                    if out.last().is_none_or(|c| c.hash != hash) {
                        out.push(Content { hash, size, names: Vec::new(), peers: Vec::new() });
                    }
                    if let Some(c) = out.last_mut() {
                        if !c.names.contains(&name) {
                            c.names.push(name);
                        }
                        if c.peers.last().is_none_or(|p| p.peer_id != peer_id) {
                            c.peers.push(PeerRef { peer_id, addr });
                        }
                    }
                }
            });
        }
        for c in &mut out {
            c.names.sort();
        }
        Ok(out)
    }

    /// Heartbeat flush: sets `last_seen = now` for these peers and returns
    /// the ids that no longer exist (swept, or gone through another replica).
    pub async fn touch(&self, ids: &[PeerId], now: i64) -> Result<Vec<PeerId>, sqlx::Error> {
        let mut gone = Vec::new();
        for chunk in ids.chunks(IN_CHUNK) {
            let text = self.dialect.render(&sql::touch_peers(chunk.len()));
            let updated = with_pool!(self, pool => {
                let mut q = sqlx::query(AssertSqlSafe(text)).bind(now);
                for id in chunk {
                    q = q.bind(id.to_string());
                }
                q.execute(pool).await?.rows_affected()
            });
            if updated < chunk.len() as u64 {
                let text = self.dialect.render(&sql::existing_peers(chunk.len()));
                let existing: HashSet<PeerId> = with_pool!(self, pool => {
                    let mut q = sqlx::query(AssertSqlSafe(text));
                    for id in chunk {
                        q = q.bind(id.to_string());
                    }
                    let rows = q.fetch_all(pool).await?;
                    rows.iter().map(|r| parsed(r.try_get::<String, _>(0)?)).collect::<Result<_, _>>()?
                });
                gone.extend(chunk.iter().filter(|id| !existing.contains(*id)).copied());
            }
        }
        Ok(gone)
    }

    /// Tries to take the sweep lease until `until`; true if this replica holds it.
    pub async fn take_lease(
        &self,
        holder: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, sqlx::Error> {
        with_pool!(self, pool => {
            let n = sqlx::query(safe(&self.q.take_lease))
                .bind(holder)
                .bind(until)
                .bind(now)
                .bind(holder)
                .execute(pool)
                .await?
                .rows_affected();
            Ok(n == 1)
        })
    }

    /// Up to `limit` peers last seen before `before`.
    pub async fn stale_peers(&self, before: i64, limit: i64) -> Result<Vec<PeerId>, sqlx::Error> {
        with_pool!(self, pool => {
            let rows = sqlx::query(safe(&self.q.stale_peers)).bind(before).bind(limit).fetch_all(pool).await?;
            rows.iter().map(|r| parsed(r.try_get::<String, _>(0)?)).collect()
        })
    }

    /// Deletes these peers (and their files) if they are still stale; returns
    /// how many were deleted.
    pub async fn delete_stale(&self, ids: &[PeerId], before: i64) -> Result<u64, sqlx::Error> {
        let mut deleted = 0;
        for chunk in ids.chunks(IN_CHUNK) {
            let text = self.dialect.render(&sql::delete_stale(chunk.len()));
            deleted += with_pool!(self, pool => {
                let mut q = sqlx::query(AssertSqlSafe(text));
                for id in chunk {
                    q = q.bind(id.to_string());
                }
                q.bind(before).execute(pool).await?.rows_affected()
            });
        }
        Ok(deleted)
    }

    /// Number of peers seen since `min_seen`.
    pub async fn count_online(&self, min_seen: i64) -> Result<i64, sqlx::Error> {
        with_pool!(self, pool => {
            sqlx::query(safe(&self.q.count_online)).bind(min_seen).fetch_one(pool).await?.try_get(0)
        })
    }
}
