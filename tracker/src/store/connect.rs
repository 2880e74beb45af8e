//! Connecting: which backend a URL names, and one pool per backend with the
//! settings that backend needs.
//!
//! Before the pool is built, one direct connection is tried, so that a
//! start-up failure names its cause (refused, unknown host, bad password)
//! rather than the pool's "timed out".

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::ConnectOptions;

use super::sql::Statements;
use super::{Pools, Store};

/// sqlx logs statements slower than this (with their full text, which for a
/// 1000-row insert is long) at [`SLOW_LEVEL`]: debug, not warn, since large
/// registrations and SQLite checkpoints are slow by nature.
const SLOW_STATEMENT: Duration = Duration::from_secs(1);
const SLOW_LEVEL: log::LevelFilter = log::LevelFilter::Debug;

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
        Ok(Store {
            pool,
            backend,
            sql: Arc::new(Statements::for_backend(backend)),
            indexing: Arc::default(),
        })
    }
}
