-- SBCFTP tracker schema, MySQL/MariaDB. Keep in step with ../sqlite and ../postgres.
-- Times are unix milliseconds (BIGINT) set by the tracker. Ids and hashes are
-- ASCII with binary collation; names are utf8mb4_bin (case-sensitive, like
-- the other backends).
CREATE TABLE peers (
    peer_id       VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    token_hash    VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    addr          VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    registered_at BIGINT NOT NULL,
    last_seen     BIGINT NOT NULL,
    file_count    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (peer_id),
    INDEX peers_last_seen (last_seen)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE files (
    peer_id VARCHAR(16)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    name    VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    size    BIGINT NOT NULL,
    hash    VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    PRIMARY KEY (peer_id, name),
    INDEX files_hash (hash, peer_id, name),
    CONSTRAINT files_peer FOREIGN KEY (peer_id) REFERENCES peers (peer_id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE sweep_lease (
    id       INT NOT NULL,
    holder   VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    until_ms BIGINT NOT NULL,
    PRIMARY KEY (id)
) ENGINE = InnoDB;
INSERT INTO sweep_lease (id, holder, until_ms) VALUES (1, '', 0);
