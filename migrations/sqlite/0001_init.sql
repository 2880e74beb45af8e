-- SBCFTP tracker schema, SQLite. Keep in step with ../mysql and ../postgres.
-- Times are unix milliseconds (INTEGER) set by the tracker.
CREATE TABLE peers (
    peer_id       TEXT    NOT NULL PRIMARY KEY,
    token_hash    TEXT    NOT NULL,
    addr          TEXT    NOT NULL,
    registered_at INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    file_count    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX peers_last_seen ON peers (last_seen);

CREATE TABLE files (
    peer_id TEXT    NOT NULL REFERENCES peers (peer_id) ON DELETE CASCADE,
    name    TEXT    NOT NULL,
    size    INTEGER NOT NULL,
    hash    TEXT    NOT NULL,
    PRIMARY KEY (peer_id, name)
);
-- Listing and search walk this index in hash order; it covers the join
-- column and the name, so a search reads only the index.
CREATE INDEX files_hash ON files (hash, peer_id, name);

-- One row: which replica sweeps, and until when.
CREATE TABLE sweep_lease (
    id       INTEGER NOT NULL PRIMARY KEY,
    holder   TEXT    NOT NULL,
    until_ms INTEGER NOT NULL
);
INSERT INTO sweep_lease (id, holder, until_ms) VALUES (1, '', 0);
