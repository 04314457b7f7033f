-- repayd core schema (SQLite). Amounts are BIGINT minor units (hundredths), instants are
-- BIGINT epoch milliseconds UTC, calendar dates are TEXT 'YYYY-MM-DD' in the loan's zone.

CREATE TABLE borrowers (
    id      TEXT PRIMARY KEY,
    name    TEXT NOT NULL,
    phone   TEXT NOT NULL,
    email   TEXT NOT NULL,
    payday  BIGINT
);

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
);
CREATE INDEX loans_status ON loans(status);
CREATE INDEX loans_planned ON loans(planned);

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
    UNIQUE (loan_id, priority)
);

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
    paid_at          BIGINT,
    PRIMARY KEY (loan_id, seq)
);
CREATE INDEX installments_open ON installments(status, due_date);

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
    UNIQUE (loan_id, seq, kind, slot)
);
CREATE INDEX actions_due ON actions(status, due_at);

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
    next_query_at BIGINT,
    UNIQUE (channel, order_no)
);
CREATE INDEX attempts_loan ON attempts(loan_id);
CREATE INDEX attempts_open ON attempts(status, next_query_at);
CREATE INDEX attempts_mandate_day ON attempts(mandate_id, local_date);

CREATE TABLE counters (
    name      TEXT PRIMARY KEY,
    next_val  BIGINT NOT NULL
);

CREATE TABLE accounts (
    code    TEXT PRIMARY KEY,
    parent  TEXT,
    name    TEXT NOT NULL,
    kind    TEXT NOT NULL
);

CREATE TABLE journal_entries (
    id          BIGINT PRIMARY KEY,
    kind        TEXT NOT NULL,
    loan_id     TEXT,
    attempt_id  BIGINT UNIQUE,
    posted_at   BIGINT NOT NULL,
    memo        TEXT NOT NULL
);
CREATE INDEX journal_entries_loan ON journal_entries(loan_id);

CREATE TABLE journal_lines (
    entry_id   BIGINT NOT NULL REFERENCES journal_entries(id),
    line_no    BIGINT NOT NULL,
    account    TEXT NOT NULL REFERENCES accounts(code),
    loan_id    TEXT,
    seq        BIGINT,
    component  TEXT,
    debit      BIGINT NOT NULL,
    credit     BIGINT NOT NULL,
    PRIMARY KEY (entry_id, line_no),
    CHECK (debit >= 0 AND credit >= 0 AND (debit = 0 OR credit = 0))
);
CREATE INDEX journal_lines_loan ON journal_lines(loan_id);
CREATE INDEX journal_lines_account ON journal_lines(account);

-- The ledger is append-only: corrections are new entries.
CREATE TRIGGER journal_entries_no_update BEFORE UPDATE ON journal_entries
BEGIN SELECT RAISE(ABORT, 'journal is append-only'); END;
CREATE TRIGGER journal_entries_no_delete BEFORE DELETE ON journal_entries
BEGIN SELECT RAISE(ABORT, 'journal is append-only'); END;
CREATE TRIGGER journal_lines_no_update BEFORE UPDATE ON journal_lines
BEGIN SELECT RAISE(ABORT, 'journal is append-only'); END;
CREATE TRIGGER journal_lines_no_delete BEFORE DELETE ON journal_lines
BEGIN SELECT RAISE(ABORT, 'journal is append-only'); END;

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
);
CREATE INDEX notices_pending ON notices(status, send_after);
CREATE INDEX notices_borrower_day ON notices(borrower_id, sent_local_date);

CREATE TABLE runs (
    id           INTEGER PRIMARY KEY,
    clock        BIGINT NOT NULL,
    started_at   BIGINT NOT NULL,
    finished_at  BIGINT,
    summary      TEXT
);

-- The chart of accounts (科目树). Channel clearing gets one child per channel on first use.
INSERT INTO accounts (code, parent, name, kind) VALUES
    ('1000', NULL,   'Assets', 'asset'),
    ('1100', '1000', 'Channel clearing', 'asset'),
    ('1200', '1000', 'Bank', 'asset'),
    ('1300', '1000', 'Loans receivable', 'asset'),
    ('1310', '1300', 'Principal', 'asset'),
    ('2000', NULL,   'Liabilities', 'liability'),
    ('2100', '2000', 'Borrower overpayments', 'liability'),
    ('3000', NULL,   'Equity', 'equity'),
    ('3100', '3000', 'Lender funding', 'equity'),
    ('4000', NULL,   'Income', 'income'),
    ('4100', '4000', 'Interest income', 'income'),
    ('4200', '4000', 'Fee income', 'income'),
    ('4300', '4000', 'Penalty income', 'income'),
    ('5000', NULL,   'Expenses', 'expense'),
    ('5100', '5000', 'Channel fees', 'expense'),
    ('5200', '5000', 'Write-offs', 'expense');
