//! HTTP routes, one module per feature; this module only merges them and
//! adds the shared layers.

pub mod files;
pub mod health;
pub mod peers;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;

use crate::error::Error;
use crate::state::AppState;

/// Every documented route, with its OpenAPI description.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(crate::openapi::base())
        .merge(peers::router())
        .merge(files::router())
        .merge(health::router())
}

/// The whole application with its layers.
pub fn app(state: AppState) -> Router {
    let (router, _) = api_router().split_for_parts();
    let config = state.config.clone();
    router
        .route_layer(axum::middleware::from_fn(crate::metrics::track_requests))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(state)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(tower::limit::ConcurrencyLimitLayer::new(
            config.max_connections,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
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

/// The bearer token of a request, or 401.
pub fn bearer(headers: &HeaderMap) -> Result<&str, Error> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Err(Error::Unauthorized(
            "missing `Authorization: Bearer <token>` header".into(),
        ));
    };
    let text = value
        .to_str()
        .map_err(|_| Error::Unauthorized("the Authorization header is not visible ASCII".into()))?;
    match text.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(Error::Unauthorized(
            "the Authorization header must be `Bearer <token>`".into(),
        )),
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

/// Milliseconds as RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}
