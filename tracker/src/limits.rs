//! Per-address limits, so that one client cannot make the tracker unusable
//! for the others: a request rate per client address (a `governor` keyed
//! GCRA limiter in a middleware) and the quotas of peers and file entries
//! per address (checked against the database at registration and on file
//! changes, see `routes/peers.rs`).
//!
//! The address is the one the tracker records for a peer
//! ([`crate::addr::client_ip`]: the TCP peer, or behind a trusted proxy the
//! right-most untrusted `X-Forwarded-For` hop).
//!
//! Heartbeats, `/healthz` and `/livez` are never rate-limited: a busy NAT
//! must not lose its peers because it also browses, and probes must see the
//! service as it is. The rate is kept in this process's memory, so with
//! several replicas behind a balancer an address may send up to the rate
//! to each replica; the quotas are counted in the database and hold across
//! replicas (up to the registrations in flight at the same moment).

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use sbcftp_api::PeerId;

use crate::config::Config;
use crate::error::Error;
use crate::state::AppState;

/// How many checks pass between two clean-ups of addresses whose bucket
/// is full again (keeps the map as small as the set of active addresses).
const RETAIN_EVERY: u64 = 10_000;

/// The request-rate limiter of one tracker process.
#[derive(Debug)]
pub struct RateLimits {
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    checks: AtomicU64,
}

impl RateLimits {
    /// `per_second` sustained, `burst` at once; `per_second == 0` turns the
    /// limit off.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst.max(per_second)).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        RateLimits {
            limiter,
            checks: AtomicU64::new(0),
        }
    }

    /// `Ok` if `ip` may send one more request now, else how long it must wait.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % RETAIN_EVERY == RETAIN_EVERY - 1 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        limiter
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// Failed registration-key checks per address: a burst of
/// [`KEY_FAILURE_BURST`], then one per [`KEY_FAILURE_PERIOD`]. An address
/// over it is blocked until its bucket refills, and its requests are
/// refused before the key is compared, so guessing runs at that pace.
#[derive(Debug)]
pub struct KeyFailures {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    blocked: std::sync::Mutex<std::collections::HashMap<IpAddr, std::time::Instant>>,
}

/// Failed key checks an address may make at once.
pub const KEY_FAILURE_BURST: u32 = 10;
/// Then one more per this period.
pub const KEY_FAILURE_PERIOD: Duration = Duration::from_secs(6);

/// Most addresses remembered as blocked (expired ones are dropped first).
const MAX_BLOCKED: usize = 65_536;

impl Default for KeyFailures {
    fn default() -> Self {
        let burst = NonZeroU32::new(KEY_FAILURE_BURST).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(KEY_FAILURE_PERIOD)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        KeyFailures {
            limiter: RateLimiter::keyed(quota),
            blocked: std::sync::Mutex::default(),
        }
    }
}

impl KeyFailures {
    /// `Err(wait)` while `ip` is blocked.
    pub fn blocked(&self, ip: IpAddr) -> Result<(), Duration> {
        let blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        match blocked.get(&ip) {
            Some(until) => match until.checked_duration_since(std::time::Instant::now()) {
                Some(wait) if !wait.is_zero() => Err(wait),
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// Counts a failed check of `ip`; blocks it when over the budget.
    pub fn failed(&self, ip: IpAddr) {
        metrics::counter!("sbcftp_key_failures_total").increment(1);
        if let Err(not_until) = self.limiter.check_key(&ip) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let now = std::time::Instant::now();
            let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
            if blocked.len() >= MAX_BLOCKED {
                blocked.retain(|_, until| *until > now);
                self.limiter.retain_recent();
            }
            if blocked.len() < MAX_BLOCKED {
                blocked.insert(ip, now + wait);
            }
        }
    }
}

/// Whether a request is exempt from the rate limit: heartbeats and probes.
fn exempt(method: &Method, path: &str) -> bool {
    match path {
        "/healthz" | "/livez" => true,
        _ => {
            method == Method::POST
                && path.starts_with("/api/v1/peers/")
                && path.ends_with("/heartbeat")
                && path.matches('/').count() == 5
        }
    }
}

/// Middleware: refuses a request over its address's rate with 429.
pub async fn rate_limit(
    State(state): State<AppState>,
    ConnectInfo(socket): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if exempt(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let ip = match crate::addr::client_ip(&state.config, socket, req.headers()) {
        Ok(ip) => ip,
        Err(e) => return e.into_response(),
    };
    match state.rate_limits.check(ip) {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            metrics::counter!("sbcftp_rate_limited_total").increment(1);
            Error::TooMany {
                detail: format!(
                    "{ip} sent more than {} requests per second (burst {}); \
                     the limit is --requests-per-ip / --requests-burst",
                    state.config.requests_per_ip,
                    state
                        .config
                        .requests_burst
                        .max(state.config.requests_per_ip)
                ),
                retry_after: wait,
            }
            .into_response()
        }
    }
}

/// Middleware: at most `--max-connections` requests are handled at once
/// over the whole service (one semaphore, not one per route). A request
/// waits for a slot at most `--request-timeout`, then gets 503.
pub async fn limit_in_flight(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let slot = tokio::time::timeout(
        state.config.request_timeout,
        Arc::clone(&state.in_flight).acquire_owned(),
    )
    .await;
    let Ok(Ok(permit)) = slot else {
        metrics::counter!("sbcftp_requests_shed_total").increment(1);
        return Error::Busy(format!(
            "the tracker is handling its most requests at once (--max-connections {}); retry",
            state.config.max_connections
        ))
        .into_response();
    };
    let resp = next.run(req).await;
    drop(permit);
    resp
}

/// Middleware: lists, searches and other reads of `/api/v1` (the requests
/// whose cost grows with the data) share half of the database pool, so
/// however many of them queue, registrations, heartbeat authentication,
/// the heartbeat flush and `/healthz` always find a connection. A read
/// waits for its share at most `--request-timeout`, then gets 503.
pub async fn limit_reads(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let is_read = req.method() == Method::GET
        && path.starts_with("/api/v1/")
        && path != "/api/v1/openapi.json";
    if !is_read {
        return next.run(req).await;
    }
    let slot = tokio::time::timeout(
        state.config.request_timeout,
        Arc::clone(&state.reads).acquire_owned(),
    )
    .await;
    let Ok(Ok(permit)) = slot else {
        metrics::counter!("sbcftp_requests_shed_total").increment(1);
        return Error::Busy(
            "too many lists and searches at once (they share half of --db-max-connections); retry"
                .into(),
        )
        .into_response();
    };
    let resp = next.run(req).await;
    drop(permit);
    resp
}

/// The number of database connections lists and searches may use at once.
pub fn read_share(db_max_connections: u32) -> usize {
    usize::try_from(db_max_connections / 2)
        .unwrap_or(usize::MAX)
        .max(1)
}

/// What the peers registered from one address hold.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub peers: u64,
    pub files: u64,
}

/// The peers and file entries registered from `ip`, leaving out `except`
/// (the peer being changed). Not locked: registrations in flight at the
/// same moment may each see room for one more.
pub async fn usage(state: &AppState, ip: IpAddr, except: Option<&PeerId>) -> Result<Usage, Error> {
    let (config, mut usage) = (&state.config, Usage::default());
    if config.max_peers_per_ip == 0 && config.max_files_per_ip == 0 {
        return Ok(usage);
    }
    for row in state.store.peers_at(&addr_pattern(ip)).await? {
        if Some(&row.peer_id) != except {
            usage.peers += 1;
            usage.files += u64::try_from(row.file_count).unwrap_or(0);
        }
    }
    Ok(usage)
}

/// A quota refusal: a slot frees when a peer leaves or is swept, so retry
/// after about a TTL.
fn quota_error(config: &Config, detail: String) -> Error {
    Error::TooMany {
        detail,
        retry_after: config.peer_ttl,
    }
}

/// Whether one more peer with `files` files may register from `ip`.
pub fn check_register(
    config: &Config,
    ip: IpAddr,
    usage: Usage,
    files: usize,
) -> Result<(), Error> {
    let max = config.max_peers_per_ip;
    if max > 0 && usage.peers >= max {
        return Err(quota_error(
            config,
            format!(
                "{ip} already has {} peers registered; the limit is {max} per address                  (--max-peers-per-ip); retry when one leaves or is swept",
                usage.peers
            ),
        ));
    }
    check_files(config, ip, usage, files)
}

/// Whether a peer of `ip` may hold `files` files, given what the other
/// peers of `ip` hold.
pub fn check_files(config: &Config, ip: IpAddr, others: Usage, files: usize) -> Result<(), Error> {
    let max = config.max_files_per_ip;
    let total = others.files.saturating_add(files as u64);
    if max > 0 && total > max {
        return Err(quota_error(
            config,
            format!(
                "peers registered from {ip} would share {total} files; the limit is {max}                  per address (--max-files-per-ip)"
            ),
        ));
    }
    Ok(())
}

/// How many files one peer of `ip` may hold under the per-address quota,
/// given what the other peers of `ip` hold.
pub fn files_room(config: &Config, others: Usage) -> usize {
    match config.max_files_per_ip {
        0 => usize::MAX,
        max => usize::try_from(max.saturating_sub(others.files)).unwrap_or(usize::MAX),
    }
}

/// The `LIKE` pattern (escape `!`) matching the stored `addr` of every peer
/// registered from `ip` (`1.2.3.4:port` or `[v6]:port`).
pub fn addr_pattern(ip: IpAddr) -> String {
    // IP text has no `%`, `_` or `!`; the colon ends an IPv4 address and
    // the bracket an IPv6 one, so no address is a prefix of another.
    match ip {
        IpAddr::V4(v4) => format!("{v4}:%"),
        IpAddr::V6(v6) => format!("[{v6}]:%"),
    }
}

/// The IP of a stored `addr` (`ip:port` or `[v6]:port`).
pub fn addr_ip(addr: &str) -> Option<IpAddr> {
    addr.parse::<SocketAddr>().ok().map(|s| s.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_and_probes_are_exempt() {
        let hb = "/api/v1/peers/0123456789abcdef0123456789abcdef/heartbeat";
        assert!(exempt(&Method::POST, hb));
        assert!(exempt(&Method::GET, "/healthz"));
        assert!(!exempt(&Method::GET, hb));
        assert!(!exempt(&Method::POST, "/api/v1/peers"));
        assert!(!exempt(&Method::POST, "/api/v1/peers/x/files/heartbeat"));
    }

    #[test]
    fn patterns_match_only_their_address() {
        let v4: IpAddr = "10.0.0.1".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(addr_pattern(v4), "10.0.0.1:%");
        let v6: IpAddr = "::1".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(addr_pattern(v6), "[::1]:%");
        assert_eq!(addr_ip("[::1]:7"), Some(v6));
        assert_eq!(addr_ip("10.0.0.1:7"), Some(v4));
    }

    #[test]
    fn limits_and_says_how_long() {
        let limits = RateLimits::new(1, 2);
        let ip: IpAddr = "192.0.2.1".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(limits.check(ip).is_ok());
        assert!(limits.check(ip).is_ok());
        let wait = limits
            .check(ip)
            .expect_err("third request within the burst of 2");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        let other: IpAddr = "192.0.2.2".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(limits.check(other).is_ok());
        assert!(RateLimits::new(0, 0).check(ip).is_ok());
    }
}
