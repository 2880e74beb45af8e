//! Every SQL statement the tracker runs, as text you can read and paste into
//! a database shell.
//!
//! Statements are written with `?` placeholders, which SQLite and
//! MySQL/MariaDB take as they are; for PostgreSQL the placeholders, and only
//! they, are renumbered to `$1, $2, …` once, when [`Statements`] is built at
//! start-up (and when a statement with a variable-length list is built). The
//! portable statements avoid everything that differs between the three: no
//! upserts, no `RETURNING`, no booleans or date types (times are BIGINT unix
//! milliseconds set by the tracker), and `LIKE … ESCAPE '!'` rather than a
//! backslash, which MySQL would read as a string escape.
//!
//! Where a backend needs different SQL, each variant is its own constant
//! below, and [`Statements::for_backend`] is the one place that picks them.
//! The behaviour suite (`tests/api`) runs every one of them on its backend,
//! and `tests/api/store.rs` prepares all of them against each migrated schema.

use std::sync::Arc;

use super::Backend;

/// Cheapest round trip, for `/healthz`.
pub const PING: &str = "SELECT 1";

/// A new peer (its file_count is set when its files are written).
pub const INSERT_PEER: &str = "INSERT INTO peers (peer_id, token_hash, addr, registered_at, last_seen) \
     VALUES (?, ?, ?, ?, ?)";

/// The stored token hash and last heartbeat of a peer.
pub const PEER_AUTH: &str = "SELECT token_hash, last_seen FROM peers WHERE peer_id = ?";

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
pub const GET_PEER: &str = "SELECT peer_id, addr, registered_at, last_seen, file_count FROM peers \
     WHERE peer_id = ? AND last_seen >= ?";

/// A peer's files.
pub const PEER_FILES: &str = "SELECT name, size, hash FROM files WHERE peer_id = ? ORDER BY name";

/// A page of online peers after a cursor.
pub const LIST_PEERS: &str = "SELECT peer_id, addr, registered_at, last_seen, file_count FROM peers \
     WHERE last_seen >= ? AND peer_id > ? ORDER BY peer_id LIMIT ?";

/// A page of distinct hashes held by online peers: SQLite and PostgreSQL
/// walk the `files(hash, …)` index from the cursor.
pub const HASH_PAGE: &str = "SELECT DISTINCT f.hash FROM files f JOIN peers p ON p.peer_id = f.peer_id \
     WHERE p.last_seen >= ? AND f.hash > ? ORDER BY f.hash LIMIT ?";

/// The same on MySQL/MariaDB, which must be told to walk `files` in hash
/// order and look each holder up in `peers`. Left to itself MariaDB starts
/// from `peers`, builds a temporary table of every file row and sorts it
/// (over 10 s a page at 1M rows); `STRAIGHT_JOIN` with `GROUP BY` instead of
/// `DISTINCT` answers the same page in about 55 ms (BENCHMARKS.md).
pub const HASH_PAGE_MYSQL: &str = "SELECT f.hash FROM files f STRAIGHT_JOIN peers p ON p.peer_id = f.peer_id \
     WHERE p.last_seen >= ? AND f.hash > ? GROUP BY f.hash ORDER BY f.hash LIMIT ?";

/// A page of hashes with a name matching a `LIKE` pattern of lowercase text,
/// PostgreSQL: `LOWER(name)` makes it case-insensitive.
pub const SEARCH_PAGE: &str = "SELECT DISTINCT f.hash FROM files f JOIN peers p ON p.peer_id = f.peer_id \
     WHERE p.last_seen >= ? AND f.hash > ? AND LOWER(f.name) LIKE ? ESCAPE '!' \
     ORDER BY f.hash LIMIT ?";

/// The same on SQLite, whose `LIKE` already ignores ASCII case (and whose
/// `LOWER` folds only ASCII): without `LOWER` a scan costs half as much.
pub const SEARCH_PAGE_SQLITE: &str = "SELECT DISTINCT f.hash FROM files f JOIN peers p ON p.peer_id = f.peer_id \
     WHERE p.last_seen >= ? AND f.hash > ? AND f.name LIKE ? ESCAPE '!' \
     ORDER BY f.hash LIMIT ?";

/// The same on MySQL/MariaDB: the join order of [`HASH_PAGE_MYSQL`], and
/// `LOWER` because the names' `utf8mb4_bin` collation is case-sensitive.
pub const SEARCH_PAGE_MYSQL: &str = "SELECT f.hash FROM files f STRAIGHT_JOIN peers p ON p.peer_id = f.peer_id \
     WHERE p.last_seen >= ? AND f.hash > ? AND LOWER(f.name) LIKE ? ESCAPE '!' \
     GROUP BY f.hash ORDER BY f.hash LIMIT ?";

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
    /// [`HASH_PAGE`] or its backend's variant.
    pub hash_page: Arc<str>,
    /// [`SEARCH_PAGE`] or its backend's variant.
    pub search_page: Arc<str>,
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
        let (hash_page, search_page) = match backend {
            Backend::Sqlite => (HASH_PAGE, SEARCH_PAGE_SQLITE),
            Backend::MySql => (HASH_PAGE_MYSQL, SEARCH_PAGE_MYSQL),
            Backend::Postgres => (HASH_PAGE, SEARCH_PAGE),
        };
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
            hash_page: r(hash_page),
            search_page: r(search_page),
            take_lease: r(TAKE_LEASE),
            stale_peers: r(STALE_PEERS),
            count_online: r(COUNT_ONLINE),
        }
    }

    /// Every fixed statement, for the test that prepares them all.
    pub fn all(&self) -> [&Arc<str>; 16] {
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
            &self.hash_page,
            &self.search_page,
            &self.take_lease,
            &self.stale_peers,
            &self.count_online,
        ]
    }

    /// `INSERT` of `n` file rows.
    pub fn insert_files(&self, n: usize) -> String {
        self.list(
            "INSERT INTO files (peer_id, name, size, hash) VALUES ",
            n,
            "(?, ?, ?, ?)",
            "",
        )
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

    /// The holders of `n` contents: at most `?` rows per hash, online peers
    /// only.
    pub fn holders(&self, n: usize) -> String {
        self.list(
            "SELECT hash, name, size, peer_id, addr FROM ( \
               SELECT f.hash, f.name, f.size, p.peer_id, p.addr, \
                      ROW_NUMBER() OVER (PARTITION BY f.hash ORDER BY p.peer_id, f.name) AS rn \
               FROM files f JOIN peers p ON p.peer_id = f.peer_id \
               WHERE f.hash IN (",
            n,
            "?",
            ") AND p.last_seen >= ? \
             ) t WHERE rn <= ? ORDER BY hash, peer_id, name",
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

/// A `LIKE` pattern matching names that contain `term`, ignoring case (the
/// statements compare it with lowercase names), with `!` as the escape
/// character.
pub fn like_contains(term: &str) -> String {
    let mut p = String::with_capacity(term.len() + 2);
    p.push('%');
    for c in term.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '!') {
            p.push('!');
        }
        p.push(c);
    }
    p.push('%');
    p
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
                "INSERT INTO files (peer_id, name, size, hash) VALUES (?, ?, ?, ?), (?, ?, ?, ?)"
            );
        }
        assert_eq!(
            &*Statements::for_backend(Backend::MySql).hash_page,
            HASH_PAGE_MYSQL
        );
        assert_eq!(
            &*Statements::for_backend(Backend::Sqlite).search_page,
            SEARCH_PAGE_SQLITE
        );
    }

    #[test]
    fn escapes_like() {
        assert_eq!(like_contains("A_b%c!"), "%a!_b!%c!!%");
    }
}
