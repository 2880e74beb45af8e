-- Reachability: whether the tracker could open a connection to the peer's
-- advertised address and get a valid answer in the peer protocol. Keep in
-- step with ../sqlite and ../mysql.
--   reachable             1 yes, 0 no, NULL not checked (yet, or the check is off)
--   reachable_checked_at  unix milliseconds of the last check (or claim of one), 0 never
--   unreachable_reason    why not, a short phrase such as "connection refused"
-- BIGINT, not BOOLEAN: every backend reads it as the same integer.
ALTER TABLE peers ADD COLUMN reachable BIGINT;
ALTER TABLE peers ADD COLUMN reachable_checked_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE peers ADD COLUMN unreachable_reason TEXT;
CREATE INDEX peers_reachable_checked_at ON peers (reachable_checked_at);
