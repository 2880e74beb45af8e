//! Authentication as extractors: a handler that acts for a peer takes
//! [`AuthPeer`], registration takes [`RegistrationKey`], and neither calls a
//! check by hand.
//!
//! Both read only the request head, so axum runs them before the body is
//! read and parsed: a request without the right credentials is refused
//! before its body is looked at.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use sbcftp_api::PeerId;

use crate::clock::millis;
use crate::error::Error;
use crate::state::AppState;

/// The peer of a peer-scoped route (`/api/v1/peers/{peer_id}/…`), proven by
/// its bearer token: 401 without a token, 403 with another peer's token,
/// 404 for an unknown (or swept) peer, 503 if the database is needed and
/// unreachable.
#[derive(Debug, Clone, Copy)]
pub struct AuthPeer(pub PeerId);

impl FromRequestParts<AppState> for AuthPeer {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::BadRequest(e.body_text()))?;
        // A text that is not a peer id names no peer.
        let peer_id = PeerId::parse(&raw).map_err(|_| Error::NoPeer(raw))?;
        let token = bearer(&parts.headers)?;
        state
            .liveness
            .authenticate(&state.store, &peer_id, token, millis(state.config.peer_ttl))
            .await?;
        Ok(AuthPeer(peer_id))
    }
}

/// Registration on a private tracker (`--registration-key`): the request
/// carries the key as its bearer token (401 without, 403 with a wrong
/// one). On a public tracker it always succeeds.
#[derive(Debug, Clone, Copy)]
pub struct RegistrationKey;

impl FromRequestParts<AppState> for RegistrationKey {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let Some(key) = state.config.registration_key() else {
            return Ok(RegistrationKey);
        };
        // Failed checks are throttled per address, as for reads.
        let ip = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| crate::addr::client_ip(&state.config, c.0, &parts.headers))
            .transpose()?;
        if let Some(ip) = ip
            && let Err(wait) = state.key_failures.blocked(ip)
        {
            return Err(Error::TooMany {
                detail: format!(
                    "too many failed registration-key checks from {ip}; wait before trying again"
                ),
                retry_after: wait,
            });
        }
        let checked = match bearer(&parts.headers) {
            Ok(given) if is_key(given, key) => return Ok(RegistrationKey),
            Ok(_) => Error::Forbidden("wrong registration key".into()),
            Err(_) => Error::Unauthorized(
                "this tracker is private: send the registration key as `Authorization: Bearer <key>`"
                    .into(),
            ),
        };
        if let Some(ip) = ip {
            state.key_failures.failed(ip);
        }
        Err(checked)
    }
}

/// Whether `given` is the registration key (digests compared, so the
/// comparison time says nothing about the key).
pub fn is_key(given: &str, key: &str) -> bool {
    blake3::hash(given.as_bytes()) == blake3::hash(key.as_bytes())
}

/// Middleware of a private tracker (`--registration-key`): every read of
/// `/api/v1` (lists, search, one content, one peer) and `/metrics` needs the
/// key as its bearer token. `/healthz`, `/livez` and the OpenAPI document
/// stay open; registration checks the key in [`RegistrationKey`], and a
/// peer's own changes are proven by its token ([`AuthPeer`]). An address
/// whose key checks keep failing is refused with 429 for a while before
/// its key is even looked at.
pub async fn private_reads(
    axum::extract::State(state): axum::extract::State<AppState>,
    axum::extract::ConnectInfo(socket): axum::extract::ConnectInfo<std::net::SocketAddr>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(key) = state.config.registration_key() else {
        return next.run(req).await;
    };
    let path = req.uri().path();
    let guarded = (path.starts_with("/api/v1/") && path != "/api/v1/openapi.json"
        || path == "/metrics")
        && matches!(
            *req.method(),
            axum::http::Method::GET | axum::http::Method::HEAD
        );
    if !guarded {
        return next.run(req).await;
    }
    let ip = match crate::addr::client_ip(&state.config, socket, req.headers()) {
        Ok(ip) => ip,
        Err(e) => return e.into_response(),
    };
    if let Err(wait) = state.key_failures.blocked(ip) {
        return Error::TooMany {
            detail: format!(
                "too many failed registration-key checks from {ip}; wait before trying again"
            ),
            retry_after: wait,
        }
        .into_response();
    }
    let failed = match bearer(req.headers()) {
        Ok(given) if is_key(given, key) => return next.run(req).await,
        Ok(_) => Error::Forbidden("wrong registration key".into()),
        Err(_) => Error::Unauthorized(
            "this tracker is private: send the registration key as `Authorization: Bearer <key>`"
                .into(),
        ),
    };
    state.key_failures.failed(ip);
    failed.into_response()
}

/// The bearer token of a request, or 401.
fn bearer(headers: &HeaderMap) -> Result<&str, Error> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
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
