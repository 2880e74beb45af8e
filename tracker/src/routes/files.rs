//! Contents: one row per distinct hash with the online peers that hold it,
//! searchable by name and cursor-paginated.
//!
//! A page is two queries: the page of distinct hashes (walking the
//! `files(hash, …)` index from the cursor), then the holders of just those
//! hashes. The cursor is the last hash of the page. At most
//! [`MAX_HOLDERS`] holders (file rows) are listed per content, so one very
//! popular file cannot make a page unbounded.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiQuery, Error, Result};
use crate::routes::page_limit;
use crate::state::AppState;
use sbcftp_api::{Content, ContentHash, ContentList, MAX_NAME_LEN, Problem};

/// Most holders (peer, name) listed for one content.
pub const MAX_HOLDERS: i64 = 100;

/// Routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_files))
        .routes(routes!(get_content))
}

/// Query of `GET /api/v1/files`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FilesQuery {
    /// Only contents with a name containing this text (case-insensitive for ASCII).
    pub q: Option<String>,
    /// Only the content with this hash.
    pub hash: Option<String>,
    /// Page size (default 100, at most `--max-page-size`).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// List contents held by online peers, by hash.
///
/// Each content lists its distinct names and up to 100 holders.
#[utoipa::path(
    get,
    path = "/api/v1/files",
    tag = "files",
    params(FilesQuery),
    responses(
        (status = 200, description = "A page of contents", body = ContentList),
        (status = 400, description = "Bad query, hash, limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_files(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<FilesQuery>,
) -> Result<Json<ContentList>> {
    let limit = page_limit(query.limit, &state)?;
    let after = match query.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(ContentHash::parse(c).map_err(|_| {
            let shown: String = c.chars().take(40).collect();
            Error::BadRequest(format!(
                "cursor {shown:?} is not a cursor from this API; pass `next_cursor` of the previous page"
            ))
        })?),
    };
    let min_seen = crate::online_since(&state.config);
    if let Some(hash) = query.hash.as_deref() {
        let hash = ContentHash::parse(hash).map_err(|e| Error::BadRequest(e.to_string()))?;
        // A one-content filter: at most one row.
        let mut files = Vec::new();
        if after.is_none_or(|after| hash > after) {
            files = state.store.contents(&[hash], min_seen, MAX_HOLDERS).await?;
            if let Some(q) = query.q.as_deref().filter(|q| !q.is_empty()) {
                let q = q.to_lowercase();
                files.retain(|c| c.names.iter().any(|n| n.to_lowercase().contains(&q)));
            }
        }
        return Ok(Json(ContentList {
            files,
            next_cursor: None,
        }));
    }
    let search = match query.q.as_deref() {
        None | Some("") => None,
        Some(q) if q.len() > MAX_NAME_LEN => {
            return Err(Error::BadRequest(format!(
                "q is {} bytes long; names are at most {MAX_NAME_LEN}",
                q.len()
            )));
        }
        Some(q) => Some(q),
    };
    let mut hashes = state
        .store
        .hash_page(min_seen, after, search, limit + 1)
        .await?;
    let more = hashes.len() as i64 > limit;
    hashes.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = if more {
        hashes.last().map(ContentHash::to_string)
    } else {
        None
    };
    let files = state.store.contents(&hashes, min_seen, MAX_HOLDERS).await?;
    Ok(Json(ContentList { files, next_cursor }))
}

/// One content and the online peers that hold it (up to 100).
#[utoipa::path(
    get,
    path = "/api/v1/files/{hash}",
    tag = "files",
    params(("hash" = String, Path, description = "Lowercase hex BLAKE3 of the content")),
    responses(
        (status = 200, description = "The content", body = Content),
        (status = 400, description = "Not a hash", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No online peer holds it", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_content(
    State(state): State<AppState>,
    Path(hash): Path<String>,
) -> Result<Json<Content>> {
    let hash = ContentHash::parse(&hash).map_err(|e| Error::BadRequest(e.to_string()))?;
    let min_seen = crate::online_since(&state.config);
    state
        .store
        .content(hash, min_seen, None, MAX_HOLDERS)
        .await?
        .map(Json)
        .ok_or_else(|| Error::NotFound(format!("no online peer holds content {hash}")))
}
