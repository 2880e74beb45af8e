-- Search by words (issue 10). Each file row keeps its folded words
-- (' concert budget 2014 mkv': NFKC + lowercase, runs of letters and digits,
-- folded by the tracker), and file_words has one row per (file, distinct
-- word), keyed (bucket, word, peer_id, name) where bucket is the first hex
-- digit of the hash: a word's rows are read bucket by bucket, which is hash
-- order. The tracker writes and deletes word rows with their file rows (no
-- foreign key: a cascade would need an index by peer, which costs every
-- registration). The words need the tracker's folding, so the file lists
-- are dropped; peers re-register when a heartbeat answers 404.
DELETE FROM peers;
ALTER TABLE files ADD COLUMN words TEXT NOT NULL DEFAULT '';
DROP INDEX files_hash;
-- Listings group holders by (hash, size).
CREATE INDEX files_hash ON files (hash, size, peer_id, name);
CREATE TABLE file_words (
    bucket  INTEGER NOT NULL,
    word    TEXT    NOT NULL,
    peer_id TEXT    NOT NULL,
    name    TEXT    NOT NULL,
    hash    TEXT    NOT NULL,
    words   TEXT    NOT NULL,
    PRIMARY KEY (bucket, word, peer_id, name)
) WITHOUT ROWID;
-- Peers whose word rows are still being written after a registration of
-- more than 1,000 files: their files with a name after next_name are not in
-- file_words yet, and searches read them from files directly.
CREATE TABLE index_queue (
    peer_id   TEXT NOT NULL PRIMARY KEY REFERENCES peers (peer_id) ON DELETE CASCADE,
    next_name TEXT NOT NULL
);
