//! HTTP routes, one module per feature; this module merges them, adds the
//! shared layers and holds the helpers of pagination.
//!
//! - `peers`, `files`, `health`: the handlers, each with its OpenAPI
//!   description (`#[utoipa::path]`).
//! - `auth`: the extractors that authenticate a request.
//! - `doc`: the error answers several routes share, for the OpenAPI
//!   document.

mod auth;
mod doc;
mod files;
mod health;
mod peers;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;

use crate::error::Error;
use crate::state::AppState;

/// Every documented route, with its OpenAPI description (the paths of the
/// document; `openapi.rs` adds the rest).
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(peers::router())
        .merge(files::router())
        .merge(health::router())
}

/// The whole application with its layers.
pub fn app(state: AppState) -> Router {
    let (router, _) = api_router().split_for_parts();
    let config = state.config.clone();
    let state_for_limits = state.clone();
    router
        .route_layer(axum::middleware::from_fn(crate::metrics::track_requests))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(state)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state_for_limits.clone(),
            crate::limits::limit_reads,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ))
        // Outside the timeout: waiting for a slot has its own bound (503),
        // and the request then has its whole time.
        .layer(axum::middleware::from_fn_with_state(
            state_for_limits.clone(),
            crate::limits::limit_in_flight,
        ))
        // A private tracker's reads need the key, checked before anything else.
        .layer(axum::middleware::from_fn_with_state(
            state_for_limits.clone(),
            auth::private_reads,
        ))
        // Outside the in-flight limit: a refused request holds no slot.
        .layer(axum::middleware::from_fn_with_state(
            state_for_limits,
            crate::limits::rate_limit,
        ))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http())
        .layer(SetRequestIdLayer::x_request_id(Counter))
        .layer(axum::middleware::from_fn(
            crate::error::problem_for_bare_errors,
        ))
}

/// Request ids: a per-process counter (unique enough to find a request in logs).
#[derive(Clone, Debug, Default)]
struct Counter;

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl MakeRequestId for Counter {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{id:x}").parse().ok().map(RequestId::new)
    }
}

/// Checks a page size against the configured bounds.
pub fn page_limit(limit: Option<u32>, state: &AppState) -> Result<i64, Error> {
    let max = state.config.max_page_size;
    match limit {
        None => Ok(i64::from(state.config.default_page_size)),
        Some(n) if (1..=max).contains(&n) => Ok(i64::from(n)),
        Some(n) => Err(Error::BadRequest(format!(
            "limit {n} is out of range: use 1 to {max}"
        ))),
    }
}

/// The cursor of a page request: none for the first page, else the
/// `next_cursor` of the previous page, which must parse as `T`.
pub fn cursor<T: std::str::FromStr>(given: Option<&str>) -> Result<Option<T>, Error> {
    match given {
        None | Some("") => Ok(None),
        Some(c) => c.parse().map(Some).map_err(|_| {
            let shown: String = c.chars().take(40).collect();
            Error::BadRequest(format!(
                "cursor {shown:?} is not a cursor from this API; pass `next_cursor` of the previous page"
            ))
        }),
    }
}

/// A page out of `rows`, fetched with `limit + 1`: the first `limit` rows,
/// and the cursor of the next page (the key of the last row kept) when
/// there are more.
pub fn paginate<T, K: ToString>(
    mut rows: Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> K,
) -> (Vec<T>, Option<String>) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() <= limit {
        return (rows, None);
    }
    rows.truncate(limit);
    let next = rows.last().map(|r| key(r).to_string());
    (rows, next)
}

/// Milliseconds as RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}
