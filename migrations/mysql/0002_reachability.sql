-- Reachability: whether the tracker could open a connection to the peer's
-- advertised address and get a valid answer in the peer protocol. Keep in
-- step with ../sqlite and ../postgres.
--   reachable             1 yes, 0 no, NULL not checked (yet, or the check is off)
--   reachable_checked_at  unix milliseconds of the last check (or claim of one), 0 never
--   unreachable_reason    why not, a short phrase such as "connection refused"
-- BIGINT, not a boolean type: every backend reads it as the same integer.
ALTER TABLE peers
    ADD COLUMN reachable BIGINT NULL,
    ADD COLUMN reachable_checked_at BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN unreachable_reason VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    ADD INDEX peers_reachable_checked_at (reachable_checked_at);
