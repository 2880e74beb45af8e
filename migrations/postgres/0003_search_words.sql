-- Search by words (issue 10); see ../sqlite/0003_search_words.sql for the
-- design. Words compare bytewise ("C"), as on the other backends.
DELETE FROM peers;
ALTER TABLE files ADD COLUMN words TEXT COLLATE "C" NOT NULL DEFAULT '';
DROP INDEX files_hash;
CREATE INDEX files_hash ON files (hash, size, peer_id, name);
CREATE TABLE file_words (
    bucket  SMALLINT NOT NULL,
    word    TEXT COLLATE "C" NOT NULL,
    peer_id TEXT COLLATE "C" NOT NULL,
    name    TEXT NOT NULL,
    hash    TEXT COLLATE "C" NOT NULL,
    words   TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (bucket, word, peer_id, name) INCLUDE (hash, words)
);
