-- Every journal entry is in one currency, so the trial balance, the daily report and every
-- money total are kept per currency: CNY and GBP are never added into one number.
ALTER TABLE journal_entries ADD COLUMN currency TEXT;

-- The journal refuses UPDATE; this one-off fill of the new column is the only exception.
ALTER TABLE journal_entries DISABLE TRIGGER journal_entries_append_only;
UPDATE journal_entries e SET currency = l.currency FROM loans l WHERE l.id = e.loan_id;
-- A settlement made before this version summed a channel's day over every currency. Where
-- the day's collections were of one currency, that is its currency; a mixed one stays NULL
-- and `repayd verify` names it.
UPDATE journal_entries e SET currency = (
    SELECT MIN(lo.currency) FROM settlements s
    JOIN recon_items r ON r.channel = s.channel AND r.recon_date = s.stmt_date
        AND r.outcome = 'matched' AND r.their_status = 'success'
    JOIN attempts a ON a.id = r.attempt_id
    JOIN loans lo ON lo.id = a.loan_id
    WHERE s.entry_id = e.id
    HAVING COUNT(DISTINCT lo.currency) = 1)
WHERE e.currency IS NULL AND e.kind = 'settlement';
ALTER TABLE journal_entries ENABLE TRIGGER journal_entries_append_only;

-- One settlement per channel, statement day and currency. A day with nothing to settle
-- keeps one row with currency '' that marks it done.
ALTER TABLE settlements ADD COLUMN currency TEXT NOT NULL DEFAULT '';
UPDATE settlements s SET currency = COALESCE(
    (SELECT e.currency FROM journal_entries e WHERE e.id = s.entry_id), '');
ALTER TABLE settlements DROP CONSTRAINT settlements_channel_stmt_date_key;
ALTER TABLE settlements ADD CONSTRAINT settlements_channel_day_currency
    UNIQUE (channel, stmt_date, currency);
