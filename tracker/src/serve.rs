//! The HTTP/1.1 accept loop, with the connection-level limits that
//! `axum::serve` does not expose.
//!
//! - **Open connections** are capped (`--max-open-connections`): one over
//!   the cap is closed as soon as it is accepted, so a flood of idle sockets
//!   cannot exhaust file descriptors or memory.
//! - **Header timeout** (`--header-timeout`): a client has this long to send
//!   a complete request head, counted from when the connection opens or the
//!   previous response was written. It closes slowloris connections (a head
//!   sent a byte at a time) and is also the idle keep-alive timeout (hyper
//!   starts the timer as soon as it waits for the next request).
//! - **Write timeout** (`--write-timeout`): a write to a client that stopped
//!   reading fails after this long and the connection is closed, so each
//!   such client holds at most one response (a page) in memory, for a
//!   bounded time.
//!
//! `/metrics` shows `sbcftp_open_connections`, and
//! `sbcftp_connections_failed_total` counts connections that ended in an
//! error (a timeout, a reset).
//!
//! Only HTTP/1.1 is served (no cleartext HTTP/2); a reverse proxy in front
//! may speak HTTP/2 to clients. Shutdown is graceful: the listener closes,
//! idle connections are closed, requests in flight finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// The limits of one connection, and how many may be open.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Most connections open at once.
    pub max_open: usize,
    /// Time to send a request head (also the idle keep-alive timeout).
    pub header_timeout: Duration,
    /// Time a blocked write may wait for the client to read.
    pub write_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits for the
/// requests in flight.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let open = Arc::new(Semaphore::new(limits.max_open));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            metrics::counter!("sbcftp_connections_refused_total").increment(1);
            tracing::debug!(%remote, "too many open connections; closed");
            drop(stream);
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, %remote, "cannot set TCP_NODELAY");
        }
        let mut timed = tokio_io_timeout::TimeoutStream::new(stream);
        timed.set_write_timeout(Some(limits.write_timeout));
        let io = TokioIo::new(Box::pin(timed));
        let service = app
            .clone()
            .map_request(move |mut req: axum::http::Request<Incoming>| {
                req.extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(remote));
                req
            });
        let conn = graceful.watch(http.serve_connection(io, TowerToHyperService::new(service)));
        metrics::gauge!("sbcftp_open_connections").increment(1.0);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                // Timeouts and resets by the client: routine, not errors.
                tracing::debug!(error = %e, %remote, "connection ended");
                metrics::counter!("sbcftp_connections_failed_total").increment(1);
            }
            metrics::gauge!("sbcftp_open_connections").decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
