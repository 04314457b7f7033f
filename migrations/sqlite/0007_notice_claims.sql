-- A notice claim belongs to one instance: it is marked `sending` only while still that
-- instance's claim, and rescued only when the instance's heartbeat is stale.
ALTER TABLE notices ADD COLUMN claimed_by TEXT;
