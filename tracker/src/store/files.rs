//! Files: changes to a peer's file list. Pages of contents and the search
//! by words are in `listing.rs`, the word rows in `words.rs`.
//!
//! Every write of file rows goes through [`write_files`], in hash order
//! and in multi-row statements, and writes or deletes the files' word rows
//! (`file_words`) in the same transaction: the word table has no foreign
//! key (a cascade would need an index by peer, which every registration
//! would pay for), so the tracker keeps it consistent itself, here and in
//! [`delete_word_rows`] for a leaving or swept peer.

use sbcftp_api::{ContentHash, FileEntry, FileName, PeerId};

use super::sql::Statements;
use super::{IN_CHUNK, Store, built, fixed, with_pool};

mod listing;
mod words;

pub use self::listing::HolderCaps;
pub(super) use self::words::delete_word_rows;
use self::words::{insert_word_rows, name_words};

/// Rows per multi-row `INSERT` (at most 6 parameters each; every backend
/// takes 6000).
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

/// A file's name and hash, to find its word rows.
#[derive(Debug, sqlx_macros::FromRow)]
pub(super) struct NameHashRow {
    name: FileName,
    hash: ContentHash,
}

/// Most files whose word rows a registration or replacement writes in its
/// own transaction; above it they are written after the response, in
/// transactions of this many files (see [`Store::spawn_indexer`]), so a
/// 10,000-file registration stays within a second on every backend.
pub(super) const INLINE_MAX: usize = 1000;

/// Which added files get their word rows in the change's transaction.
#[derive(Debug, Clone, Copy)]
pub(super) enum Indexing<'a> {
    /// All of them.
    Now,
    /// None: the peer is queued and the indexer writes them.
    Later,
    /// Those named up to this name: the peer is queued and the indexer has
    /// got this far (it writes the names after it).
    UpTo(&'a str),
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
/// and after the peer row is locked (or inserted): removes (file rows and
/// their word rows), inserts `add` with its word rows, and sets
/// `file_count`, unless the peer would end up with more than `cap` files.
/// The caller commits only on [`FilesOutcome::Done`].
///
/// File rows are inserted in hash order, so the `files(hash, …)` index is
/// walked once front to back instead of at random, and word rows in key
/// order, [`INSERT_CHUNK`] rows per statement.
pub(super) async fn write_files<DB>(
    tx: &mut sqlx::Transaction<'_, DB>,
    sql: &Statements,
    peer_id: &PeerId,
    remove: Removal<'_>,
    add: &[FileEntry],
    indexing: Indexing<'_>,
    cap: usize,
) -> Result<FilesOutcome, sqlx::Error>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> PeerId: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> FileName: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> ContentHash: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i16: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'r> NameHashRow: sqlx::FromRow<'r, DB::Row>,
    usize: sqlx::ColumnIndex<DB::Row>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    match remove {
        Removal::Nothing => {}
        Removal::All => {
            delete_word_rows(tx, sql, peer_id, None).await?;
            sqlx::query::<DB>(fixed(&sql.delete_files))
                .bind(peer_id)
                .execute(&mut **tx)
                .await?;
        }
        Removal::Named(names) => {
            let names: Vec<&FileName> = names.iter().chain(add.iter().map(|f| &f.name)).collect();
            delete_word_rows(tx, sql, peer_id, Some(&names)).await?;
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
    let mut sorted: Vec<(&FileEntry, String)> =
        add.iter().map(|f| (f, name_words(&f.name).1)).collect();
    sorted.sort_unstable_by_key(|(f, _)| f.hash);
    for chunk in sorted.chunks(INSERT_CHUNK) {
        let mut q = sqlx::query::<DB>(built(sql.insert_files(chunk.len())));
        for (f, column) in chunk {
            // Validated sizes are at most 2^53 - 1.
            let size = i64::try_from(f.size).unwrap_or(i64::MAX);
            q = q
                .bind(peer_id)
                .bind(&f.name)
                .bind(size)
                .bind(f.hash)
                .bind(column.clone());
        }
        q.execute(&mut **tx).await?;
    }
    let indexed: Vec<(&FileName, ContentHash)> = add
        .iter()
        .filter(|f| match indexing {
            Indexing::Now => true,
            Indexing::Later => false,
            Indexing::UpTo(last) => f.name.as_str() <= last,
        })
        .map(|f| (&f.name, f.hash))
        .collect();
    insert_word_rows(tx, sql, peer_id, &indexed).await?;
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
            // Where the indexer of this peer is, if it is queued.
            let queued: Option<String> = sqlx::query_scalar(fixed(&self.sql.queued_name))
                .bind(peer_id)
                .fetch_optional(&mut *tx)
                .await?;
            let later = matches!(remove, Removal::All) && add.len() > INLINE_MAX;
            let indexing = match (&remove, &queued) {
                (Removal::All, _) if later => Indexing::Later,
                (Removal::All, _) | (_, None) => Indexing::Now,
                (_, Some(last)) => Indexing::UpTo(last),
            };
            let outcome =
                write_files(&mut tx, &self.sql, peer_id, remove, add, indexing, cap).await?;
            if !matches!(outcome, FilesOutcome::Done(_)) {
                tx.rollback().await?;
                return Ok(outcome);
            }
            // A replacement starts the peer's queue row afresh, or drops it.
            if matches!(remove, Removal::All) && queued.is_some() {
                sqlx::query(fixed(&self.sql.unqueue_peer))
                    .bind(peer_id)
                    .execute(&mut *tx)
                    .await?;
            }
            if later {
                sqlx::query(fixed(&self.sql.queue_peer))
                    .bind(peer_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            if later {
                self.spawn_indexer(*peer_id);
            }
            Ok(outcome)
        })
    }

    /// Writes the word rows of a queued peer after the response, in a task
    /// of its own, one transaction of [`INLINE_MAX`] files at a time (so
    /// heartbeat flushes and other writes interleave), unless this process
    /// is doing so already. Until it is done, searches read the peer's
    /// remaining files directly ([`Store::hash_page`]), so their results
    /// stay exact. A replica that stops half-way leaves the queue row, and
    /// the next search on any replica resumes it; two indexers of one peer
    /// take turns on the peer's row lock and never write a chunk twice.
    pub(super) fn spawn_indexer(&self, peer_id: PeerId) {
        {
            let mut busy = self.indexing.lock().unwrap_or_else(|e| e.into_inner());
            if !busy.insert(peer_id) {
                return;
            }
        }
        let store = self.clone();
        tokio::spawn(async move {
            loop {
                match store.index_chunk(&peer_id).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        tracing::warn!(
                            peer_id = %peer_id, error = %e,
                            "writing search words failed; the next search resumes it"
                        );
                        break;
                    }
                }
            }
            let mut busy = store.indexing.lock().unwrap_or_else(|e| e.into_inner());
            busy.remove(&peer_id);
        });
    }

    /// One transaction of the indexer: the word rows of the next
    /// [`INLINE_MAX`] files of the peer by name. False when the peer is done
    /// (or gone).
    async fn index_chunk(&self, peer_id: &PeerId) -> Result<bool, sqlx::Error> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let found = sqlx::query(fixed(&self.sql.lock_peer))
                .bind(peer_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if found == 0 {
                return Ok(false);
            }
            let next: Option<String> = sqlx::query_scalar(fixed(&self.sql.queued_name))
                .bind(peer_id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(next) = next else {
                return Ok(false);
            };
            let rows: Vec<NameHashRow> = sqlx::query_as(fixed(&self.sql.index_chunk))
                .bind(peer_id)
                .bind(&next)
                .bind(INLINE_MAX as i64)
                .fetch_all(&mut *tx)
                .await?;
            let files: Vec<(&FileName, ContentHash)> =
                rows.iter().map(|r| (&r.name, r.hash)).collect();
            insert_word_rows(&mut tx, &self.sql, peer_id, &files).await?;
            let more = rows.len() == INLINE_MAX;
            match rows.last() {
                Some(last) if more => {
                    sqlx::query(fixed(&self.sql.set_queued_name))
                        .bind(&last.name)
                        .bind(peer_id)
                        .execute(&mut *tx)
                        .await?;
                }
                _ => {
                    sqlx::query(fixed(&self.sql.unqueue_peer))
                        .bind(peer_id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            Ok(more)
        })
    }
}
