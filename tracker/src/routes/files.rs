//! Contents: one entry per distinct (hash, size) with the online peers that
//! hold it, searchable by words and cursor-paginated.
//!
//! A page is the page of distinct hashes after the cursor, then the holders
//! of just those hashes (see `store::files`). The cursor is the last hash of
//! the page. Holders are grouped by (hash, size), so a flood of peers that
//! claim a content with a wrong size gets its own entry and cannot hide the
//! honest one; each peer is listed once, at most [`CAPS`] holders, sizes and
//! names per content (chosen at random when there are more), so one very
//! popular or flooded content cannot make a page unbounded or pin its list.

use axum::Json;
use axum::extract::{Path, State};
use sbcftp_api::{Content, ContentHash, ContentList, MAX_NAME_LEN, search};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::doc::DatabaseErrors;
use super::{cursor, page_limit, paginate};
use crate::clock::online_since;
use crate::error::{ApiQuery, Error, Result};
use crate::state::AppState;
use crate::store::HolderCaps;

/// What one content shows: at most 100 holder peers per (hash, size), 4
/// sizes per hash, 20 distinct names (4 read per holder).
pub const CAPS: HolderCaps = HolderCaps {
    holders: 100,
    names_per_holder: 4,
    names: 20,
    sizes: 4,
};

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
    /// Search words: only contents with a name that has, for every word of
    /// `q`, a word starting with it, in any order. Names and `q` are
    /// compared after Unicode NFKC and lowercasing; words are runs of
    /// letters and digits (everything else separates them), cut to 32
    /// characters. At most 8 words; a `q` without any letter or digit is a
    /// 400. Example: `con bud` finds `Concert_Budget 2014.mkv`.
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

/// List contents held by online peers, by hash; search them by words.
///
/// One entry per (hash, size) that online peers claim (at most 4 sizes per
/// hash, so a page may hold more entries than `limit`, but never more than
/// `limit` hashes). Each entry lists every holder peer once, up to 100 (a
/// random subset when more hold it, different from one request to the
/// next), and up to 20 distinct names.
///
/// Search (`q`): every word of `q` must start a word of some name of the
/// content, in any order, ignoring case (Unicode NFKC + lowercase; `Ärger`
/// is found by `ärger`, not by `arger`). Words are runs of letters and
/// digits, so `concert_budget 2014 (00042).mkv` has the words `concert`,
/// `budget`, `2014`, `00042` and `mkv`. A `q` with no letter or digit, or
/// with more than 8 words, is a 400.
#[utoipa::path(
    get,
    path = "/api/v1/files",
    tag = "files",
    params(FilesQuery),
    responses(
        (status = 200, description = "A page of contents", body = ContentList),
        (status = 400, description = "Bad query (q without a letter or digit, or with more than 8 words), hash, limit or cursor"),
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
        Some(q) => Some(search::query_words(q).map_err(|e| Error::BadRequest(e.0))?),
    };
    let search = search.as_deref();
    let min_seen = online_since(state.config.peer_ttl);
    if let Some(hash) = query.hash.as_deref() {
        // A one-content filter: at most one row, and no next page.
        let hash = parse_hash(hash)?;
        let mut files = Vec::new();
        if after.is_none_or(|after| hash > after) {
            let found = state.store.content(hash, min_seen, search, &CAPS).await?;
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
    let files = state.store.contents(&hashes, min_seen, &CAPS).await?;
    Ok(Json(ContentList { files, next_cursor }))
}

/// One content and the online peers that hold it (up to 100, each once).
///
/// When peers claim this hash with different sizes, this is the size most
/// of them claim; `GET /api/v1/files?hash=` lists every size.
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
    // The size most holders claim (ties: the first in this request's
    // rotation); the listing `GET /files?hash=` shows every size.
    let found = state.store.content(hash, min_seen, None, &CAPS).await?;
    let mut best: Option<Content> = None;
    for c in found {
        if best.as_ref().is_none_or(|b| c.peers.len() > b.peers.len()) {
            best = Some(c);
        }
    }
    best.map(Json)
        .ok_or_else(|| Error::NotFound(format!("no online peer holds content {hash}")))
}
