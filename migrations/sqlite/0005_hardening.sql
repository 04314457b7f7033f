-- Hardening: a loan whose pursuit failed (a panic, a policy gone) is parked for a person;
-- claims, refreshes and notices skip it until someone unparks it.
ALTER TABLE loans ADD COLUMN parked_at BIGINT;
ALTER TABLE loans ADD COLUMN parked_reason TEXT;

-- Holds are few at any moment; releasing a dead instance's holds reads only these.
CREATE INDEX loans_busy ON loans(busy_owner) WHERE busy_owner IS NOT NULL;
CREATE INDEX loans_parked ON loans(parked_at) WHERE parked_at IS NOT NULL;

-- Attempts still unknown after many queries are cases for a person ('unresolved'); a later
-- answer closes their case by attempt.
CREATE INDEX recon_items_unresolved ON recon_items(attempt_id) WHERE outcome = 'unresolved';

-- Loans an earlier version imported with amounts past the bounds now enforced (one
-- trillion per amount, see domain::money) are parked before the engine touches them.
UPDATE loans SET parked_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000,
    parked_reason = 'an installment amount is more than 1000000000000.00, the largest repayd accepts (imported before that bound existed)'
WHERE id IN (SELECT loan_id FROM installments WHERE principal > 100000000000000
    OR interest > 100000000000000 OR fee > 100000000000000 OR penalty > 100000000000000);
