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
    /// The reachability check.
    pub reachability: Arc<Checker>,
    /// The OpenAPI document, rendered once.
    pub openapi_json: Arc<str>,
}
