-- Collections workspace: API tokens (hashed), the audit log, idempotency keys of POSTs,
-- paused auto-debit, and who asked for a manual attempt.

CREATE TABLE api_tokens (
    id            BIGINT PRIMARY KEY,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL,
    -- SHA-256 of the token; the token itself is shown once and never stored.
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT,
    last_used_at  BIGINT
);

CREATE TABLE audit_log (
    id        INTEGER PRIMARY KEY,
    at        BIGINT NOT NULL,
    actor     TEXT NOT NULL,
    role      TEXT NOT NULL,
    action    TEXT NOT NULL,
    loan_id   TEXT,
    reason    TEXT,
    -- JSON with the action's parameters and result.
    detail    TEXT NOT NULL
);
CREATE INDEX audit_log_loan ON audit_log(loan_id, id);

CREATE TABLE idempotency_keys (
    actor         TEXT NOT NULL,
    key           TEXT NOT NULL,
    method        TEXT NOT NULL,
    path          TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    status        BIGINT,
    response      TEXT,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (actor, key)
);

ALTER TABLE loans ADD COLUMN paused_until BIGINT;
ALTER TABLE loans ADD COLUMN pause_reason TEXT;
ALTER TABLE attempts ADD COLUMN requested_by TEXT;
CREATE INDEX attempts_updated ON attempts(updated_at);
