-- Cheaper writes on the hottest table. Every repayment posts two to four journal lines, and
-- each line's two foreign keys cost a lookup (and a row lock) per line. Nothing in repayd
-- deletes an entry or an account, the journal is append-only (triggers), and `repayd verify`
-- checks what the keys checked: a line of a missing entry, a line naming an account that does
-- not exist (store::verify, "lines").
ALTER TABLE journal_lines DROP CONSTRAINT IF EXISTS journal_lines_entry_id_fkey;
ALTER TABLE journal_lines DROP CONSTRAINT IF EXISTS journal_lines_account_fkey;
