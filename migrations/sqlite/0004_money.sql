-- Money you can audit: channel statements and their reconciliation, settlements, refunds and
-- reversals, write-offs. Amounts are BIGINT minor units, instants epoch ms UTC, dates TEXT.

-- One imported statement file (or fetched statement) of one channel and day. The same
-- content imported twice is the same row (content_hash), so re-imports change nothing.
CREATE TABLE statements (
    id            BIGINT PRIMARY KEY,
    channel       TEXT NOT NULL,
    stmt_date     TEXT NOT NULL,
    content_hash  TEXT NOT NULL,
    line_count    BIGINT NOT NULL,
    source        TEXT NOT NULL,
    imported_at   BIGINT NOT NULL,
    UNIQUE (channel, stmt_date, content_hash)
);

CREATE TABLE statement_lines (
    statement_id  BIGINT NOT NULL REFERENCES statements(id),
    line_no       BIGINT NOT NULL,
    channel       TEXT NOT NULL,
    order_no      TEXT NOT NULL,
    channel_ref   TEXT NOT NULL,
    amount        BIGINT NOT NULL,
    fee           BIGINT NOT NULL DEFAULT 0,
    status        TEXT NOT NULL,
    at            BIGINT NOT NULL,
    PRIMARY KEY (statement_id, line_no)
);
CREATE INDEX statement_lines_order ON statement_lines(channel, order_no);

-- The outcome of matching one order number of one channel-day: matched, ours_only,
-- channel_only, amount_differs, status_differs. Anything but `matched` that was not fixed
-- automatically is a case for a person (case_status open → resolved).
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
    UNIQUE (channel, recon_date, order_no)
);
CREATE INDEX recon_items_case ON recon_items(case_status, recon_date);

-- Clearing → bank per channel and statement day, by the channel's settlement rule.
CREATE TABLE settlements (
    id            BIGINT PRIMARY KEY,
    channel       TEXT NOT NULL,
    stmt_date     TEXT NOT NULL,
    settle_date   TEXT NOT NULL,
    gross         BIGINT NOT NULL,
    fees          BIGINT NOT NULL,
    net           BIGINT NOT NULL,
    -- NULL for a day with nothing to settle: the row marks the day done, no entry is posted.
    entry_id      BIGINT,
    created_at    BIGINT NOT NULL,
    UNIQUE (channel, stmt_date)
);

-- Refunds and reversals of a successful attempt (N+1: each is its own journal entry, linked
-- to the original repayment entry). The sum per attempt never exceeds the attempt's amount.
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
    created_at    BIGINT NOT NULL
);
CREATE INDEX refunds_attempt ON refunds(attempt_id);

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
    created_at    BIGINT NOT NULL
);
CREATE INDEX write_offs_loan ON write_offs(loan_id);

-- Components written off, per installment (outstanding = due − paid − written off).
ALTER TABLE installments ADD COLUMN wo_principal BIGINT NOT NULL DEFAULT 0;
ALTER TABLE installments ADD COLUMN wo_interest BIGINT NOT NULL DEFAULT 0;
ALTER TABLE installments ADD COLUMN wo_fee BIGINT NOT NULL DEFAULT 0;
ALTER TABLE installments ADD COLUMN wo_penalty BIGINT NOT NULL DEFAULT 0;

-- A refund, reversal or correction entry points at the entry it corrects.
ALTER TABLE journal_entries ADD COLUMN corrects_entry BIGINT;
CREATE INDEX journal_entries_corrects ON journal_entries(corrects_entry);
CREATE INDEX journal_entries_kind ON journal_entries(kind, posted_at);

