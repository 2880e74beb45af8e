//! Files: changes to a peer's file list, pages of contents (one entry per
//! distinct (hash, size)) and the search by words.
//!
//! Every write of file rows goes through [`write_files`], in hash order
//! and in multi-row statements, and writes or deletes the files' word rows
//! (`file_words`) in the same transaction: the word table has no foreign
//! key (a cascade would need an index by peer, which every registration
//! would pay for), so the tracker keeps it consistent itself, here and in
//! [`delete_word_rows`] for a leaving or swept peer.
//!
//! A page of contents is two steps: the page of distinct hashes, then the
//! holders of just those hashes. Without a search the page walks the
//! `files(hash, …)` index from the cursor. With one it walks the rarest
//! query word's prefix range in `file_words`, whose key starts with the
//! hash's first hex digit (the *bucket*): bucket order is hash order, so a
//! page reads a few buckets, and the other words are tested on the same
//! row with `words LIKE '% w%'` (words hold only letters and digits, so
//! nothing needs escaping).

use std::collections::{BTreeMap, BTreeSet};

use sbcftp_api::search::{self, MAX_WORD_CHARS};
use sbcftp_api::{Content, ContentHash, FileEntry, FileName, PeerId, PeerRef};

use super::sql::Statements;
use super::{IN_CHUNK, Store, built, fixed, with_pool};

/// Rows per multi-row `INSERT` (at most 6 parameters each; every backend
/// takes 6000).
const INSERT_CHUNK: usize = 1000;

/// Rows of a word read per bucket to pick the rarest query word.
const SAMPLE: i64 = 2000;

/// Most queued peers whose not-yet-indexed files a search reads directly;
/// beyond them (more than this many peers registering over 1,000 files at
/// once), a file is found by words once its peer's words are written.
const PENDING_SCAN: i64 = 4;

/// Buckets: the first hex digit of a hash.
const BUCKETS: i16 = 16;

/// Most stored bytes of a name's words; words past it are not indexed (only
/// names whose NFKC form expands many times over reach it).
const MAX_WORDS_BYTES: usize = 1000;

/// The bucket of a hash: its first hex digit.
fn bucket(hash: &ContentHash) -> i16 {
    i16::from(hash.as_bytes()[0] >> 4)
}

/// The indexed words of a name and their stored form (see
/// [`sbcftp_api::search`]).
fn name_words(name: &str) -> (Vec<String>, String) {
    let mut words = search::words(name);
    let mut bytes = 0;
    let keep = words
        .iter()
        .take_while(|w| {
            bytes += w.len() + 1;
            bytes <= MAX_WORDS_BYTES
        })
        .count();
    words.truncate(keep);
    let column = search::words_column(&words);
    (words, column)
}

/// The range `word >= lower AND word <= upper` of the words that start with
/// `w`: stored words have at most [`MAX_WORD_CHARS`] characters, so `w`
/// followed by the largest code point up to that length is above all of
/// them (code-point order is the byte order of every backend's collation).
fn prefix_range(w: &str) -> (String, String) {
    let pad = MAX_WORD_CHARS.saturating_sub(w.chars().count());
    let mut upper = String::with_capacity(w.len() + 4 * pad);
    upper.push_str(w);
    upper.extend(std::iter::repeat_n(char::MAX, pad));
    (w.to_owned(), upper)
}

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

/// One holder of a content: a file row with its online peer's address.
#[derive(Debug, sqlx_macros::FromRow)]
struct HolderRow {
    hash: ContentHash,
    size: i64,
    peer_id: PeerId,
    addr: String,
    name: FileName,
    reachable: Option<i64>,
}

/// A file's name and hash, to find its word rows.
#[derive(Debug, sqlx_macros::FromRow)]
pub(super) struct NameHashRow {
    name: FileName,
    hash: ContentHash,
}

/// A queued peer and how far its indexer got.
#[derive(Debug, sqlx_macros::FromRow)]
struct QueuedRow {
    peer_id: PeerId,
    next_name: String,
}

/// A hash read alone.
#[derive(Debug, sqlx_macros::FromRow)]
struct HashRow {
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

/// Inserts the word rows of these files of a peer, in primary-key order
/// (bucket, word, name), [`INSERT_CHUNK`] rows per statement.
pub(super) async fn insert_word_rows<DB>(
    tx: &mut sqlx::Transaction<'_, DB>,
    sql: &Statements,
    peer_id: &PeerId,
    files: &[(&FileName, ContentHash)],
) -> Result<(), sqlx::Error>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> PeerId: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> FileName: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> ContentHash: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i16: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    let words: Vec<(Vec<String>, String)> = files.iter().map(|(n, _)| name_words(n)).collect();
    let mut rows: Vec<(i16, &String, &FileName, ContentHash, &String)> = files
        .iter()
        .zip(&words)
        .flat_map(|((name, hash), (words, column))| {
            words
                .iter()
                .map(move |w| (bucket(hash), w, *name, *hash, column))
        })
        .collect();
    rows.sort_unstable_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
    for chunk in rows.chunks(INSERT_CHUNK) {
        let mut q = sqlx::query::<DB>(built(sql.insert_words(chunk.len())));
        for (b, w, name, hash, column) in chunk {
            q = q
                .bind(*b)
                .bind((*w).clone())
                .bind(peer_id)
                .bind(*name)
                .bind(*hash)
                .bind((*column).clone());
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Deletes the word rows of a peer's files inside the caller's
/// transaction: of all its files (`names` is `None`), or of those names.
/// Each file's words come from its name, its bucket from its hash; every
/// (bucket, word, peer) is one primary-key range, so this deletes exactly
/// those rows without an index by peer.
pub(super) async fn delete_word_rows<DB>(
    tx: &mut sqlx::Transaction<'_, DB>,
    sql: &Statements,
    peer_id: &PeerId,
    names: Option<&[&FileName]>,
) -> Result<(), sqlx::Error>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> PeerId: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> FileName: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i16: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> NameHashRow: sqlx::FromRow<'r, DB::Row>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    let mut files: Vec<NameHashRow> = Vec::new();
    match names {
        None => {
            files = sqlx::query_as::<DB, NameHashRow>(fixed(&sql.peer_file_hashes))
                .bind(peer_id)
                .fetch_all(&mut **tx)
                .await?;
        }
        Some(names) => {
            for chunk in names.chunks(IN_CHUNK) {
                let mut q =
                    sqlx::query_as::<DB, NameHashRow>(built(sql.file_hashes_named(chunk.len())))
                        .bind(peer_id);
                for name in chunk {
                    q = q.bind(*name);
                }
                files.extend(q.fetch_all(&mut **tx).await?);
            }
        }
    }
    // bucket -> (words, names) of the files in it.
    let mut by_bucket: BTreeMap<i16, (BTreeSet<String>, Vec<&FileName>)> = BTreeMap::new();
    for f in &files {
        let entry = by_bucket.entry(bucket(&f.hash)).or_default();
        entry.0.extend(name_words(&f.name).0);
        entry.1.push(&f.name);
    }
    for (b, (words, in_bucket)) in by_bucket {
        let words: Vec<String> = words.into_iter().collect();
        // A whole peer: every row of these (bucket, word, peer) ranges.
        let name_chunks: Vec<&[&FileName]> = match names {
            None => vec![&[]],
            Some(_) => in_bucket.chunks(IN_CHUNK).collect(),
        };
        for name_chunk in name_chunks {
            for word_chunk in words.chunks(IN_CHUNK) {
                let by_name = names.is_some().then_some(name_chunk.len());
                let mut q =
                    sqlx::query::<DB>(built(sql.delete_words(word_chunk.len(), by_name))).bind(b);
                for w in word_chunk {
                    q = q.bind(w.clone());
                }
                q = q.bind(peer_id);
                if by_name.is_some() {
                    for name in name_chunk {
                        q = q.bind(*name);
                    }
                }
                q.execute(&mut **tx).await?;
            }
        }
    }
    Ok(())
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

    /// Up to `limit` distinct hashes after `after` held by online peers, in
    /// hash order; with `search` (query words from
    /// [`search::query_words`]), only those with a name that has, for every
    /// query word, a word starting with it.
    pub async fn hash_page(
        &self,
        min_seen: i64,
        after: Option<ContentHash>,
        search: Option<&[String]>,
        limit: i64,
    ) -> Result<Vec<ContentHash>, sqlx::Error> {
        // No cursor: every hash sorts after the empty text.
        let first_bucket = after.as_ref().map_or(0, bucket);
        let after = after.map(|h| h.to_string()).unwrap_or_default();
        let Some(words) = search.filter(|w| !w.is_empty()) else {
            let rows: Vec<HashRow> = with_pool!(self, pool => {
                sqlx::query_as(fixed(&self.sql.hash_page))
                    .bind(&after)
                    .bind(min_seen)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?
            });
            return Ok(rows.into_iter().map(|r| r.hash).collect());
        };
        // Queued peers first: whatever their indexer writes from now on is
        // either in the word rows the walk reads or after the name read
        // here, so no file falls between the two.
        let queued: Vec<QueuedRow> = with_pool!(self, pool => {
            sqlx::query_as(fixed(&self.sql.queued_peers))
                .bind(PENDING_SCAN)
                .fetch_all(pool)
                .await?
        });
        let ranges: Vec<(String, String)> = words.iter().map(|w| prefix_range(w)).collect();
        // The driver: the word with the fewest rows in the first bucket
        // (ties: the longest), sampled up to SAMPLE rows each.
        let mut driver = 0;
        if words.len() > 1 {
            let mut best: Option<(i64, usize)> = None;
            for (i, (lower, upper)) in ranges.iter().enumerate() {
                let n: i64 = with_pool!(self, pool => {
                    sqlx::query_scalar(fixed(&self.sql.count_word))
                        .bind(first_bucket)
                        .bind(lower)
                        .bind(upper)
                        .bind(SAMPLE)
                        .fetch_one(pool)
                        .await?
                });
                let len = words[i].chars().count();
                if best.is_none_or(|(bn, blen)| n < bn || (n == bn && len > blen)) {
                    best = Some((n, len));
                    driver = i;
                }
            }
        }
        let (lower, upper) = &ranges[driver];
        let patterns: Vec<String> = words
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != driver)
            .map(|(_, w)| format!("% {w}%"))
            .collect();
        // Walk the buckets from the cursor's: one at first, then as many as
        // the matches seen so far say the rest of the page needs (all that
        // are left when none matched: a rare word).
        let mut out: Vec<ContentHash> = Vec::new();
        let mut next = first_bucket;
        let mut read = 0i64;
        while out.len() < usize::try_from(limit).unwrap_or(0) && next < BUCKETS {
            let left = BUCKETS - next;
            let need = limit - out.len() as i64;
            let take = if read == 0 {
                1
            } else if out.is_empty() {
                left
            } else {
                let per_bucket = out.len() as f64 / read as f64;
                ((1.2 * need as f64 / per_bucket).ceil() as i16).clamp(1, left)
            };
            let buckets: Vec<i16> = (next..next + take).collect();
            let rows: Vec<HashRow> = with_pool!(self, pool => {
                let mut q = sqlx::query_as(built(
                    self.sql.word_page(buckets.len(), patterns.len()),
                ));
                for b in &buckets {
                    q = q.bind(*b);
                }
                q = q.bind(lower).bind(upper).bind(&after);
                for p in &patterns {
                    q = q.bind(p);
                }
                q.bind(min_seen).bind(need).fetch_all(pool).await?
            });
            out.extend(rows.into_iter().map(|r| r.hash));
            read += i64::from(take);
            next += take;
        }
        // Files of queued peers that had no word rows when the walk began,
        // read directly (a primary-key range of each peer) and merged in
        // hash order.
        if queued.is_empty() {
            return Ok(out);
        }
        let all: Vec<String> = words.iter().map(|w| format!("% {w}%")).collect();
        for q in &queued {
            // Resumes a peer whose indexer stopped (on any replica).
            self.spawn_indexer(q.peer_id);
            let rows: Vec<HashRow> = with_pool!(self, pool => {
                let mut stmt = sqlx::query_as(built(self.sql.pending_page(all.len())))
                    .bind(q.peer_id)
                    .bind(&q.next_name)
                    .bind(&after);
                for p in &all {
                    stmt = stmt.bind(p);
                }
                stmt.bind(min_seen).bind(limit).fetch_all(pool).await?
            });
            out.extend(rows.into_iter().map(|r| r.hash));
        }
        out.sort_unstable();
        out.dedup();
        out.truncate(usize::try_from(limit).unwrap_or(0));
        Ok(out)
    }

    /// The contents with this hash (one per size claimed for it) that an
    /// online peer holds and, with `search`, that have a name matching
    /// every query word.
    pub async fn content(
        &self,
        hash: ContentHash,
        min_seen: i64,
        search: Option<&[String]>,
        caps: &HolderCaps,
    ) -> Result<Vec<Content>, sqlx::Error> {
        let found = self.contents(&[hash], min_seen, caps).await?;
        Ok(found
            .into_iter()
            .filter(|c| search.is_none_or(|q| c.names.iter().any(|n| search::matches(n, q))))
            .collect())
    }

    /// The contents with these hashes, in hash order: one entry per (hash,
    /// size) that online peers claim, at most `caps.sizes` sizes per hash,
    /// each listing every holder peer once, at most `caps.holders` of them,
    /// and at most `caps.names` distinct names. Which holders and sizes
    /// make the cut rotates at random from one request to the next, so
    /// nobody can flood a content to pin the same few. Hashes no online
    /// peer holds are left out.
    pub async fn contents(
        &self,
        hashes: &[ContentHash],
        min_seen: i64,
        caps: &HolderCaps,
    ) -> Result<Vec<Content>, sqlx::Error> {
        let pivot = format!("{:016x}", rand::random::<u64>());
        let modulus: i64 = rand::random_range(1_000..1_000_000);
        let mut out: Vec<Content> = Vec::with_capacity(hashes.len());
        for chunk in hashes.chunks(IN_CHUNK) {
            let rows: Vec<HolderRow> = with_pool!(self, pool => {
                let mut q = sqlx::query_as(built(self.sql.holders(chunk.len())))
                    .bind(&pivot)
                    .bind(modulus)
                    .bind(min_seen);
                for h in chunk {
                    q = q.bind(h);
                }
                q.bind(caps.names_per_holder)
                    .bind(caps.holders)
                    .bind(caps.sizes)
                    .fetch_all(pool)
                    .await?
            });
            for r in rows {
                let size = u64::try_from(r.size).unwrap_or(0);
                if out
                    .last()
                    .is_none_or(|c| c.hash != r.hash || c.size != size)
                {
                    out.push(Content {
                        hash: r.hash,
                        size,
                        names: Vec::new(),
                        peers: Vec::new(),
                    });
                }
                if let Some(c) = out.last_mut() {
                    if c.names.len() < caps.names && !c.names.contains(&r.name) {
                        c.names.push(r.name);
                    }
                    if c.peers.last().is_none_or(|p| p.peer_id != r.peer_id) {
                        c.peers.push(PeerRef {
                            peer_id: r.peer_id,
                            addr: r.addr,
                            reachable: r.reachable.map(|v| v == 1),
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

/// How much of a content a listing shows.
#[derive(Debug, Clone)]
pub struct HolderCaps {
    /// Holder peers per (hash, size).
    pub holders: i64,
    /// Names read per holder.
    pub names_per_holder: i64,
    /// Distinct names shown per (hash, size).
    pub names: usize,
    /// Sizes (entries) per hash.
    pub sizes: i64,
}
