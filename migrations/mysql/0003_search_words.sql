-- Search by words (issue 10); see ../sqlite/0003_search_words.sql for the
-- design. Names and words are utf8mb4_nopad_bin: code-point order (as
-- SQLite BINARY and PostgreSQL "C") and NO PAD, so names that differ only
-- by trailing spaces are different names (utf8mb4_bin pads, and made them a
-- duplicate key).
DELETE FROM peers;
ALTER TABLE files
    MODIFY name VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
    ADD COLUMN words VARCHAR(2048) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL DEFAULT '',
    DROP INDEX files_hash,
    ADD INDEX files_hash (hash, size, peer_id, name);
CREATE TABLE file_words (
    bucket  TINYINT      NOT NULL,
    word    VARCHAR(32)  CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
    peer_id VARCHAR(16)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    name    VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
    hash    VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    words   VARCHAR(2048) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
    PRIMARY KEY (bucket, word, peer_id, name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;
-- Deferred indexing (see ../sqlite/0003_search_words.sql).
CREATE TABLE index_queue (
    peer_id   VARCHAR(16)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    next_name VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
    PRIMARY KEY (peer_id),
    CONSTRAINT index_queue_peer FOREIGN KEY (peer_id) REFERENCES peers (peer_id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;
