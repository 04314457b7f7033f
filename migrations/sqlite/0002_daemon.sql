-- Daemon instances (heartbeats decide when another instance's claims may be rescued),
-- attempt ownership, and channel callbacks as received.

CREATE TABLE instances (
    id            TEXT PRIMARY KEY,
    host          TEXT NOT NULL,
    pid           BIGINT NOT NULL,
    started_at    BIGINT NOT NULL,
    heartbeat_at  BIGINT NOT NULL,
    last_tick_at  BIGINT,
    stopped_at    BIGINT
);

ALTER TABLE attempts ADD COLUMN lease_owner TEXT;
ALTER TABLE attempts ADD COLUMN submitted_by TEXT;

CREATE TABLE channel_callbacks (
    id           INTEGER PRIMARY KEY,
    channel      TEXT NOT NULL,
    order_no     TEXT NOT NULL,
    body         TEXT NOT NULL,
    received_at  BIGINT NOT NULL,
    effect       TEXT NOT NULL
);
CREATE INDEX channel_callbacks_order ON channel_callbacks(channel, order_no);

-- Notices: subject for email, provider's id and delivery status, last error.
ALTER TABLE notices ADD COLUMN subject TEXT;
ALTER TABLE notices ADD COLUMN provider_id TEXT;
ALTER TABLE notices ADD COLUMN delivery_status TEXT;
ALTER TABLE notices ADD COLUMN error TEXT;
ALTER TABLE notices ADD COLUMN claimed_at BIGINT;

-- A loan being pursued by an instance: others leave it alone until the lease runs out.
ALTER TABLE loans ADD COLUMN busy_owner TEXT;
ALTER TABLE loans ADD COLUMN busy_until BIGINT;
