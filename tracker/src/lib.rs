//! SBCFTP tracker: the REST central index of peers and the files they share.
//!
//! The JSON bodies and the values in them (content hashes, peer ids, file
//! names) are the crate `sbcftp_api`, shared with the peer.
//!
//! # Layout
//!
//! A request goes down these layers; no module imports one above it.
//!
//! | layer | module | what it holds |
//! | --- | --- | --- |
//! | start | [`run`] (here), `serve`, `main.rs` | connect, migrate, spawn the background tasks, serve until shutdown (`serve`: the accept loop with the connection limits); `main.rs` only parses flags and signals |
//! | config | [`config`] | every flag and `SBCFTP_…` variable, validated once |
//! | HTTP | `routes/` | one module per feature (`peers`, `files`, `health`), merged in `routes/mod.rs` with the layers (body limit, concurrency, timeout, request id, tracing, problem+json for bare errors); `routes/auth.rs`: the extractors that authenticate (`AuthPeer`, `RegistrationKey`); `routes/doc.rs`: shared error descriptions |
//! | HTTP edge | `error`, `addr`, `limits` | the one error type and its status for every failure below; the client's address (trusted proxies); per-address rate limit and quotas |
//! | document | [`openapi`] | the OpenAPI document assembled from the routes |
//! | liveness | `liveness/` | heartbeat cache and flush (`mod.rs`, with its own `AuthError`), the sweep and checkpoints (`background.rs`) |
//! | reachability | `reachability` | whether a peer can be reached at its listed address: one check per registration and a periodic re-check, bounded and rate-limited per address, results to the store and the liveness cache |
//! | data | [`store`] | the database over SQLite, MySQL/MariaDB and PostgreSQL, one file per concern, every statement in `store/sql.rs` |
//! | time | `clock` | the one clock: now, online-since |
//!
//! `state` is what handlers share (config, store, liveness, reachability); `metrics` is
//! the Prometheus text of `/metrics`.

mod addr;
mod clock;
pub mod config;
mod error;
mod limits;
mod liveness;
mod metrics;
pub mod openapi;
mod reachability;
mod routes;
mod serve;
mod state;
pub mod store;

pub use config::Config;
pub use server::run;

mod server {
    use std::sync::Arc;

    use anyhow::Context;
    use tokio_util::sync::CancellationToken;

    use crate::config::Config;
    use crate::liveness::{Liveness, background};
    use crate::reachability::{self, Checker};
    use crate::state::AppState;
    use crate::store::Store;

    /// Connects to the database, runs the migrations, and serves the API on
    /// `listener` until `shutdown` resolves; then finishes the requests in
    /// flight, flushes pending heartbeats and closes the database.
    pub async fn run(
        listener: tokio::net::TcpListener,
        config: Config,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        config.validate()?;
        crate::metrics::install();
        let store = Store::connect(
            &config.database_url,
            config.db_max_connections,
            config.db_acquire_timeout,
        )
        .await?;
        store.migrate().await?;
        let liveness = Arc::new(Liveness::default());
        let reachability = Arc::new(Checker::new(
            reachability::Settings {
                enabled: config.reachability_check,
                timeout: config.reachability_timeout,
                recheck: config.reachability_recheck,
                ttl: config.peer_ttl,
            },
            store.clone(),
            Arc::clone(&liveness),
        ));
        let (max_connections, db_max_connections) =
            (config.max_connections, config.db_max_connections);
        let rate_limits = Arc::new(crate::limits::RateLimits::new(
            config.requests_per_ip,
            config.requests_burst,
        ));
        let state = AppState {
            config: Arc::new(config),
            store: store.clone(),
            liveness,
            reachability: Arc::clone(&reachability),
            rate_limits,
            key_failures: Arc::default(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(max_connections)),
            reads: Arc::new(tokio::sync::Semaphore::new(crate::limits::read_share(
                db_max_connections,
            ))),
            openapi_json: crate::openapi::openapi_json().into(),
        };
        let local = listener
            .local_addr()
            .context("listener has no local address")?;
        tracing::info!(
            addr = %local,
            backend = ?store.backend(),
            config = %state.config.summary(),
            "tracker listening"
        );

        let cancel = CancellationToken::new();
        let background = tokio::spawn(background::run(
            Arc::clone(&state.liveness),
            store.clone(),
            background::Timing {
                ttl: state.config.peer_ttl,
                sweep_interval: state.config.sweep_interval,
            },
            cancel.clone(),
        ));
        let rechecks = tokio::spawn(reachability.run(cancel.clone()));
        let checkpoints = (store.backend() == crate::store::Backend::Sqlite)
            .then(|| tokio::spawn(background::run_checkpoints(store.clone(), cancel.clone())));
        let state_config = Arc::clone(&state.config);
        let app = crate::routes::app(state);
        crate::serve::serve(
            listener,
            app,
            crate::serve::ConnectionLimits {
                max_open: state_config.max_open_connections,
                header_timeout: state_config.header_timeout,
                write_timeout: state_config.write_timeout,
            },
            shutdown,
        )
        .await;
        tracing::info!("shutting down: flushing heartbeats");
        cancel.cancel();
        if let Err(e) = background.await {
            tracing::error!(error = %e, "background task failed");
        }
        if let Err(e) = rechecks.await {
            tracing::error!(error = %e, "reachability task failed");
        }
        if let Some(Err(e)) = match checkpoints {
            Some(h) => Some(h.await),
            None => None,
        } {
            tracing::error!(error = %e, "checkpoint task failed");
        }
        store.close().await;
        tracing::info!("tracker stopped");
        Ok(())
    }
}
