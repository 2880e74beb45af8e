-- Search by words (issue 10); see ../sqlite/0003_search_words.sql for the
-- design. Words compare bytewise ("C"), as on the other backends.
DELETE FROM peers;
ALTER TABLE files ADD COLUMN words TEXT COLLATE "C" NOT NULL DEFAULT '';
-- Names in byte order, as on the other backends: the indexer walks names
-- in order and the tracker compares them with next_name.
ALTER TABLE files ALTER COLUMN name TYPE TEXT COLLATE "C";
DROP INDEX files_hash;
CREATE INDEX files_hash ON files (hash, size, peer_id, name);
CREATE TABLE file_words (
    bucket  SMALLINT NOT NULL,
    word    TEXT COLLATE "C" NOT NULL,
    peer_id TEXT COLLATE "C" NOT NULL,
    name    TEXT COLLATE "C" NOT NULL,
    hash    TEXT COLLATE "C" NOT NULL,
    words   TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (bucket, word, peer_id, name) INCLUDE (hash, words)
);
-- Deferred indexing (see ../sqlite/0003_search_words.sql).
CREATE TABLE index_queue (
    peer_id   TEXT COLLATE "C" NOT NULL PRIMARY KEY REFERENCES peers (peer_id) ON DELETE CASCADE,
    next_name TEXT COLLATE "C" NOT NULL
);
