//! Prometheus metrics.
//!
//! Request counts by route and status go through the `metrics` facade into a
//! process-wide Prometheus recorder (installed once; a second tracker in the
//! same process shares it). The liveness counters are per tracker instance
//! ([`crate::liveness::Stats`]) and are appended by hand, so each replica
//! reports its own sweeps.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::state::AppState;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once (a no-op if another is installed).
pub fn install() {
    HANDLE.get_or_init(|| match PrometheusBuilder::new().install_recorder() {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(error = %e, "cannot install the Prometheus recorder; /metrics shows only tracker counters");
            None
        }
    });
}

/// The method as a label: one of the standard methods, else `other`, so
/// that `curl -X M123` cannot add a series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Middleware (route layer): counts requests by method, route and status.
/// Every label has a fixed set of values: the method via [`method_label`],
/// the route as the template it matched (never the path as sent), the
/// status as a 3-digit code.
pub async fn track_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(req.method());
    let resp = next.run(req).await;
    metrics::counter!(
        "sbcftp_http_requests_total",
        "method" => method,
        "route" => route,
        "status" => resp.status().as_str().to_owned()
    )
    .increment(1);
    resp
}

/// The text of `/metrics`.
pub fn render(state: &AppState) -> String {
    let mut out = HANDLE
        .get()
        .and_then(|h| h.as_ref())
        .map(|h| h.render())
        .unwrap_or_default();
    let s = &state.liveness.stats;
    let series: [(&str, &str, &str, &AtomicU64); 7] = [
        (
            "sbcftp_heartbeats_total",
            "counter",
            "Heartbeats accepted by this tracker.",
            &s.heartbeats,
        ),
        (
            "sbcftp_sweeps_total",
            "counter",
            "Sweeps this tracker ran while holding the sweep lease.",
            &s.sweeps,
        ),
        (
            "sbcftp_peers_swept_total",
            "counter",
            "Stale peers removed by this tracker's sweeps.",
            &s.peers_swept,
        ),
        (
            "sbcftp_sweep_errors_total",
            "counter",
            "Sweeps that failed with a database error.",
            &s.sweep_errors,
        ),
        (
            "sbcftp_heartbeat_flush_errors_total",
            "counter",
            "Heartbeat flushes that failed with a database error.",
            &s.flush_errors,
        ),
        (
            "sbcftp_online_peers",
            "gauge",
            "Online peers at the last sweep tick.",
            &s.online_peers,
        ),
        (
            "sbcftp_heartbeat_last_flush_microseconds",
            "gauge",
            "Duration of the last heartbeat flush.",
            &s.last_flush_micros,
        ),
    ];
    for (name, kind, help, value) in series {
        let value = value.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    out
}
