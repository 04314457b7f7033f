-- Every journal entry is in one currency, so the trial balance, the daily report and every
-- money total are kept per currency: CNY and GBP are never added into one number.
ALTER TABLE journal_entries ADD COLUMN currency TEXT;

-- The journal refuses UPDATE; this one-off fill of the new column is the only exception.
DROP TRIGGER journal_entries_no_update;
UPDATE journal_entries SET currency = (SELECT l.currency FROM loans l WHERE l.id = journal_entries.loan_id)
WHERE loan_id IS NOT NULL;
-- A settlement made before this version summed a channel's day over every currency. Where
-- the day's collections were of one currency, that is its currency; a mixed one stays NULL
-- and `repayd verify` names it.
UPDATE journal_entries SET currency = (
    SELECT MIN(lo.currency) FROM settlements s
    JOIN recon_items r ON r.channel = s.channel AND r.recon_date = s.stmt_date
        AND r.outcome = 'matched' AND r.their_status = 'success'
    JOIN attempts a ON a.id = r.attempt_id
    JOIN loans lo ON lo.id = a.loan_id
    WHERE s.entry_id = journal_entries.id
    HAVING COUNT(DISTINCT lo.currency) = 1)
WHERE currency IS NULL AND kind = 'settlement';
CREATE TRIGGER journal_entries_no_update BEFORE UPDATE ON journal_entries
BEGIN SELECT RAISE(ABORT, 'journal is append-only'); END;

-- One settlement per channel, statement day and currency. A day with nothing to settle
-- keeps one row with currency '' that marks it done. SQLite changes a UNIQUE constraint
-- by rebuilding the table.
CREATE TABLE settlements_new (
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
    currency      TEXT NOT NULL DEFAULT '',
    UNIQUE (channel, stmt_date, currency)
);
INSERT INTO settlements_new (id, channel, stmt_date, settle_date, gross, fees, net, entry_id, created_at, currency)
SELECT s.id, s.channel, s.stmt_date, s.settle_date, s.gross, s.fees, s.net, s.entry_id, s.created_at,
       COALESCE((SELECT e.currency FROM journal_entries e WHERE e.id = s.entry_id), '')
FROM settlements s;
DROP TABLE settlements;
ALTER TABLE settlements_new RENAME TO settlements;
