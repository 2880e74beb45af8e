//! Operational routes: `/livez`, `/healthz`, `/metrics` and the OpenAPI document.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::problem;
use crate::state::AppState;

/// How long `/healthz` waits for the database.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Body of a healthy `/healthz`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// Routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(livez))
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
}

/// Liveness: 200 `ok` as long as the process serves HTTP; touches nothing
/// else (no database), so a load balancer can tell a hung process from a
/// database outage, and benchmarks have a no-op route to compare with.
#[utoipa::path(
    get,
    path = "/livez",
    tag = "operations",
    responses((status = 200, description = "The process serves HTTP", body = String, content_type = "text/plain"))
)]
async fn livez() -> &'static str {
    "ok"
}

/// Health: 200 when the database answers, 503 otherwise.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "The tracker and its database answer", body = Health),
        (status = 503, description = "The database does not answer"),
    )
)]
async fn healthz(State(state): State<AppState>) -> Response {
    match tokio::time::timeout(HEALTH_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => axum::Json(Health {
            status: "ok".into(),
        })
        .into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health check: database error");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "the database does not answer; retry later",
            )
        }
        Err(_) => {
            tracing::warn!("health check: database timed out");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "the database did not answer in time; retry later",
            )
        }
    }
}

/// Prometheus metrics, text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"))
)]
async fn metrics(State(state): State<AppState>) -> Response {
    let body = crate::metrics::render(&state);
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// This OpenAPI document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json"))
)]
async fn openapi_json(State(state): State<AppState>) -> Response {
    let mut resp = state.openapi_json.to_string().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
