//! Peers: register, list, show, heartbeat, change the file list, leave.
//!
//! Everything is validated before the database is touched, and each change
//! is one transaction, so a rejected request changes nothing. Only the holder
//! of a peer's token may act on it (the [`AuthPeer`] extractor); the
//! heartbeat goes through the in-memory cache of [`crate::liveness`] and
//! never waits for the database on a hit.

use std::collections::HashSet;
use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use sbcftp_api::{
    FileEntry, FilesUpdated, HeartbeatResponse, PatchFilesRequest, Peer, PeerFileList, PeerId,
    PeerList, RegisterRequest, RegisterResponse, ReplaceFilesRequest,
};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{AuthPeer, RegistrationKey};
use super::doc::{DatabaseErrors, JsonBodyErrors, PeerAuthErrors};
use super::{cursor, page_limit, paginate, rfc3339};
use crate::clock::{now_ms, online_since};
use crate::error::{ApiJson, ApiQuery, Error, Result};
use crate::limits;
use crate::liveness::{Reach, hash_token};
use crate::state::AppState;
use crate::store::{FilesOutcome, NewPeer, PeerRow};

/// Routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register, list_peers))
        .routes(routes!(get_peer, leave))
        .routes(routes!(heartbeat))
        .routes(routes!(replace_files, patch_files, peer_files))
}

/// Query of `GET /api/v1/peers` and `GET /api/v1/peers/{peer_id}/files`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PeersQuery {
    /// Page size (default 100, at most `--max-page-size`).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Validates a file list: sizes, unique names, the cap.
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

/// The address a peer registered from and what the other peers of that
/// address hold (`None`: no such peer, or the quotas are off).
async fn others_at_ip(
    state: &AppState,
    peer_id: &PeerId,
) -> Result<Option<(std::net::IpAddr, limits::Usage)>> {
    if state.config.max_files_per_ip == 0 {
        return Ok(None);
    }
    let Some(ip) = state
        .store
        .peer_row(peer_id)
        .await?
        .and_then(|row| limits::addr_ip(&row.addr))
    else {
        return Ok(None);
    };
    Ok(Some((ip, limits::usage(state, ip, Some(peer_id)).await?)))
}

/// The answer to a file-list change.
fn files_updated(
    outcome: FilesOutcome,
    peer_id: &PeerId,
    state: &AppState,
) -> Result<Json<FilesUpdated>> {
    match outcome {
        FilesOutcome::Done(file_count) => Ok(Json(FilesUpdated { file_count })),
        FilesOutcome::NoPeer => Err(Error::no_peer(peer_id)),
        FilesOutcome::OverCap(n) => Err(Error::Unprocessable(format!(
            "the change would leave the peer with {n} files; this tracker accepts at most {} per peer",
            state.config.max_files_per_peer
        ))),
    }
}

fn to_peer(row: PeerRow) -> Peer {
    let reach = Reach::from_row(row.reachable, row.unreachable_reason);
    Peer {
        peer_id: row.peer_id,
        addr: row.addr,
        registered_at: rfc3339(row.registered_at),
        last_seen: rfc3339(row.last_seen),
        file_count: u64::try_from(row.file_count).unwrap_or(0),
        reachable: reach.reachable,
        // A time only once a result is recorded (the row's time may be a claim).
        reachable_checked_at: reach.reachable.map(|_| rfc3339(row.reachable_checked_at)),
        unreachable_reason: reach.reason,
    }
}

fn heartbeat_answer(state: &AppState, reach: Reach) -> HeartbeatResponse {
    HeartbeatResponse {
        heartbeat_interval_secs: state.config.effective_heartbeat_secs(),
        ttl_secs: state.config.peer_ttl.as_secs(),
        reachable: reach.reachable,
        unreachable_reason: reach.reason,
    }
}

/// A new secret token: 32 random bytes in hex.
fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Register a peer and its files.
///
/// The peer's IP is the one the request came from (or, behind a trusted
/// proxy, the right-most untrusted `X-Forwarded-For` hop); `port` is where it
/// serves files. The answer holds the secret token that later calls need.
///
/// Unless the tracker runs with `--reachability-check false`, it then
/// connects once to that IP and port and sends one request in the peer
/// protocol; whether a valid answer came back is the peer's `reachable`
/// (in listings and heartbeat answers) a moment later.
#[utoipa::path(
    post,
    path = "/api/v1/peers",
    tag = "peers",
    request_body = RegisterRequest,
    security((), ("bearer" = [])),
    responses(
        (status = 201, description = "Registered", body = RegisterResponse),
        JsonBodyErrors,
        // After the group: this route's 400 has one more cause.
        (status = 400, description = "Malformed JSON or X-Forwarded-For"),
        (status = 401, description = "The tracker is private and no registration key was sent"),
        (status = 403, description = "Wrong registration key"),
        (status = 422, description = "Invalid values (port, names, hashes, sizes, too many files)"),
        DatabaseErrors,
    )
)]
async fn register(
    State(state): State<AppState>,
    _: RegistrationKey,
    ConnectInfo(socket): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisterResponse>)> {
    if req.port == 0 {
        return Err(Error::Unprocessable(
            "port must be between 1 and 65535".into(),
        ));
    }
    check_files(&req.files, state.config.max_files_per_peer, "files")?;
    let ip = crate::addr::client_ip(&state.config, socket, &headers)?;
    let usage = limits::usage(&state, ip, None).await?;
    limits::check_register(&state.config, ip, usage, req.files.len())?;
    let addr = crate::addr::format_addr(ip, req.port);

    let peer_id = PeerId::from_bytes(rand::random());
    let token = new_token();
    let token_hash = hash_token(&token);
    let token_hex = token_hash.to_hex();
    let now = now_ms();
    let new = NewPeer {
        peer_id,
        token_hash: token_hex.as_str(),
        addr: &addr,
        now,
        // The check below claims this registration's one check.
        reachable_checked_at: if state.reachability.enabled() { now } else { 0 },
    };
    state.store.insert_peer(&new, &req.files).await?;
    state.liveness.remember(&peer_id, token_hash, now);
    tracing::info!(%peer_id, %addr, files = req.files.len(), "peer registered");
    // Only the registering address, on the port it advertised.
    state
        .reachability
        .after_registration(peer_id, SocketAddr::new(ip, req.port));
    let answer = heartbeat_answer(&state, Reach::default());
    Ok((
        StatusCode::CREATED,
        Json(RegisterResponse {
            peer_id,
            token,
            addr,
            heartbeat_interval_secs: answer.heartbeat_interval_secs,
            ttl_secs: answer.ttl_secs,
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
        (status = 400, description = "Bad limit or cursor"),
        DatabaseErrors,
    )
)]
async fn list_peers(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PeersQuery>,
) -> Result<Json<PeerList>> {
    let limit = page_limit(query.limit, &state)?;
    let after = cursor::<PeerId>(query.cursor.as_deref())?;
    let rows = state
        .store
        .list_peers(online_since(state.config.peer_ttl), after, limit + 1)
        .await?;
    let (rows, next_cursor) = paginate(rows, limit, |r| r.peer_id);
    Ok(Json(PeerList {
        peers: rows.into_iter().map(to_peer).collect(),
        next_cursor,
    }))
}

/// One online peer, with its file count (its files are
/// `GET /api/v1/peers/{peer_id}/files`, a page at a time).
#[utoipa::path(
    get,
    path = "/api/v1/peers/{peer_id}",
    tag = "peers",
    params(("peer_id" = String, Path, description = "The peer's id")),
    responses(
        (status = 200, description = "The peer", body = Peer),
        (status = 404, description = "No such online peer"),
        DatabaseErrors,
    )
)]
async fn get_peer(
    State(state): State<AppState>,
    Path(peer_id): Path<String>,
) -> Result<Json<Peer>> {
    let id = PeerId::parse(&peer_id).map_err(|_| Error::NoPeer(peer_id))?;
    Ok(Json(to_peer(online_peer(&state, &id).await?)))
}

/// The cursor of a page of files: the last name, in hex, so that it needs
/// no escaping in a query string.
struct NameCursor(String);

impl std::fmt::Display for NameCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.bytes().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl std::str::FromStr for NameCursor {
    type Err = ();

    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        if !s.len().is_multiple_of(2) || s.len() > 2 * sbcftp_api::MAX_NAME_LEN {
            return Err(());
        }
        let bytes = (0..s.len())
            .step_by(2)
            .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect::<Option<Vec<u8>>>()
            .ok_or(())?;
        String::from_utf8(bytes).map(NameCursor).map_err(|_| ())
    }
}

/// The row of an online peer, or 404.
async fn online_peer(state: &AppState, id: &PeerId) -> Result<PeerRow> {
    state
        .store
        .get_peer(id, online_since(state.config.peer_ttl))
        .await?
        .ok_or_else(|| Error::no_peer(id))
}

/// One online peer's files, by name, a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/peers/{peer_id}/files",
    tag = "peers",
    params(
        ("peer_id" = String, Path, description = "The peer's id"),
        PeersQuery,
    ),
    responses(
        (status = 200, description = "A page of the peer's files", body = PeerFileList),
        (status = 400, description = "Bad limit or cursor"),
        (status = 404, description = "No such online peer"),
        DatabaseErrors,
    )
)]
async fn peer_files(
    State(state): State<AppState>,
    Path(peer_id): Path<String>,
    ApiQuery(query): ApiQuery<PeersQuery>,
) -> Result<Json<PeerFileList>> {
    let id = PeerId::parse(&peer_id).map_err(|_| Error::NoPeer(peer_id))?;
    let limit = page_limit(query.limit, &state)?;
    let after = cursor::<NameCursor>(query.cursor.as_deref())?.map(|c| c.0);
    online_peer(&state, &id).await?;
    let rows = state
        .store
        .peer_files(&id, after.as_deref(), limit + 1)
        .await?;
    let (files, next_cursor) = paginate(rows, limit, |f| NameCursor(f.name.as_str().to_owned()));
    Ok(Json(PeerFileList { files, next_cursor }))
}

/// Keep a peer alive. Answers 404 once the peer has been swept; it should
/// then register again.
///
/// The answer also says whether the tracker could reach the peer at its
/// last reachability check.
#[utoipa::path(
    post,
    path = "/api/v1/peers/{peer_id}/heartbeat",
    tag = "peers",
    params(("peer_id" = String, Path, description = "The peer's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Alive; the intervals to keep", body = HeartbeatResponse),
        PeerAuthErrors,
        DatabaseErrors,
    )
)]
async fn heartbeat(
    State(state): State<AppState>,
    AuthPeer(peer_id): AuthPeer,
) -> Json<HeartbeatResponse> {
    state.liveness.beat(&peer_id);
    Json(heartbeat_answer(&state, state.liveness.reach(&peer_id)))
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
        JsonBodyErrors,
        PeerAuthErrors,
        (status = 422, description = "Invalid files"),
        DatabaseErrors,
    )
)]
async fn replace_files(
    State(state): State<AppState>,
    AuthPeer(peer_id): AuthPeer,
    ApiJson(req): ApiJson<ReplaceFilesRequest>,
) -> Result<Json<FilesUpdated>> {
    check_files(&req.files, state.config.max_files_per_peer, "files")?;
    if let Some((ip, others)) = others_at_ip(&state, &peer_id).await? {
        limits::check_files(&state.config, ip, others, req.files.len())?;
    }
    let outcome = state.store.replace_files(&peer_id, &req.files).await?;
    files_updated(outcome, &peer_id, &state)
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
        JsonBodyErrors,
        PeerAuthErrors,
        (status = 422, description = "Invalid files, a name both added and removed, or over the cap"),
        DatabaseErrors,
    )
)]
async fn patch_files(
    State(state): State<AppState>,
    AuthPeer(peer_id): AuthPeer,
    ApiJson(req): ApiJson<PatchFilesRequest>,
) -> Result<Json<FilesUpdated>> {
    let cap = state.config.max_files_per_peer;
    check_files(&req.add, cap, "add")?;
    if req.remove.len() > cap {
        return Err(Error::Unprocessable(format!(
            "remove has {} names; at most {cap}",
            req.remove.len()
        )));
    }
    let added: HashSet<&str> = req.add.iter().map(|f| f.name.as_str()).collect();
    if let Some((i, name)) = req
        .remove
        .iter()
        .enumerate()
        .find(|(_, name)| added.contains(name.as_str()))
    {
        return Err(Error::Unprocessable(format!(
            "remove[{i}]: {name:?} is also in add; a name may be in only one of them"
        )));
    }
    // The per-address quota is a second cap, applied in the same transaction.
    let others = others_at_ip(&state, &peer_id).await?;
    let room = others.map_or(usize::MAX, |(_, o)| limits::files_room(&state.config, o));
    let outcome = state
        .store
        .patch_files(&peer_id, &req.remove, &req.add, cap.min(room))
        .await?;
    if let (FilesOutcome::OverCap(n), Some((ip, others))) = (&outcome, others)
        && usize::try_from(*n).unwrap_or(usize::MAX) <= cap
    {
        limits::check_files(
            &state.config,
            ip,
            others,
            usize::try_from(*n).unwrap_or(usize::MAX),
        )?;
    }
    files_updated(outcome, &peer_id, &state)
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
        PeerAuthErrors,
        DatabaseErrors,
    )
)]
async fn leave(State(state): State<AppState>, AuthPeer(peer_id): AuthPeer) -> Result<StatusCode> {
    let existed = state.store.delete_peer(&peer_id).await?;
    state.liveness.forget([&peer_id]);
    if existed {
        tracing::info!(%peer_id, "peer left");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::no_peer(&peer_id))
    }
}
