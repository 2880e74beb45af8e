-- SBCFTP tracker schema, PostgreSQL. Keep in step with ../sqlite and ../mysql.
-- Times are unix milliseconds (BIGINT) set by the tracker. Ids and hashes use
-- the "C" collation so that cursors compare bytewise on every server.
CREATE TABLE peers (
    peer_id       TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    token_hash    TEXT   NOT NULL,
    addr          TEXT   NOT NULL,
    registered_at BIGINT NOT NULL,
    last_seen     BIGINT NOT NULL,
    file_count    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX peers_last_seen ON peers (last_seen);

CREATE TABLE files (
    peer_id TEXT COLLATE "C" NOT NULL REFERENCES peers (peer_id) ON DELETE CASCADE,
    name    TEXT   NOT NULL,
    size    BIGINT NOT NULL,
    hash    TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (peer_id, name)
);
CREATE INDEX files_hash ON files (hash, peer_id, name);

CREATE TABLE sweep_lease (
    id       INTEGER NOT NULL PRIMARY KEY,
    holder   TEXT    NOT NULL,
    until_ms BIGINT  NOT NULL
);
INSERT INTO sweep_lease (id, holder, until_ms) VALUES (1, '', 0);
