-- Reachability: whether the tracker could open a connection to the peer's
-- advertised address and get a valid answer in the peer protocol. Keep in
-- step with ../mysql and ../postgres.
--   reachable             1 yes, 0 no, NULL not checked (yet, or the check is off)
--   reachable_checked_at  unix milliseconds of the last check (or claim of one), 0 never
--   unreachable_reason    why not, a short phrase such as "connection refused"
ALTER TABLE peers ADD COLUMN reachable INTEGER;
ALTER TABLE peers ADD COLUMN reachable_checked_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE peers ADD COLUMN unreachable_reason TEXT;
-- The periodic re-check walks peers by the age of their last check.
CREATE INDEX peers_reachable_checked_at ON peers (reachable_checked_at);
