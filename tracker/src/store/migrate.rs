//! The schema: the migrations of `migrations/<backend>/`, embedded in the
//! binary at build time and run at start-up.
//!
//! Adding a migration is adding a file `NNNN_description.sql` to each
//! backend's folder, with the same version number; no Rust changes.
//! `build.rs` makes cargo rebuild when a file is added. The migrations are
//! sqlx's own (`_sqlx_migrations` table, checksums), so a tracker refuses to
//! start on a database whose applied migrations were edited afterwards.
//!
//! The `migrate!` macro comes from `sqlx-macros` directly rather than through
//! sqlx's `macros` feature, which would also build all three database
//! drivers a second time for the compiler (see `Cargo.toml`).

use anyhow::Context;
use sqlx::migrate::Migrator;

use super::{Pools, Store};

#[cfg(feature = "sqlite")]
static SQLITE: Migrator = sqlx_macros::migrate!("../migrations/sqlite");
#[cfg(feature = "mysql")]
static MYSQL: Migrator = sqlx_macros::migrate!("../migrations/mysql");
#[cfg(feature = "postgres")]
static POSTGRES: Migrator = sqlx_macros::migrate!("../migrations/postgres");

impl Store {
    /// Runs the migrations of this backend that the database has not seen.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match &self.pool {
            #[cfg(feature = "sqlite")]
            Pools::Sqlite(pool) => SQLITE.run(pool).await,
            #[cfg(feature = "mysql")]
            Pools::MySql(pool) => MYSQL.run(pool).await,
            #[cfg(feature = "postgres")]
            Pools::Postgres(pool) => POSTGRES.run(pool).await,
        }
        .context("database migration failed")
    }
}
