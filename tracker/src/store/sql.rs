//! SQL text, written once for every backend.
//!
//! Every statement is written with `?` placeholders, which SQLite and
//! MySQL/MariaDB take as they are; for PostgreSQL [`Dialect::render`] rewrites
//! them to `$1, $2, …` once, when the [`Queries`] are built at start-up (and
//! for the few statements whose `IN (…)` list length varies, when they are
//! built). The statements avoid everything that differs between the three:
//! no upserts, no `RETURNING`, no booleans or date types (times are BIGINT
//! unix milliseconds set by the tracker), and `LIKE … ESCAPE '!'` rather than
//! a backslash, which MySQL would read as a string escape.

use std::sync::Arc;

/// How placeholders are written for one backend.
#[derive(Debug, Clone, Copy)]
pub struct Dialect {
    /// PostgreSQL numbers its placeholders.
    pub numbered: bool,
    /// SQLite's `LIKE` already ignores ASCII case (and its `LOWER` folds only
    /// ASCII), so `LOWER(name) LIKE p` is `name LIKE p` there, at half the
    /// cost of a scan.
    pub like_ignores_case: bool,
    /// MySQL/MariaDB: the page-of-hashes queries must walk `files` in hash
    /// order and look each holder up in `peers`. Left to itself MariaDB starts
    /// from `peers`, builds a temporary table of every file row and sorts it
    /// (over 10 s a page at 1M rows); `STRAIGHT_JOIN` with `GROUP BY` instead
    /// of `DISTINCT` answers the same page in about 55 ms (BENCHMARKS.md).
    pub files_first_join: bool,
}

/// The start of both page-of-hashes statements, rewritten for MySQL.
const HASH_PAGE_HEAD: &str = "SELECT DISTINCT f.hash FROM files f JOIN peers p";

impl Dialect {
    /// `sql` with its `?` placeholders in this backend's form. None of our SQL
    /// has a `?` inside a string literal, so a plain scan is enough.
    pub fn render(&self, sql: &str) -> String {
        let folded;
        let sql = if self.like_ignores_case {
            folded = sql.replace("LOWER(f.name) LIKE", "f.name LIKE");
            folded.as_str()
        } else {
            sql
        };
        let joined;
        let sql = if self.files_first_join && sql.starts_with(HASH_PAGE_HEAD) {
            joined = sql
                .replacen(
                    HASH_PAGE_HEAD,
                    "SELECT f.hash FROM files f STRAIGHT_JOIN peers p",
                    1,
                )
                .replacen(" ORDER BY f.hash", " GROUP BY f.hash ORDER BY f.hash", 1);
            joined.as_str()
        } else {
            sql
        };
        if !self.numbered {
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
}

/// `?, ?, ?` with `n` placeholders (for `IN (…)`), or `(?, ?, ?, ?), (…)` rows.
pub fn placeholders(n: usize, per_row: usize) -> String {
    let row = if per_row == 1 {
        "?".to_owned()
    } else {
        format!("({})", vec!["?"; per_row].join(", "))
    };
    vec![row; n].join(", ")
}

macro_rules! queries {
    ($( $(#[$doc:meta])* $name:ident = $sql:expr; )*) => {
        /// The fixed statements, rendered for one backend at start-up.
        #[derive(Debug)]
        pub struct Queries {
            $( $(#[$doc])* pub $name: Arc<str>, )*
        }

        impl Queries {
            /// Renders every statement for `dialect`.
            pub fn new(dialect: Dialect) -> Self {
                Self { $( $name: dialect.render($sql).into(), )* }
            }
        }
    };
}

queries! {
    /// Cheapest round trip, for `/healthz`.
    ping = "SELECT 1";
    /// A new peer (file_count set by the caller).
    insert_peer = "INSERT INTO peers (peer_id, token_hash, addr, registered_at, last_seen, file_count) \
                   VALUES (?, ?, ?, ?, ?, ?)";
    /// The stored token hash and last heartbeat of a peer.
    peer_auth = "SELECT token_hash, last_seen FROM peers WHERE peer_id = ?";
    /// Sets file_count; also the existence check and row lock at the start of
    /// every file-list change (and on SQLite takes the write lock first, so the
    /// transaction never has to upgrade a read lock).
    set_file_count = "UPDATE peers SET file_count = ? WHERE peer_id = ?";
    /// Locks the peer row without changing it.
    lock_peer = "UPDATE peers SET file_count = file_count WHERE peer_id = ?";
    /// Counts a peer's files.
    count_files = "SELECT COUNT(*) FROM files WHERE peer_id = ?";
    /// Removes every file of a peer.
    delete_files = "DELETE FROM files WHERE peer_id = ?";
    /// Removes a peer (its files go with it: ON DELETE CASCADE).
    delete_peer = "DELETE FROM peers WHERE peer_id = ?";
    /// One online peer.
    get_peer = "SELECT peer_id, addr, registered_at, last_seen, file_count FROM peers \
                WHERE peer_id = ? AND last_seen >= ?";
    /// A peer's files.
    peer_files = "SELECT name, size, hash FROM files WHERE peer_id = ? ORDER BY name";
    /// A page of online peers after a cursor.
    list_peers = "SELECT peer_id, addr, registered_at, last_seen, file_count FROM peers \
                  WHERE last_seen >= ? AND peer_id > ? ORDER BY peer_id LIMIT ?";
    /// A page of distinct hashes held by online peers.
    hash_page = "SELECT DISTINCT f.hash FROM files f JOIN peers p ON p.peer_id = f.peer_id \
                 WHERE p.last_seen >= ? AND f.hash > ? ORDER BY f.hash LIMIT ?";
    /// The same, with a name filter.
    hash_page_q = "SELECT DISTINCT f.hash FROM files f JOIN peers p ON p.peer_id = f.peer_id \
                   WHERE p.last_seen >= ? AND f.hash > ? AND LOWER(f.name) LIKE ? ESCAPE '!' \
                   ORDER BY f.hash LIMIT ?";
    /// Takes the sweep lease when it is free (or already ours).
    take_lease = "UPDATE sweep_lease SET holder = ?, until_ms = ? \
                  WHERE id = 1 AND (until_ms <= ? OR holder = ?)";
    /// Peers whose last heartbeat is older than the TTL.
    stale_peers = "SELECT peer_id FROM peers WHERE last_seen < ? ORDER BY last_seen LIMIT ?";
    /// Online peers, for the gauge.
    count_online = "SELECT COUNT(*) FROM peers WHERE last_seen >= ?";
}

/// `INSERT` of `n` file rows.
pub fn insert_files(n: usize) -> String {
    format!(
        "INSERT INTO files (peer_id, name, size, hash) VALUES {}",
        placeholders(n, 4)
    )
}

/// `DELETE` of a peer's files by name.
pub fn delete_files_named(n: usize) -> String {
    format!(
        "DELETE FROM files WHERE peer_id = ? AND name IN ({})",
        placeholders(n, 1)
    )
}

/// Heartbeat flush: one statement for many peers.
pub fn touch_peers(n: usize) -> String {
    format!(
        "UPDATE peers SET last_seen = ? WHERE peer_id IN ({})",
        placeholders(n, 1)
    )
}

/// Which of these peers still exist.
pub fn existing_peers(n: usize) -> String {
    format!(
        "SELECT peer_id FROM peers WHERE peer_id IN ({})",
        placeholders(n, 1)
    )
}

/// Sweep: deletes these peers if they are still stale (a heartbeat flushed
/// since they were selected saves them).
pub fn delete_stale(n: usize) -> String {
    format!(
        "DELETE FROM peers WHERE peer_id IN ({}) AND last_seen < ?",
        placeholders(n, 1)
    )
}

/// The holders of some contents: at most `?` rows per hash, online peers only.
pub fn contents(n: usize) -> String {
    format!(
        "SELECT hash, name, size, peer_id, addr FROM ( \
           SELECT f.hash, f.name, f.size, p.peer_id, p.addr, \
                  ROW_NUMBER() OVER (PARTITION BY f.hash ORDER BY p.peer_id, f.name) AS rn \
           FROM files f JOIN peers p ON p.peer_id = f.peer_id \
           WHERE f.hash IN ({}) AND p.last_seen >= ? \
         ) t WHERE rn <= ? ORDER BY hash, peer_id, name",
        placeholders(n, 1)
    )
}

/// A `LIKE` pattern matching names that contain `needle`, case-insensitively
/// (the column side is `LOWER(name)`), with `!` as the escape character.
pub fn like_contains(needle: &str) -> String {
    let mut p = String::with_capacity(needle.len() + 2);
    p.push('%');
    for c in needle.to_lowercase().chars() {
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
    fn renders_pg_placeholders() {
        let d = Dialect {
            numbered: true,
            like_ignores_case: false,
            files_first_join: false,
        };
        assert_eq!(
            d.render("a = ? AND b IN (?, ?)"),
            "a = $1 AND b IN ($2, $3)"
        );
        let d = Dialect {
            numbered: false,
            like_ignores_case: true,
            files_first_join: false,
        };
        assert_eq!(d.render("a = ?"), "a = ?");
        assert_eq!(
            d.render("WHERE LOWER(f.name) LIKE ?"),
            "WHERE f.name LIKE ?"
        );
        let d = Dialect {
            numbered: false,
            like_ignores_case: false,
            files_first_join: true,
        };
        assert_eq!(
            d.render(
                "SELECT DISTINCT f.hash FROM files f JOIN peers p ON p.peer_id = f.peer_id \
                 WHERE f.hash > ? ORDER BY f.hash LIMIT ?"
            ),
            "SELECT f.hash FROM files f STRAIGHT_JOIN peers p ON p.peer_id = f.peer_id \
             WHERE f.hash > ? GROUP BY f.hash ORDER BY f.hash LIMIT ?"
        );
        assert_eq!(placeholders(2, 4), "(?, ?, ?, ?), (?, ?, ?, ?)");
        assert_eq!(placeholders(3, 1), "?, ?, ?");
    }

    #[test]
    fn escapes_like() {
        assert_eq!(like_contains("A_b%c!"), "%a!_b!%c!!%");
    }
}
