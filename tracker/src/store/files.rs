//! Files: changes to a peer's file list, pages of contents (one row per
//! distinct hash) and the search by name.
//!
//! Every write of file rows goes through [`write_files`], in hash order
//! and in multi-row statements. A page of contents is two queries: the page
//! of distinct hashes (walking the `files(hash, …)` index from the cursor),
//! then the holders of just those hashes.

use sbcftp_api::{Content, ContentHash, FileEntry, FileName, PeerId, PeerRef};

use super::sql::{Statements, like_contains};
use super::{IN_CHUNK, Store, built, fixed, with_pool};

/// Rows per multi-row `INSERT` (4 parameters each; every backend takes 4000).
const INSERT_CHUNK: usize = 1000;

/// Outcome of a file-list change.
#[derive(Debug, PartialEq, Eq)]
pub enum FilesOutcome {
    /// Done; the peer now has this many files.
    Done(u64),
    /// No such peer.
    NoPeer,
    /// The change would leave the peer with this many files, over the cap;
    /// nothing was changed.
    OverCap(u64),
}

/// A file as stored.
#[derive(Debug, sqlx_macros::FromRow)]
pub(super) struct FileRow {
    name: FileName,
    size: i64,
    hash: ContentHash,
}

impl From<FileRow> for FileEntry {
    fn from(r: FileRow) -> Self {
        FileEntry {
            name: r.name,
            size: u64::try_from(r.size).unwrap_or(0),
            hash: r.hash,
        }
    }
}

/// One holder of a content: a file row joined with its online peer.
#[derive(Debug, sqlx_macros::FromRow)]
struct HolderRow {
    hash: ContentHash,
    name: FileName,
    size: i64,
    peer_id: PeerId,
    addr: String,
}

/// A hash read alone.
#[derive(Debug, sqlx_macros::FromRow)]
struct HashRow {
    hash: ContentHash,
}

/// Which files a change removes before it inserts.
#[derive(Debug, Clone, Copy)]
pub(super) enum Removal<'a> {
    /// None (a new peer).
    Nothing,
    /// Every file of the peer (a replacement).
    All,
    /// These names (and the names about to be inserted).
    Named(&'a [FileName]),
}

/// The one place file rows are written, inside the caller's transaction
/// and after the peer row is locked (or inserted): removes, inserts `add`,
/// and sets `file_count`, unless the peer would end up with more than `cap`
/// files. The caller commits only on [`FilesOutcome::Done`].
///
/// Rows are inserted in hash order, so the `files(hash, …)` index is walked
/// once front to back instead of at random, [`INSERT_CHUNK`] rows per
/// statement.
pub(super) async fn write_files<DB>(
    tx: &mut sqlx::Transaction<'_, DB>,
    sql: &Statements,
    peer_id: &PeerId,
    remove: Removal<'_>,
    add: &[FileEntry],
    cap: usize,
) -> Result<FilesOutcome, sqlx::Error>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> PeerId: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> FileName: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> ContentHash: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    match remove {
        Removal::Nothing => {}
        Removal::All => {
            sqlx::query::<DB>(fixed(&sql.delete_files))
                .bind(peer_id)
                .execute(&mut **tx)
                .await?;
        }
        Removal::Named(names) => {
            let names: Vec<&FileName> = names.iter().chain(add.iter().map(|f| &f.name)).collect();
            for chunk in names.chunks(IN_CHUNK) {
                let mut q =
                    sqlx::query::<DB>(built(sql.delete_files_named(chunk.len()))).bind(peer_id);
                for name in chunk {
                    q = q.bind(*name);
                }
                q.execute(&mut **tx).await?;
            }
        }
    }
    let mut sorted: Vec<&FileEntry> = add.iter().collect();
    sorted.sort_unstable_by_key(|f| f.hash);
    for chunk in sorted.chunks(INSERT_CHUNK) {
        let mut q = sqlx::query::<DB>(built(sql.insert_files(chunk.len())));
        for f in chunk {
            // Validated sizes are at most 2^53 - 1.
            let size = i64::try_from(f.size).unwrap_or(i64::MAX);
            q = q.bind(peer_id).bind(&f.name).bind(size).bind(f.hash);
        }
        q.execute(&mut **tx).await?;
    }
    let count: i64 = match remove {
        Removal::Nothing | Removal::All => i64::try_from(add.len()).unwrap_or(i64::MAX),
        Removal::Named(_) => {
            sqlx::query_scalar::<DB, i64>(fixed(&sql.count_files))
                .bind(peer_id)
                .fetch_one(&mut **tx)
                .await?
        }
    };
    let count_u = u64::try_from(count).unwrap_or(0);
    if count_u > cap as u64 {
        return Ok(FilesOutcome::OverCap(count_u));
    }
    sqlx::query::<DB>(fixed(&sql.set_file_count))
        .bind(count)
        .bind(peer_id)
        .execute(&mut **tx)
        .await?;
    Ok(FilesOutcome::Done(count_u))
}

impl Store {
    /// Replaces a peer's whole file list.
    pub async fn replace_files(
        &self,
        peer_id: &PeerId,
        files: &[FileEntry],
    ) -> Result<FilesOutcome, sqlx::Error> {
        self.change_files(peer_id, Removal::All, files, usize::MAX)
            .await
    }

    /// Removes files by name (and the names about to be re-added), adds
    /// files, and keeps the result within `cap` files, in one transaction.
    pub async fn patch_files(
        &self,
        peer_id: &PeerId,
        remove: &[FileName],
        add: &[FileEntry],
        cap: usize,
    ) -> Result<FilesOutcome, sqlx::Error> {
        self.change_files(peer_id, Removal::Named(remove), add, cap)
            .await
    }

    /// [`write_files`] in its own transaction, committed only when done.
    /// The transaction starts by locking the peer row: the existence check,
    /// and on SQLite the write lock taken first, so the transaction never
    /// has to upgrade a read lock.
    async fn change_files(
        &self,
        peer_id: &PeerId,
        remove: Removal<'_>,
        add: &[FileEntry],
        cap: usize,
    ) -> Result<FilesOutcome, sqlx::Error> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let found = sqlx::query(fixed(&self.sql.lock_peer))
                .bind(peer_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if found == 0 {
                return Ok(FilesOutcome::NoPeer);
            }
            let outcome = write_files(&mut tx, &self.sql, peer_id, remove, add, cap).await?;
            if matches!(outcome, FilesOutcome::Done(_)) {
                tx.commit().await?;
            } else {
                tx.rollback().await?;
            }
            Ok(outcome)
        })
    }

    /// Up to `limit` distinct hashes after `after` held by online peers, in
    /// hash order; with `search`, only those with a name that contains it,
    /// ignoring case.
    pub async fn hash_page(
        &self,
        min_seen: i64,
        after: Option<ContentHash>,
        search: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ContentHash>, sqlx::Error> {
        // No cursor: every hash sorts after the empty text.
        let after = after.map(|h| h.to_string()).unwrap_or_default();
        let rows: Vec<HashRow> = with_pool!(self, pool => {
            match search {
                None => {
                    sqlx::query_as(fixed(&self.sql.hash_page))
                        .bind(min_seen)
                        .bind(&after)
                        .bind(limit)
                        .fetch_all(pool)
                        .await?
                }
                Some(term) => {
                    sqlx::query_as(fixed(&self.sql.search_page))
                        .bind(min_seen)
                        .bind(&after)
                        .bind(like_contains(term))
                        .bind(limit)
                        .fetch_all(pool)
                        .await?
                }
            }
        });
        Ok(rows.into_iter().map(|r| r.hash).collect())
    }

    /// The content with this hash, if an online peer holds it (and, with
    /// `search`, one of its names contains that text, ignoring case), with at
    /// most `per_content` holders.
    pub async fn content(
        &self,
        hash: ContentHash,
        min_seen: i64,
        search: Option<&str>,
        per_content: i64,
    ) -> Result<Option<Content>, sqlx::Error> {
        let found = self.contents(&[hash], min_seen, per_content).await?;
        let term = search.map(str::to_lowercase);
        Ok(found.into_iter().next().filter(|c| {
            term.as_deref()
                .is_none_or(|t| c.names.iter().any(|n| n.to_lowercase().contains(t)))
        }))
    }

    /// The contents with these hashes, each with at most `per_content`
    /// holders (online peers only), in hash order. Hashes no online peer
    /// holds are left out.
    pub async fn contents(
        &self,
        hashes: &[ContentHash],
        min_seen: i64,
        per_content: i64,
    ) -> Result<Vec<Content>, sqlx::Error> {
        let mut out: Vec<Content> = Vec::with_capacity(hashes.len());
        for chunk in hashes.chunks(IN_CHUNK) {
            let rows: Vec<HolderRow> = with_pool!(self, pool => {
                let mut q = sqlx::query_as(built(self.sql.holders(chunk.len())));
                for h in chunk {
                    q = q.bind(h);
                }
                q.bind(min_seen).bind(per_content).fetch_all(pool).await?
            });
            for r in rows {
                if out.last().is_none_or(|c| c.hash != r.hash) {
                    out.push(Content {
                        hash: r.hash,
                        size: u64::try_from(r.size).unwrap_or(0),
                        names: Vec::new(),
                        peers: Vec::new(),
                    });
                }
                if let Some(c) = out.last_mut() {
                    if !c.names.contains(&r.name) {
                        c.names.push(r.name);
                    }
                    if c.peers.last().is_none_or(|p| p.peer_id != r.peer_id) {
                        c.peers.push(PeerRef {
                            peer_id: r.peer_id,
                            addr: r.addr,
                        });
                    }
                }
            }
        }
        for c in &mut out {
            c.names.sort();
        }
        Ok(out)
    }
}
