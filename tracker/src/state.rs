//! The state every handler shares: configuration, database, liveness cache.

use std::sync::Arc;

use crate::config::Config;
use crate::liveness::Liveness;
use crate::reachability::Checker;
use crate::store::Store;

/// Cheap to clone: everything is behind `Arc`s or is a pool handle.
#[derive(Clone, Debug)]
pub struct AppState {
    /// Validated.
    pub config: Arc<Config>,
    pub store: Store,
    /// Heartbeat cache, pending heartbeats and counters.
    pub liveness: Arc<Liveness>,
    /// The per-address request rate.
    pub rate_limits: Arc<crate::limits::RateLimits>,
    /// Failed registration-key checks per address.
    pub key_failures: Arc<crate::limits::KeyFailures>,
    /// Slots of requests in flight (`--max-connections`), for the whole service.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// Slots of database reads by lists and searches (half the pool).
    pub reads: Arc<tokio::sync::Semaphore>,
    /// The reachability check.
    pub reachability: Arc<Checker>,
    /// The OpenAPI document, rendered once.
    pub openapi_json: Arc<str>,
}
