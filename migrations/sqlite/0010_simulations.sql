-- Simulations a lender published (`repayd simulate --publish`), shown at /simulations.
CREATE TABLE simulations (
    id          INTEGER PRIMARY KEY,
    created_at  BIGINT NOT NULL,
    title       TEXT NOT NULL,
    figures     TEXT NOT NULL,
    report      TEXT NOT NULL
);
