//! The word rows (`file_words`) of a peer's files: which words a name is
//! indexed under, and writing or deleting those rows inside the caller's
//! transaction. Kept apart from `files.rs` because the word table has no
//! foreign key: every path that changes file rows calls these to keep it
//! consistent.

use std::collections::{BTreeMap, BTreeSet};

use sbcftp_api::search::{self, MAX_WORD_CHARS};
use sbcftp_api::{ContentHash, FileName, PeerId};

use super::super::sql::Statements;
use super::super::{IN_CHUNK, built, fixed};
use super::{INSERT_CHUNK, NameHashRow};

/// Most stored bytes of a name's words; words past it are not indexed (only
/// names whose NFKC form expands many times over reach it).
const MAX_WORDS_BYTES: usize = 1000;

/// The bucket of a hash: its first hex digit.
pub(super) fn bucket(hash: &ContentHash) -> i16 {
    i16::from(hash.as_bytes()[0] >> 4)
}

/// The indexed words of a name and their stored form (see
/// [`sbcftp_api::search`]).
pub(super) fn name_words(name: &str) -> (Vec<String>, String) {
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
pub(super) fn prefix_range(w: &str) -> (String, String) {
    let pad = MAX_WORD_CHARS.saturating_sub(w.chars().count());
    let mut upper = String::with_capacity(w.len() + 4 * pad);
    upper.push_str(w);
    upper.extend(std::iter::repeat_n(char::MAX, pad));
    (w.to_owned(), upper)
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
pub(in crate::store) async fn delete_word_rows<DB>(
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
