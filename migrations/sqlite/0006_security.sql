-- Idempotency keys belong to a token id, not a token name, and token names are unique, revoked
-- or not: a new token given a revoked one's name was replayed the old token's answers (an
-- admin's, with the token it had created). The audit log's actor, a name, now stands for one
-- token.

CREATE TABLE idempotency_keys_by_token (
    token_id      BIGINT NOT NULL,
    key           TEXT NOT NULL,
    method        TEXT NOT NULL,
    path          TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    -- NULL while the first request runs.
    status        BIGINT,
    -- What a repeat gets. NULL with a status: the answer held a secret (a new token), which is
    -- shown once, so it was never stored and a repeat is refused.
    response      TEXT,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (token_id, key)
);
-- The keys of an active token whose name no other token ever had carry over (a reserved key
-- stays reserved). Where a name was shared nobody knows which token made a key, so its keys
-- go: carried to the active one, they would replay another token's answers. A stored answer
-- holding a token is dropped.
INSERT INTO idempotency_keys_by_token
    (token_id, key, method, path, request_hash, status, response, created_at)
SELECT t.id, k.key, k.method, k.path, k.request_hash, k.status,
       CASE WHEN k.response LIKE '%"token":"rpd_%' THEN NULL ELSE k.response END,
       k.created_at
FROM idempotency_keys k JOIN api_tokens t ON t.name = k.actor AND t.revoked_at IS NULL
WHERE (SELECT COUNT(*) FROM api_tokens o WHERE o.name = k.actor) = 1;
DROP TABLE idempotency_keys;
ALTER TABLE idempotency_keys_by_token RENAME TO idempotency_keys;

-- Existing duplicate names: the active token (or else the newest) keeps the name, the others
-- become `name#id`. Their audit rows keep the name they had.
UPDATE api_tokens SET name = name || '#' || CAST(id AS TEXT)
WHERE EXISTS (
    SELECT 1 FROM api_tokens o
    WHERE o.name = api_tokens.name AND o.id <> api_tokens.id
      AND ((o.revoked_at IS NULL AND api_tokens.revoked_at IS NOT NULL)
           OR ((o.revoked_at IS NULL) = (api_tokens.revoked_at IS NULL) AND o.id > api_tokens.id))
);
CREATE UNIQUE INDEX api_tokens_name ON api_tokens(name);
