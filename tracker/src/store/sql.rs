//! Every SQL statement the tracker runs, as text you can read and paste into
//! a database shell.
//!
//! Statements are written with `?` placeholders, which SQLite and
//! MySQL/MariaDB take as they are; for PostgreSQL the placeholders, and only
//! they, are renumbered to `$1, $2, …` once, when [`Statements`] is built at
//! start-up (and when a statement with a variable-length list is built). The
//! portable statements avoid everything that differs between the three: no
//! upserts, no `RETURNING`, no booleans or date types (times are BIGINT unix
//! milliseconds set by the tracker), and `LIKE` only over stored words, which
//! hold letters and digits alone, so no pattern needs an escape.
//!
//! Where a backend needs different SQL, each variant is its own constant
//! below, and [`Statements::for_backend`] is the one place that picks them.
//! The behaviour suite (`tests/api`) runs every one of them on its backend,
//! and `tests/api/store.rs` prepares all of them against each migrated schema.

use std::sync::Arc;

use super::Backend;

/// Cheapest round trip, for `/healthz`.
pub const PING: &str = "SELECT 1";

/// A new peer (its file_count is set when its files are written). Its
/// `reachable_checked_at` is the registration's check (so the periodic
/// re-check leaves it alone until it is due).
pub const INSERT_PEER: &str = "INSERT INTO peers \
     (peer_id, token_hash, addr, registered_at, last_seen, reachable_checked_at) \
     VALUES (?, ?, ?, ?, ?, ?)";

/// The stored token hash, last heartbeat and reachability of a peer.
pub const PEER_AUTH: &str = "SELECT token_hash, last_seen, reachable, unreachable_reason \
     FROM peers WHERE peer_id = ?";

/// Sets file_count, at the end of a file-list change.
pub const SET_FILE_COUNT: &str = "UPDATE peers SET file_count = ? WHERE peer_id = ?";

/// Locks the peer row without changing it: the existence check at the start
/// of a file-list change (on SQLite it also takes the write lock first).
pub const LOCK_PEER: &str = "UPDATE peers SET file_count = file_count WHERE peer_id = ?";

/// Counts a peer's files.
pub const COUNT_FILES: &str = "SELECT COUNT(*) FROM files WHERE peer_id = ?";

/// Removes every file of a peer.
pub const DELETE_FILES: &str = "DELETE FROM files WHERE peer_id = ?";

/// Removes a peer (its files go with it: ON DELETE CASCADE).
pub const DELETE_PEER: &str = "DELETE FROM peers WHERE peer_id = ?";

/// One online peer.
pub const GET_PEER: &str = "SELECT peer_id, addr, registered_at, last_seen, file_count, \
     reachable, reachable_checked_at, unreachable_reason FROM peers \
     WHERE peer_id = ? AND last_seen >= ?";

/// A page of a peer's files after a name (its primary key is `(peer_id, name)`).
pub const PEER_FILES: &str = "SELECT name, size, hash FROM files WHERE peer_id = ? AND name > ? \
     ORDER BY name LIMIT ?";

/// The peers registered from one address (a `LIKE` pattern of `addr`,
/// escape `!`) with their file counts, for the per-address quotas.
pub const PEERS_AT: &str = "SELECT peer_id, file_count FROM peers WHERE addr LIKE ? ESCAPE '!'";

/// A page of online peers after a cursor.
pub const LIST_PEERS: &str = "SELECT peer_id, addr, registered_at, last_seen, file_count, \
     reachable, reachable_checked_at, unreachable_reason FROM peers \
     WHERE last_seen >= ? AND peer_id > ? ORDER BY peer_id LIMIT ?";

/// Records a reachability check's result.
pub const SET_REACHABILITY: &str = "UPDATE peers \
     SET reachable = ?, reachable_checked_at = ?, unreachable_reason = ? WHERE peer_id = ?";

/// Online peers whose last reachability check is older than a cutoff,
/// oldest first.
pub const RECHECK_DUE: &str = "SELECT peer_id, addr, reachable_checked_at FROM peers \
     WHERE last_seen >= ? AND reachable_checked_at < ? \
     ORDER BY reachable_checked_at LIMIT ?";

/// Claims a peer's re-check: only the replica whose compare-and-set on the
/// old `reachable_checked_at` changes the row probes it.
pub const CLAIM_RECHECK: &str = "UPDATE peers SET reachable_checked_at = ? \
     WHERE peer_id = ? AND reachable_checked_at = ?";

/// Reachability checked (or claimed) since a time: how a replica learns
/// the results of checks another replica ran.
pub const CHECKED_SINCE: &str = "SELECT peer_id, reachable, reachable_checked_at, unreachable_reason \
     FROM peers WHERE reachable_checked_at >= ?";

/// A page of distinct hashes held by online peers, walking the
/// `files(hash, …)` index from the cursor. Liveness is a scalar subquery,
/// one primary-key probe per candidate row: as a join, SQLite and
/// PostgreSQL hash every peer per statement and MariaDB starts from `peers`
/// and sorts every file row (over 10 s a page at 1M rows).
pub const HASH_PAGE: &str = "SELECT f.hash FROM files f WHERE f.hash > ? \
     AND (SELECT p.last_seen FROM peers p WHERE p.peer_id = f.peer_id) >= ? \
     GROUP BY f.hash ORDER BY f.hash LIMIT ?";

/// Up to `?` rows of a word prefix in one bucket: the sample that picks the
/// rarest query word to walk.
pub const COUNT_WORD: &str = "SELECT COUNT(*) FROM (SELECT w.word FROM file_words w \
     WHERE w.bucket = ? AND w.word >= ? AND w.word <= ? LIMIT ?) t";

/// Names and hashes of a peer's files (to find their word rows).
pub const PEER_FILE_HASHES: &str = "SELECT name, hash FROM files WHERE peer_id = ?";

/// Queues a peer whose word rows are written after the response.
pub const QUEUE_PEER: &str = "INSERT INTO index_queue (peer_id, next_name) VALUES (?, '')";

/// Takes a peer off the indexing queue.
pub const UNQUEUE_PEER: &str = "DELETE FROM index_queue WHERE peer_id = ?";

/// How far the indexer got with a peer: its files named after this have
/// no word rows yet.
pub const QUEUED_NAME: &str = "SELECT next_name FROM index_queue WHERE peer_id = ?";

/// The indexer's progress.
pub const SET_QUEUED_NAME: &str = "UPDATE index_queue SET next_name = ? WHERE peer_id = ?";

/// The indexer's next chunk of a peer's files.
pub const INDEX_CHUNK: &str =
    "SELECT name, hash FROM files WHERE peer_id = ? AND name > ? ORDER BY name LIMIT ?";

/// Queued peers, for the searches that read their files directly.
pub const QUEUED_PEERS: &str =
    "SELECT peer_id, next_name FROM index_queue ORDER BY peer_id LIMIT ?";

/// Takes the sweep lease when it is free (or already ours).
pub const TAKE_LEASE: &str = "UPDATE sweep_lease SET holder = ?, until_ms = ? \
     WHERE id = 1 AND (until_ms <= ? OR holder = ?)";

/// Peers whose last heartbeat is older than the TTL.
pub const STALE_PEERS: &str =
    "SELECT peer_id FROM peers WHERE last_seen < ? ORDER BY last_seen LIMIT ?";

/// Online peers, for the gauge.
pub const COUNT_ONLINE: &str = "SELECT COUNT(*) FROM peers WHERE last_seen >= ?";

/// SQLite: copies the write-ahead log back into the database file without
/// blocking readers or writers.
pub const CHECKPOINT_SQLITE: &str = "PRAGMA wal_checkpoint(PASSIVE)";

/// The statements of one backend, ready to run.
#[derive(Debug)]
pub struct Statements {
    numbered: bool,
    /// [`PING`].
    pub ping: Arc<str>,
    /// [`INSERT_PEER`].
    pub insert_peer: Arc<str>,
    /// [`PEER_AUTH`].
    pub peer_auth: Arc<str>,
    /// [`SET_FILE_COUNT`].
    pub set_file_count: Arc<str>,
    /// [`LOCK_PEER`].
    pub lock_peer: Arc<str>,
    /// [`COUNT_FILES`].
    pub count_files: Arc<str>,
    /// [`DELETE_FILES`].
    pub delete_files: Arc<str>,
    /// [`DELETE_PEER`].
    pub delete_peer: Arc<str>,
    /// [`GET_PEER`].
    pub get_peer: Arc<str>,
    /// [`PEER_FILES`].
    pub peer_files: Arc<str>,
    /// [`LIST_PEERS`].
    pub list_peers: Arc<str>,
    /// [`PEERS_AT`].
    pub peers_at: Arc<str>,
    /// [`SET_REACHABILITY`].
    pub set_reachability: Arc<str>,
    /// [`RECHECK_DUE`].
    pub recheck_due: Arc<str>,
    /// [`CLAIM_RECHECK`].
    pub claim_recheck: Arc<str>,
    /// [`CHECKED_SINCE`].
    pub checked_since: Arc<str>,
    /// [`HASH_PAGE`].
    pub hash_page: Arc<str>,
    /// [`COUNT_WORD`].
    pub count_word: Arc<str>,
    /// [`PEER_FILE_HASHES`].
    pub peer_file_hashes: Arc<str>,
    /// [`QUEUE_PEER`].
    pub queue_peer: Arc<str>,
    /// [`UNQUEUE_PEER`].
    pub unqueue_peer: Arc<str>,
    /// [`QUEUED_NAME`].
    pub queued_name: Arc<str>,
    /// [`SET_QUEUED_NAME`].
    pub set_queued_name: Arc<str>,
    /// [`INDEX_CHUNK`].
    pub index_chunk: Arc<str>,
    /// [`QUEUED_PEERS`].
    pub queued_peers: Arc<str>,
    /// [`TAKE_LEASE`].
    pub take_lease: Arc<str>,
    /// [`STALE_PEERS`].
    pub stale_peers: Arc<str>,
    /// [`COUNT_ONLINE`].
    pub count_online: Arc<str>,
}

impl Statements {
    /// The statements of `backend`: the one place where a backend's own SQL
    /// is chosen.
    pub fn for_backend(backend: Backend) -> Self {
        let numbered = backend == Backend::Postgres;
        let r = |sql: &str| -> Arc<str> { placeholders_for(numbered, sql).into() };
        Statements {
            numbered,
            ping: r(PING),
            insert_peer: r(INSERT_PEER),
            peer_auth: r(PEER_AUTH),
            set_file_count: r(SET_FILE_COUNT),
            lock_peer: r(LOCK_PEER),
            count_files: r(COUNT_FILES),
            delete_files: r(DELETE_FILES),
            delete_peer: r(DELETE_PEER),
            get_peer: r(GET_PEER),
            peer_files: r(PEER_FILES),
            list_peers: r(LIST_PEERS),
            peers_at: r(PEERS_AT),
            set_reachability: r(SET_REACHABILITY),
            recheck_due: r(RECHECK_DUE),
            claim_recheck: r(CLAIM_RECHECK),
            checked_since: r(CHECKED_SINCE),
            hash_page: r(HASH_PAGE),
            count_word: r(COUNT_WORD),
            peer_file_hashes: r(PEER_FILE_HASHES),
            queue_peer: r(QUEUE_PEER),
            unqueue_peer: r(UNQUEUE_PEER),
            queued_name: r(QUEUED_NAME),
            set_queued_name: r(SET_QUEUED_NAME),
            index_chunk: r(INDEX_CHUNK),
            queued_peers: r(QUEUED_PEERS),
            take_lease: r(TAKE_LEASE),
            stale_peers: r(STALE_PEERS),
            count_online: r(COUNT_ONLINE),
        }
    }

    /// Every fixed statement, for the test that prepares them all.
    pub fn all(&self) -> [&Arc<str>; 28] {
        [
            &self.ping,
            &self.insert_peer,
            &self.peer_auth,
            &self.set_file_count,
            &self.lock_peer,
            &self.count_files,
            &self.delete_files,
            &self.delete_peer,
            &self.get_peer,
            &self.peer_files,
            &self.list_peers,
            &self.peers_at,
            &self.set_reachability,
            &self.recheck_due,
            &self.claim_recheck,
            &self.checked_since,
            &self.hash_page,
            &self.count_word,
            &self.peer_file_hashes,
            &self.queue_peer,
            &self.unqueue_peer,
            &self.queued_name,
            &self.set_queued_name,
            &self.index_chunk,
            &self.queued_peers,
            &self.take_lease,
            &self.stale_peers,
            &self.count_online,
        ]
    }

    /// `INSERT` of `n` file rows.
    pub fn insert_files(&self, n: usize) -> String {
        self.list(
            "INSERT INTO files (peer_id, name, size, hash, words) VALUES ",
            n,
            "(?, ?, ?, ?, ?)",
            "",
        )
    }

    /// `INSERT` of `n` word rows.
    pub fn insert_words(&self, n: usize) -> String {
        self.list(
            "INSERT INTO file_words (bucket, word, peer_id, name, hash, words) VALUES ",
            n,
            "(?, ?, ?, ?, ?, ?)",
            "",
        )
    }

    /// Names and hashes of `n` files of a peer (to find their word rows).
    pub fn file_hashes_named(&self, n: usize) -> String {
        self.list(
            "SELECT name, hash FROM files WHERE peer_id = ? AND name IN (",
            n,
            "?",
            ")",
        )
    }

    /// `DELETE` of a peer's word rows in one bucket, for `words` words and,
    /// with `names`, only those names (each (bucket, word, peer) is one
    /// primary-key range).
    pub fn delete_words(&self, words: usize, names: Option<usize>) -> String {
        let mut sql = String::from("DELETE FROM file_words WHERE bucket = ? AND word IN (");
        push_marks(&mut sql, words);
        sql.push_str(") AND peer_id = ?");
        if let Some(n) = names {
            sql.push_str(" AND name IN (");
            push_marks(&mut sql, n);
            sql.push(')');
        }
        placeholders_for(self.numbered, &sql)
    }

    /// A page of hashes among the files of one queued peer not yet in
    /// `file_words` (named after `?`), after a cursor, matching `words`
    /// `LIKE` patterns, online only, then min_seen and the limit.
    pub fn pending_page(&self, words: usize) -> String {
        let mut sql = String::from(
            "SELECT f.hash FROM files f WHERE f.peer_id = ? AND f.name > ? AND f.hash > ?",
        );
        for _ in 0..words {
            sql.push_str(" AND f.words LIKE ?");
        }
        sql.push_str(
            " AND (SELECT p.last_seen FROM peers p WHERE p.peer_id = f.peer_id) >= ? \
             GROUP BY f.hash ORDER BY f.hash LIMIT ?",
        );
        placeholders_for(self.numbered, &sql)
    }

    /// A page of hashes from the word rows of a prefix (`word >= ? AND word
    /// <= ?`) in `buckets` buckets after a cursor, with `others` more words
    /// tested by `words LIKE ?` on the same row, online holders only, then
    /// min_seen and the limit.
    pub fn word_page(&self, buckets: usize, others: usize) -> String {
        let mut sql = String::from("SELECT w.hash FROM file_words w WHERE ");
        if buckets == 1 {
            sql.push_str("w.bucket = ?");
        } else {
            sql.push_str("w.bucket IN (");
            push_marks(&mut sql, buckets);
            sql.push(')');
        }
        sql.push_str(" AND w.word >= ? AND w.word <= ? AND w.hash > ?");
        for _ in 0..others {
            sql.push_str(" AND w.words LIKE ?");
        }
        sql.push_str(
            " AND (SELECT p.last_seen FROM peers p WHERE p.peer_id = w.peer_id) >= ? \
             GROUP BY w.hash ORDER BY w.hash LIMIT ?",
        );
        placeholders_for(self.numbered, &sql)
    }

    /// `DELETE` of a peer's files by `n` names.
    pub fn delete_files_named(&self, n: usize) -> String {
        self.list(
            "DELETE FROM files WHERE peer_id = ? AND name IN (",
            n,
            "?",
            ")",
        )
    }

    /// Heartbeat flush: `last_seen` of `n` peers in one statement.
    pub fn touch_peers(&self, n: usize) -> String {
        self.list(
            "UPDATE peers SET last_seen = ? WHERE peer_id IN (",
            n,
            "?",
            ")",
        )
    }

    /// Which of `n` peers still exist.
    pub fn existing_peers(&self, n: usize) -> String {
        self.list("SELECT peer_id FROM peers WHERE peer_id IN (", n, "?", ")")
    }

    /// Sweep: deletes `n` peers if they are still stale (a heartbeat flushed
    /// since they were selected saves them).
    pub fn delete_stale(&self, n: usize) -> String {
        self.list(
            "DELETE FROM peers WHERE peer_id IN (",
            n,
            "?",
            ") AND last_seen < ?",
        )
    }

    /// The holders of `n` contents, grouped by (hash, size), each peer
    /// once per group with at most `?` of its names. Parameters: the peer-id
    /// pivot and the size modulus that rotate which holders and sizes come
    /// first, min_seen, the `n` hashes, names per holder, holders per group,
    /// groups per hash. Liveness and reachability are scalar subqueries (a
    /// primary-key probe per row) rather than a join, which would hash every
    /// peer. Within a group, peers the tracker could reach come first, then
    /// those not checked, then the unreachable ones, both in which holders
    /// make the cut and in the order they are listed.
    pub fn holders(&self, n: usize) -> String {
        self.list(
            "SELECT hash, size, peer_id, addr, name, reachable FROM ( \
               SELECT z.hash, z.size, z.peer_id, z.addr, z.name, z.pr, z.reachable, z.reach_rank, \
                 DENSE_RANK() OVER (PARTITION BY z.hash, z.size \
                   ORDER BY z.reach_rank, CASE WHEN z.peer_id >= ? THEN 0 ELSE 1 END, z.peer_id) AS rn, \
                 DENSE_RANK() OVER (PARTITION BY z.hash ORDER BY z.size % ?, z.size) AS gr \
               FROM ( \
                 SELECT x.hash, x.size, x.peer_id, x.addr, x.name, x.reachable, \
                   CASE WHEN x.reachable = 1 THEN 0 WHEN x.reachable IS NULL THEN 1 ELSE 2 END \
                     AS reach_rank, \
                   ROW_NUMBER() OVER (PARTITION BY x.hash, x.size, x.peer_id ORDER BY x.name) AS pr \
                 FROM (SELECT f.hash, f.name, f.size, f.peer_id, \
                         (SELECT p.addr FROM peers p WHERE p.peer_id = f.peer_id AND p.last_seen >= ?) AS addr, \
                         (SELECT p.reachable FROM peers p WHERE p.peer_id = f.peer_id) AS reachable \
                       FROM files f WHERE f.hash IN (",
            n,
            "?",
            ")) x WHERE x.addr IS NOT NULL \
               ) z WHERE z.pr <= ? \
             ) t WHERE t.rn <= ? AND t.gr <= ? ORDER BY hash, size, reach_rank, peer_id, name",
        )
    }

    /// `head`, `n` copies of `item` separated by commas, `tail`, with this
    /// backend's placeholders.
    fn list(&self, head: &str, n: usize, item: &str, tail: &str) -> String {
        let mut sql = String::with_capacity(head.len() + n * (item.len() + 2) + tail.len());
        sql.push_str(head);
        for i in 0..n {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(item);
        }
        sql.push_str(tail);
        placeholders_for(self.numbered, &sql)
    }
}

/// Appends `n` placeholders separated by commas.
fn push_marks(sql: &mut String, n: usize) {
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('?');
    }
}

/// `sql` with its `?` placeholders numbered (`$1, $2, …`) when `numbered`.
/// None of the statements has a `?` inside a string literal, so a plain scan
/// is enough.
fn placeholders_for(numbered: bool, sql: &str) -> String {
    if !numbered {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0u32;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_postgres_renumbers_and_nothing_else_changes() {
        let pg = Statements::for_backend(Backend::Postgres);
        assert_eq!(
            &*pg.take_lease,
            "UPDATE sweep_lease SET holder = $1, until_ms = $2 \
             WHERE id = 1 AND (until_ms <= $3 OR holder = $4)"
        );
        assert_eq!(
            pg.delete_files_named(2),
            "DELETE FROM files WHERE peer_id = $1 AND name IN ($2, $3)"
        );
        for backend in [Backend::Sqlite, Backend::MySql] {
            let s = Statements::for_backend(backend);
            assert_eq!(&*s.take_lease, TAKE_LEASE);
            assert_eq!(
                s.insert_files(2),
                "INSERT INTO files (peer_id, name, size, hash, words) \
                 VALUES (?, ?, ?, ?, ?), (?, ?, ?, ?, ?)"
            );
        }
        assert_eq!(
            Statements::for_backend(Backend::Postgres).delete_words(2, Some(1)),
            "DELETE FROM file_words WHERE bucket = $1 AND word IN ($2, $3) \
             AND peer_id = $4 AND name IN ($5)"
        );
    }
}
