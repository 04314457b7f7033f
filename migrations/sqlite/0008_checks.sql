-- Every status and kind column accepts only the values its enum in `domain::types` names
-- (the enums' FromStr/Display are the other side; a test keeps them in step).
-- SQLite adds a CHECK only by rebuilding the table: the old table is renamed away, the new
-- one made under the old name with the constraints, the rows copied (column order is kept),
-- the old one dropped, and the indexes made again. Foreign keys stay on (a migration runs in
-- a transaction, where they cannot be switched off), so the order matters: renaming `loans`
-- points installments' and mandates' REFERENCES at `loans_old`; both are rebuilt next,
-- referring to the new `loans`; only then is `loans_old`, referred to by nothing, dropped.

ALTER TABLE loans RENAME TO loans_old;
CREATE TABLE loans (
    id            TEXT PRIMARY KEY,
    borrower_id   TEXT NOT NULL REFERENCES borrowers(id),
    currency      TEXT NOT NULL,
    tz            TEXT NOT NULL,
    policy        TEXT NOT NULL,
    allow_early   BIGINT NOT NULL DEFAULT 1,
    status        TEXT NOT NULL DEFAULT 'active',
    ladder_pos    BIGINT NOT NULL DEFAULT 0,
    planned       BIGINT NOT NULL DEFAULT 0,
    content_hash  TEXT NOT NULL,
    created_at    BIGINT NOT NULL
, busy_owner TEXT, busy_until BIGINT, paused_until BIGINT, pause_reason TEXT, parked_at BIGINT, parked_reason TEXT,
    CHECK (status IN ('active', 'paid', 'collections', 'written_off'))
);
INSERT INTO loans SELECT * FROM loans_old;
DROP INDEX IF EXISTS loans_status;
CREATE INDEX loans_status ON loans(status);
DROP INDEX IF EXISTS loans_planned;
CREATE INDEX loans_planned ON loans(planned);
DROP INDEX IF EXISTS loans_busy;
CREATE INDEX loans_busy ON loans(busy_owner) WHERE busy_owner IS NOT NULL;
DROP INDEX IF EXISTS loans_parked;
CREATE INDEX loans_parked ON loans(parked_at) WHERE parked_at IS NOT NULL;

ALTER TABLE installments RENAME TO installments_old;
CREATE TABLE installments (
    loan_id          TEXT NOT NULL REFERENCES loans(id),
    seq              BIGINT NOT NULL,
    due_date         TEXT NOT NULL,
    principal        BIGINT NOT NULL,
    interest         BIGINT NOT NULL,
    fee              BIGINT NOT NULL,
    penalty          BIGINT NOT NULL DEFAULT 0,
    paid_principal   BIGINT NOT NULL DEFAULT 0,
    paid_interest    BIGINT NOT NULL DEFAULT 0,
    paid_fee         BIGINT NOT NULL DEFAULT 0,
    paid_penalty     BIGINT NOT NULL DEFAULT 0,
    penalty_through  TEXT,
    status           TEXT NOT NULL DEFAULT 'pending',
    attempts         BIGINT NOT NULL DEFAULT 0,
    overdue_planned  BIGINT NOT NULL DEFAULT 0,
    paid_at          BIGINT, wo_principal BIGINT NOT NULL DEFAULT 0, wo_interest BIGINT NOT NULL DEFAULT 0, wo_fee BIGINT NOT NULL DEFAULT 0, wo_penalty BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (loan_id, seq),
    CHECK (status IN ('pending', 'overdue', 'paid', 'written_off'))
);
INSERT INTO installments SELECT * FROM installments_old;
DROP TABLE installments_old;
DROP INDEX IF EXISTS installments_open;
CREATE INDEX installments_open ON installments(status, due_date);

ALTER TABLE actions RENAME TO actions_old;
CREATE TABLE actions (
    id            INTEGER PRIMARY KEY,
    loan_id       TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    kind          TEXT NOT NULL,
    slot          TEXT NOT NULL,
    due_at        BIGINT NOT NULL,
    status        TEXT NOT NULL DEFAULT 'pending',
    note          TEXT,
    lease_owner   TEXT,
    lease_until   BIGINT,
    done_at       BIGINT,
    UNIQUE (loan_id, seq, kind, slot),
    CHECK (kind IN ('notice', 'attempt')),
    CHECK (status IN ('pending', 'claimed', 'done', 'skipped', 'cancelled'))
);
INSERT INTO actions SELECT * FROM actions_old;
DROP TABLE actions_old;
DROP INDEX IF EXISTS actions_due;
CREATE INDEX actions_due ON actions(status, due_at);

ALTER TABLE attempts RENAME TO attempts_old;
CREATE TABLE attempts (
    id            BIGINT PRIMARY KEY,
    action_id     BIGINT,
    loan_id       TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    mandate_id    BIGINT NOT NULL,
    channel       TEXT NOT NULL,
    order_no      TEXT NOT NULL,
    kind          TEXT NOT NULL,
    ladder_step   BIGINT NOT NULL,
    amount        BIGINT NOT NULL,
    status        TEXT NOT NULL,
    code          TEXT,
    class         TEXT,
    channel_ref   TEXT,
    local_date    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    lease_until   BIGINT,
    queries       BIGINT NOT NULL DEFAULT 0,
    next_query_at BIGINT, lease_owner TEXT, submitted_by TEXT, requested_by TEXT,
    UNIQUE (channel, order_no),
    CHECK (kind IN ('early', 'due', 'overdue', 'payday', 'manual')),
    CHECK (status IN ('submitted', 'unknown', 'succeeded', 'failed')),
    CHECK (class IS NULL OR class IN ('soft', 'hard', 'unknown'))
);
INSERT INTO attempts SELECT * FROM attempts_old;
DROP TABLE attempts_old;
DROP INDEX IF EXISTS attempts_loan;
CREATE INDEX attempts_loan ON attempts(loan_id);
DROP INDEX IF EXISTS attempts_open;
CREATE INDEX attempts_open ON attempts(status, next_query_at);
DROP INDEX IF EXISTS attempts_mandate_day;
CREATE INDEX attempts_mandate_day ON attempts(mandate_id, local_date);
DROP INDEX IF EXISTS attempts_updated;
CREATE INDEX attempts_updated ON attempts(updated_at);

ALTER TABLE mandates RENAME TO mandates_old;
CREATE TABLE mandates (
    id               BIGINT PRIMARY KEY,
    loan_id          TEXT NOT NULL REFERENCES loans(id),
    priority         BIGINT NOT NULL,
    channel          TEXT NOT NULL,
    agreement        TEXT NOT NULL,
    account_masked   TEXT NOT NULL,
    per_debit_limit  BIGINT,
    daily_limit      BIGINT,
    status           TEXT NOT NULL DEFAULT 'active',
    status_code      TEXT,
    UNIQUE (loan_id, priority),
    CHECK (status IN ('active', 'invalid', 'revoked'))
);
INSERT INTO mandates SELECT * FROM mandates_old;
DROP TABLE mandates_old;

ALTER TABLE notices RENAME TO notices_old;
CREATE TABLE notices (
    id           INTEGER PRIMARY KEY,
    dedupe_key   TEXT NOT NULL UNIQUE,
    loan_id      TEXT NOT NULL,
    seq          BIGINT,
    borrower_id  TEXT NOT NULL,
    kind         TEXT NOT NULL,
    channel      TEXT NOT NULL,
    recipient    TEXT NOT NULL,
    tz           TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    send_after   BIGINT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'pending',
    sent_at      BIGINT,
    sent_local_date TEXT
, subject TEXT, provider_id TEXT, delivery_status TEXT, error TEXT, claimed_at BIGINT, claimed_by TEXT,
    CHECK (kind IN ('pre_due', 'overdue', 'paid', 'partial', 'failed', 'rebind')),
    CHECK (channel IN ('sms', 'email')),
    CHECK (status IN ('pending', 'claimed', 'sending', 'sent', 'failed'))
);
INSERT INTO notices SELECT * FROM notices_old;
DROP TABLE notices_old;
DROP INDEX IF EXISTS notices_pending;
CREATE INDEX notices_pending ON notices(status, send_after);
DROP INDEX IF EXISTS notices_borrower_day;
CREATE INDEX notices_borrower_day ON notices(borrower_id, sent_local_date);

ALTER TABLE recon_items RENAME TO recon_items_old;
CREATE TABLE recon_items (
    id            BIGINT PRIMARY KEY,
    channel       TEXT NOT NULL,
    recon_date    TEXT NOT NULL,
    order_no      TEXT NOT NULL,
    attempt_id    BIGINT,
    statement_id  BIGINT,
    line_no       BIGINT,
    outcome       TEXT NOT NULL,
    our_status    TEXT,
    our_amount    BIGINT,
    their_status  TEXT,
    their_amount  BIGINT,
    -- What the match fixed by itself: 'resolved_succeeded' or 'resolved_failed'.
    auto_fix      TEXT,
    case_status   TEXT,
    -- JSON: the attempt and statement line as seen when matched.
    evidence      TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    resolved_at   BIGINT,
    resolved_by   TEXT,
    resolution    TEXT,
    UNIQUE (channel, recon_date, order_no),
    CHECK (outcome IN ('matched', 'ours_only', 'channel_only', 'amount_differs', 'status_differs', 'unresolved')),
    CHECK (case_status IS NULL OR case_status IN ('open', 'resolved')),
    CHECK (auto_fix IS NULL OR auto_fix IN ('resolved_succeeded', 'resolved_failed'))
);
INSERT INTO recon_items SELECT * FROM recon_items_old;
DROP TABLE recon_items_old;
DROP INDEX IF EXISTS recon_items_case;
CREATE INDEX recon_items_case ON recon_items(case_status, recon_date);
DROP INDEX IF EXISTS recon_items_unresolved;
CREATE INDEX recon_items_unresolved ON recon_items(attempt_id) WHERE outcome = 'unresolved';

ALTER TABLE refunds RENAME TO refunds_old;
CREATE TABLE refunds (
    id            BIGINT PRIMARY KEY,
    attempt_id    BIGINT NOT NULL,
    loan_id       TEXT NOT NULL,
    -- 'overpayment' (money beyond what was owed) or 'erroneous' (reverses the allocation).
    kind          TEXT NOT NULL,
    amount        BIGINT NOT NULL,
    reason        TEXT NOT NULL,
    actor         TEXT NOT NULL,
    entry_id      BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    CHECK (kind IN ('overpayment', 'erroneous'))
);
INSERT INTO refunds SELECT * FROM refunds_old;
DROP TABLE refunds_old;
DROP INDEX IF EXISTS refunds_attempt;
CREATE INDEX refunds_attempt ON refunds(attempt_id);

ALTER TABLE write_offs RENAME TO write_offs_old;
CREATE TABLE write_offs (
    id            BIGINT PRIMARY KEY,
    loan_id       TEXT NOT NULL,
    amount        BIGINT NOT NULL,
    -- 'policy' (past the write-off point), 'admin', or 'residue' (below the threshold).
    kind          TEXT NOT NULL,
    reason        TEXT NOT NULL,
    actor         TEXT NOT NULL,
    -- NULL when no principal was left: interest, fee and penalty are never booked as
    -- receivable (cash basis), so writing them off moves no ledger balance.
    entry_id      BIGINT,
    created_at    BIGINT NOT NULL,
    CHECK (kind IN ('policy', 'admin', 'residue'))
);
INSERT INTO write_offs SELECT * FROM write_offs_old;
DROP TABLE write_offs_old;
DROP INDEX IF EXISTS write_offs_loan;
CREATE INDEX write_offs_loan ON write_offs(loan_id);

ALTER TABLE api_tokens RENAME TO api_tokens_old;
CREATE TABLE api_tokens (
    id            BIGINT PRIMARY KEY,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL,
    -- SHA-256 of the token; the token itself is shown once and never stored.
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT,
    last_used_at  BIGINT,
    CHECK (role IN ('viewer', 'collections', 'admin'))
);
INSERT INTO api_tokens SELECT * FROM api_tokens_old;
DROP TABLE api_tokens_old;
DROP INDEX IF EXISTS api_tokens_name;
CREATE UNIQUE INDEX api_tokens_name ON api_tokens(name);

DROP TABLE loans_old;
