-- Notes and promises to pay that collections staff record on a loan (audited). A promise
-- pauses automatic attempts until its date; whether it was kept is read from the attempts
-- collected since it was made, never stored.
CREATE TABLE loan_notes (
    id           BIGINT PRIMARY KEY,
    loan_id      TEXT NOT NULL REFERENCES loans(id),
    kind         TEXT NOT NULL CHECK (kind IN ('note', 'promise')),
    body         TEXT NOT NULL,
    -- A promise's amount in the loan's currency (minor units) and its local date.
    amount       BIGINT,
    promised_on  TEXT,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    CHECK (kind = 'note' OR (amount > 0 AND promised_on IS NOT NULL))
);
CREATE INDEX loan_notes_loan ON loan_notes(loan_id, id);
