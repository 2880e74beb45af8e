//! The one error type of the HTTP boundary, answered as RFC 9457
//! `application/problem+json`.
//!
//! Handlers return [`Result<T>`] and use `?`. Errors of the layers below
//! (the store's `sqlx::Error`, liveness's [`AuthError`]) convert into it with
//! `?`, and this is the one place that gives them a status. Client errors
//! carry a detail that says what to fix; database errors are logged with
//! their cause and answered
//! 500 without echoing it, except when the database is unreachable (pool
//! timeout, I/O), which is a 503 "retry" so that a dead database never looks
//! like a bug. The extractors [`ApiJson`] and [`ApiQuery`] turn axum's
//! rejections into the same problem documents, and [`problem_for_bare_errors`]
//! gives one to error responses produced outside handlers (unknown route, wrong
//! method, timeout, concurrency limit).

use axum::Json;
use axum::body::Body;
use std::error::Error as StdError;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use sbcftp_api::{PeerId, Problem};

use crate::liveness::AuthError;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Result of a handler.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400: the request is malformed (bad query, bad cursor, bad header).
    #[error("{0}")]
    BadRequest(String),
    /// 401: no or malformed credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: credentials given but wrong.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such content.
    #[error("{0}")]
    NotFound(String),
    /// 404: no such peer (the text of its id, as given).
    #[error(
        "no peer {0:?} is registered (it may have been swept after missing heartbeats; register again)"
    )]
    NoPeer(String),
    /// 422: well-formed JSON whose values are not acceptable.
    #[error("{0}")]
    Unprocessable(String),
    /// 429: over a per-address limit (`detail` names it and its flag);
    /// answered with `Retry-After`.
    #[error("{detail}")]
    TooMany {
        /// Which limit, and the flag that sets it.
        detail: String,
        /// When a retry may succeed.
        retry_after: std::time::Duration,
    },
    /// 503: too busy right now; answered with `Retry-After: 1`.
    #[error("{0}")]
    Busy(String),
    /// An axum extractor rejected the request; its status and text are kept.
    #[error("{detail}")]
    Rejection {
        /// Status chosen by axum (400, 413, 415, 422).
        status: StatusCode,
        /// axum's description of what is wrong.
        detail: String,
    },
    /// A database error: 503 if the database is unreachable, else 500.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl Error {
    fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) | Error::NoPeer(_) => StatusCode::NOT_FOUND,
            Error::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Rejection { status, .. } => *status,
            Error::Database(e) if is_unavailable(e) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Whether a database error means "the database cannot be reached right now"
/// (as opposed to a bug or a constraint).
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            // Pg: admin shutdown / cannot connect now / too many connections /
            // database not accepting connections; MySQL/MariaDB: server gone,
            // lost connection, too many connections, shutdown in progress.
            matches!(
                db.code().as_deref(),
                Some("57P01" | "57P02" | "57P03" | "53300" | "55000")
                    | Some("2006" | "2013" | "1040" | "1053" | "08S01")
            )
        }
        _ => false,
    }
}

impl Error {
    /// 404 for this peer.
    pub fn no_peer(peer_id: &PeerId) -> Self {
        Error::NoPeer(peer_id.to_string())
    }
}

impl From<AuthError> for Error {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::UnknownPeer(id) => Error::no_peer(&id),
            AuthError::WrongToken(_) => Error::Forbidden(e.to_string()),
            AuthError::Database(e) => Error::Database(e),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            Error::Database(e) if status == StatusCode::SERVICE_UNAVAILABLE => {
                tracing::warn!(error = %e, "database unavailable");
                "the database is unavailable; retry later".to_owned()
            }
            Error::Database(e) => {
                tracing::error!(error = ?e, "database error");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        let mut resp = problem(status, detail);
        let retry_after = match &self {
            Error::TooMany { retry_after, .. } => Some(*retry_after),
            Error::Busy(_) => Some(std::time::Duration::from_secs(1)),
            _ => None,
        };
        if let Some(wait) = retry_after {
            // Whole seconds, rounded up, at least 1.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        resp
    }
}

/// A problem+json response with the given status and detail.
pub fn problem(status: StatusCode, detail: impl Into<String>) -> Response {
    let body = Problem {
        type_: "about:blank".to_owned(),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail: Some(detail.into()),
    };
    let mut resp = (status, Json(body)).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    resp
}

/// `axum::Json`, but its rejections are problem documents.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(Error::Rejection {
                status: rejection.status(),
                detail: value_error(&rejection).unwrap_or_else(|| rejection.body_text()),
            }),
        }
    }
}

/// For a body whose JSON is well-formed but holds a value that does not
/// fit (a bad name or hash, a wrong type): where it is and why, as
/// `files[0].name: file name "a/b" contains '/'; …`, without axum's
/// preamble and serde's line and column.
fn value_error(rejection: &JsonRejection) -> Option<String> {
    if !matches!(rejection, JsonRejection::JsonDataError(_)) {
        return None;
    }
    let mut source = StdError::source(rejection);
    while let Some(e) = source {
        if let Some(e) = e.downcast_ref::<serde_path_to_error::Error<serde_json::Error>>() {
            let inner = e.inner();
            let text = inner.to_string();
            let position = format!(" at line {} column {}", inner.line(), inner.column());
            let why = text.strip_suffix(&position).unwrap_or(&text);
            return Some(match e.path().to_string().as_str() {
                "." => why.to_owned(),
                path => format!("{path}: {why}"),
            });
        }
        source = e.source();
    }
    None
}

/// `axum::extract::Query`, but its rejections are problem documents.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(rejection) => Err(Error::BadRequest(rejection.body_text())),
        }
    }
}

/// Middleware: an error status whose body is not already a problem document
/// (unknown route, wrong method, request timeout, body limit from a layer)
/// gets one, so every error a client sees has the same shape.
pub async fn problem_for_bare_errors(req: Request, next: axum::middleware::Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    if is_problem {
        return resp;
    }
    let detail = match status {
        StatusCode::NOT_FOUND => "no such route; see /api/v1/openapi.json",
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this route",
        StatusCode::REQUEST_TIMEOUT => "the request took too long",
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is too large",
        _ => "the request failed",
    };
    let (mut parts, _) = resp.into_parts();
    let new = problem(status, detail);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    let (_, body) = new.into_parts();
    Response::from_parts(parts, Body::new(body))
}
