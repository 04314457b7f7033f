-- PostgreSQL's 0009 drops the foreign keys of journal_lines (a lookup and a row lock per line).
-- SQLite checks a foreign key with one index probe in-process and takes no row locks, and it
-- cannot drop a constraint without rebuilding the table, so its journal_lines keep theirs.
SELECT 1;
