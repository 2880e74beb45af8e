//! Peers: register, list, show, heartbeat, change the file list, leave.
//!
//! Everything is validated before the database is touched, and each change
//! is one transaction, so a rejected request changes nothing. Only the holder
//! of a peer's token may act on it; the heartbeat goes through the in-memory
//! cache of [`crate::liveness`] and never waits for the database on a hit.

use std::collections::HashSet;
use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiJson, ApiQuery, Error, Result};
use crate::liveness::{hash_token, no_peer};
use crate::routes::{bearer, page_limit, rfc3339};
use crate::state::AppState;
use crate::store::{FilesOutcome, NewPeer, PeerRow};
use sbcftp_api::{
    FileEntry, FilesUpdated, HeartbeatResponse, PatchFilesRequest, Peer, PeerId, PeerList, Problem,
    RegisterRequest, RegisterResponse, ReplaceFilesRequest,
};

/// Routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register, list_peers))
        .routes(routes!(get_peer, leave))
        .routes(routes!(heartbeat))
        .routes(routes!(replace_files, patch_files))
}

/// Query of `GET /api/v1/peers`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PeersQuery {
    /// Page size (default 100, at most `--max-page-size`).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The peer id of a path; a text that is not one names no peer (404).
fn parse_peer_id(id: &str) -> Result<PeerId> {
    PeerId::parse(id).map_err(|_| no_peer(id))
}

/// Checks that the request carries the bearer token of `peer_id`, a live peer:
/// 401 without a token, 403 with another peer's, 404 for an unknown peer.
async fn authorize(state: &AppState, peer_id: &str, headers: &HeaderMap) -> Result<PeerId> {
    let peer_id = parse_peer_id(peer_id)?;
    let token = bearer(headers)?;
    state
        .liveness
        .authenticate(&state.store, &peer_id, token, crate::ttl_ms(&state.config))
        .await?;
    Ok(peer_id)
}

/// Validates a file list: each entry, unique names, the cap.
fn check_files(files: &[FileEntry], cap: usize, field: &str) -> Result<()> {
    if files.len() > cap {
        return Err(Error::Unprocessable(format!(
            "{field} has {} files; this tracker accepts at most {cap} per peer",
            files.len()
        )));
    }
    let mut names = HashSet::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        f.check_size()
            .map_err(|e| Error::Unprocessable(format!("{field}[{i}]: {e}")))?;
        if !names.insert(f.name.as_str()) {
            return Err(Error::Unprocessable(format!(
                "{field}[{i}]: file name {:?} appears more than once",
                f.name
            )));
        }
    }
    Ok(())
}

fn to_peer(row: PeerRow, files: Option<Vec<FileEntry>>) -> Peer {
    Peer {
        peer_id: row.peer_id,
        addr: row.addr,
        registered_at: rfc3339(row.registered_at),
        last_seen: rfc3339(row.last_seen),
        file_count: u64::try_from(row.file_count).unwrap_or(0),
        files,
    }
}

fn random_hex<const N: usize>() -> String {
    let bytes: [u8; N] = rand::random();
    let mut s = String::with_capacity(N * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Register a peer and its files.
///
/// The peer's IP is the one the request came from (or, behind a trusted
/// proxy, the right-most untrusted `X-Forwarded-For` hop); `port` is where it
/// serves files. The answer holds the secret token that later calls need.
#[utoipa::path(
    post,
    path = "/api/v1/peers",
    tag = "peers",
    request_body = RegisterRequest,
    security((), ("bearer" = [])),
    responses(
        (status = 201, description = "Registered", body = RegisterResponse),
        (status = 400, description = "Malformed JSON or X-Forwarded-For", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "The tracker is private and no registration key was sent", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Wrong registration key", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid values (port, names, hashes, sizes, too many files)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn register(
    State(state): State<AppState>,
    ConnectInfo(socket): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisterResponse>)> {
    if let Some(key) = state.config.registration_key() {
        let given = bearer(&headers).map_err(|_| {
            Error::Unauthorized(
                "this tracker is private: send the registration key as `Authorization: Bearer <key>`"
                    .into(),
            )
        })?;
        // Compare digests, so the comparison time says nothing about the key.
        if blake3::hash(given.as_bytes()) != blake3::hash(key.as_bytes()) {
            return Err(Error::Forbidden("wrong registration key".into()));
        }
    }
    if req.port == 0 {
        return Err(Error::Unprocessable(
            "port must be between 1 and 65535".into(),
        ));
    }
    check_files(&req.files, state.config.max_files_per_peer, "files")?;
    let ip = crate::addr::client_ip(&state.config, socket, &headers)?;
    let addr = crate::addr::format_addr(ip, req.port);

    let peer_id = PeerId::from_bytes(rand::random());
    let token = random_hex::<32>();
    let token_hash = hash_token(&token);
    let token_hex = token_hash.to_hex();
    let now = crate::now_ms();
    state
        .store
        .insert_peer(
            &NewPeer {
                peer_id,
                token_hash: token_hex.as_str(),
                addr: &addr,
                now,
            },
            &req.files,
        )
        .await?;
    state.liveness.remember(&peer_id, token_hash, now);
    tracing::info!(%peer_id, %addr, files = req.files.len(), "peer registered");
    Ok((
        StatusCode::CREATED,
        Json(RegisterResponse {
            peer_id,
            token,
            addr,
            heartbeat_interval_secs: state.config.effective_heartbeat_secs(),
            ttl_secs: state.config.peer_ttl.as_secs(),
        }),
    ))
}

/// List online peers, by id, a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/peers",
    tag = "peers",
    params(PeersQuery),
    responses(
        (status = 200, description = "A page of online peers (without their files)", body = PeerList),
        (status = 400, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_peers(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PeersQuery>,
) -> Result<Json<PeerList>> {
    let limit = page_limit(query.limit, &state)?;
    let after = match query.cursor.as_deref() {
        None | Some("") => None,
        Some(c) if PeerId::parse(c).is_ok() => PeerId::parse(c).ok(),
        Some(c) => {
            let shown: String = c.chars().take(40).collect();
            return Err(Error::BadRequest(format!(
                "cursor {shown:?} is not a cursor from this API; pass `next_cursor` of the previous page"
            )));
        }
    };
    let mut rows = state
        .store
        .list_peers(crate::online_since(&state.config), after, limit + 1)
        .await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        rows.last().map(|r| r.peer_id.to_string())
    } else {
        None
    };
    Ok(Json(PeerList {
        peers: rows.into_iter().map(|r| to_peer(r, None)).collect(),
        next_cursor,
    }))
}

/// One online peer and its files.
#[utoipa::path(
    get,
    path = "/api/v1/peers/{peer_id}",
    tag = "peers",
    params(("peer_id" = String, Path, description = "The peer's id")),
    responses(
        (status = 200, description = "The peer", body = Peer),
        (status = 404, description = "No such online peer", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_peer(
    State(state): State<AppState>,
    Path(peer_id): Path<String>,
) -> Result<Json<Peer>> {
    let id = parse_peer_id(&peer_id)?;
    match state
        .store
        .get_peer(&id, crate::online_since(&state.config))
        .await?
    {
        Some((row, files)) => Ok(Json(to_peer(row, Some(files)))),
        None => Err(no_peer(&peer_id)),
    }
}

/// Keep a peer alive. Answers 404 once the peer has been swept; it should
/// then register again.
#[utoipa::path(
    post,
    path = "/api/v1/peers/{peer_id}/heartbeat",
    tag = "peers",
    params(("peer_id" = String, Path, description = "The peer's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Alive; the intervals to keep", body = HeartbeatResponse),
        (status = 401, description = "No bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Wrong token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown (or swept) peer: register again", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn heartbeat(
    State(state): State<AppState>,
    Path(peer_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<HeartbeatResponse>> {
    let peer_id = authorize(&state, &peer_id, &headers).await?;
    state.liveness.beat(&peer_id);
    Ok(Json(HeartbeatResponse {
        heartbeat_interval_secs: state.config.effective_heartbeat_secs(),
        ttl_secs: state.config.peer_ttl.as_secs(),
    }))
}

/// Replace a peer's whole file list.
#[utoipa::path(
    put,
    path = "/api/v1/peers/{peer_id}/files",
    tag = "peers",
    params(("peer_id" = String, Path, description = "The peer's id")),
    request_body = ReplaceFilesRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Replaced", body = FilesUpdated),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Wrong token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown peer", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid files", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn replace_files(
    State(state): State<AppState>,
    Path(peer_id): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ReplaceFilesRequest>,
) -> Result<Json<FilesUpdated>> {
    let peer_id = authorize(&state, &peer_id, &headers).await?;
    check_files(&req.files, state.config.max_files_per_peer, "files")?;
    match state.store.replace_files(&peer_id, &req.files).await? {
        FilesOutcome::Done(file_count) => Ok(Json(FilesUpdated { file_count })),
        FilesOutcome::NoPeer => Err(no_peer(&peer_id.to_string())),
        FilesOutcome::OverCap(n) => Err(over_cap(n, &state)),
    }
}

fn over_cap(n: u64, state: &AppState) -> Error {
    Error::Unprocessable(format!(
        "the change would leave the peer with {n} files; this tracker accepts at most {} per peer",
        state.config.max_files_per_peer
    ))
}

/// Add (or overwrite by name) and remove files.
#[utoipa::path(
    patch,
    path = "/api/v1/peers/{peer_id}/files",
    tag = "peers",
    params(("peer_id" = String, Path, description = "The peer's id")),
    request_body = PatchFilesRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Changed", body = FilesUpdated),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Wrong token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown peer", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid files, a name both added and removed, or over the cap", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn patch_files(
    State(state): State<AppState>,
    Path(peer_id): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<PatchFilesRequest>,
) -> Result<Json<FilesUpdated>> {
    let peer_id = authorize(&state, &peer_id, &headers).await?;
    let cap = state.config.max_files_per_peer;
    check_files(&req.add, cap, "add")?;
    if req.remove.len() > cap {
        return Err(Error::Unprocessable(format!(
            "remove has {} names; at most {cap}",
            req.remove.len()
        )));
    }
    let added: HashSet<&str> = req.add.iter().map(|f| f.name.as_str()).collect();
    for (i, name) in req.remove.iter().enumerate() {
        if added.contains(name.as_str()) {
            return Err(Error::Unprocessable(format!(
                "remove[{i}]: {name:?} is also in add; a name may be in only one of them"
            )));
        }
    }
    match state
        .store
        .patch_files(&peer_id, &req.remove, &req.add, cap)
        .await?
    {
        FilesOutcome::Done(file_count) => Ok(Json(FilesUpdated { file_count })),
        FilesOutcome::NoPeer => Err(no_peer(&peer_id.to_string())),
        FilesOutcome::OverCap(n) => Err(over_cap(n, &state)),
    }
}

/// Leave: the peer and its files are removed at once.
#[utoipa::path(
    delete,
    path = "/api/v1/peers/{peer_id}",
    tag = "peers",
    params(("peer_id" = String, Path, description = "The peer's id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Gone"),
        (status = 401, description = "No bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Wrong token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown peer", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn leave(
    State(state): State<AppState>,
    Path(peer_id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode> {
    let peer_id = authorize(&state, &peer_id, &headers).await?;
    let existed = state.store.delete_peer(&peer_id).await?;
    state.liveness.forget(std::iter::once(&peer_id));
    if existed {
        tracing::info!(%peer_id, "peer left");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_peer(&peer_id.to_string()))
    }
}
