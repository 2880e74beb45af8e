//! The tracker's one clock: unix milliseconds, as stored in `last_seen`,
//! `registered_at` and the sweep lease.
//!
//! Every "now" and every "online since" comes from here, so liveness,
//! listings and the sweep agree on what the time is.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, in unix milliseconds.
pub fn now_ms() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    millis(d)
}

/// A duration in milliseconds (saturating).
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The oldest `last_seen` of a peer that counts as online, for a TTL.
pub fn online_since(ttl: Duration) -> i64 {
    now_ms().saturating_sub(millis(ttl))
}
