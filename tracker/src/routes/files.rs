//! Contents: one row per distinct hash with the online peers that hold it,
//! searchable by name and cursor-paginated.
//!
//! A page is the page of distinct hashes after the cursor, then the holders
//! of just those hashes (see `store::files`). The cursor is the last hash of
//! the page. At most [`MAX_HOLDERS`] holders (file rows) are listed per
//! content, so one very popular file cannot make a page unbounded.

use axum::Json;
use axum::extract::{Path, State};
use sbcftp_api::{Content, ContentHash, ContentList, MAX_NAME_LEN};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::doc::DatabaseErrors;
use super::{cursor, page_limit, paginate};
use crate::clock::online_since;
use crate::error::{ApiQuery, Error, Result};
use crate::state::AppState;

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

/// A hash given in a path or query: 400 if it is not one.
fn parse_hash(text: &str) -> Result<ContentHash> {
    ContentHash::parse(text).map_err(|e| Error::BadRequest(e.to_string()))
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
        (status = 400, description = "Bad query, hash, limit or cursor"),
        DatabaseErrors,
    )
)]
async fn list_files(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<FilesQuery>,
) -> Result<Json<ContentList>> {
    let limit = page_limit(query.limit, &state)?;
    let after = cursor::<ContentHash>(query.cursor.as_deref())?;
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
    let min_seen = online_since(state.config.peer_ttl);
    if let Some(hash) = query.hash.as_deref() {
        // A one-content filter: at most one row, and no next page.
        let hash = parse_hash(hash)?;
        let mut files = Vec::new();
        if after.is_none_or(|after| hash > after) {
            let found = state
                .store
                .content(hash, min_seen, search, MAX_HOLDERS)
                .await?;
            files.extend(found);
        }
        return Ok(Json(ContentList {
            files,
            next_cursor: None,
        }));
    }
    let hashes = state
        .store
        .hash_page(min_seen, after, search, limit + 1)
        .await?;
    let (hashes, next_cursor) = paginate(hashes, limit, |h| *h);
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
        (status = 400, description = "Not a hash"),
        (status = 404, description = "No online peer holds it"),
        DatabaseErrors,
    )
)]
async fn get_content(
    State(state): State<AppState>,
    Path(hash): Path<String>,
) -> Result<Json<Content>> {
    let hash = parse_hash(&hash)?;
    let min_seen = online_since(state.config.peer_ttl);
    state
        .store
        .content(hash, min_seen, None, MAX_HOLDERS)
        .await?
        .map(Json)
        .ok_or_else(|| Error::NotFound(format!("no online peer holds content {hash}")))
}
