-- Sending: the next nonce per wallet, every signed transaction (stored before it is
-- broadcast), and where each chunk was mined.

CREATE TABLE wallet_nonces (
    network    TEXT    NOT NULL,
    address    TEXT    NOT NULL,
    next_nonce INTEGER NOT NULL CHECK (next_nonce >= 0),
    PRIMARY KEY (network, address)
) STRICT;

CREATE TABLE tx_attempts (
    id                       BLOB    PRIMARY KEY,
    chunk_id                 BLOB    NOT NULL REFERENCES payout_chunks (id),
    wallet                   TEXT    NOT NULL,
    nonce                    INTEGER NOT NULL,
    hash                     BLOB    NOT NULL UNIQUE,
    raw                      BLOB    NOT NULL,
    max_fee_per_gas          TEXT    NOT NULL,
    max_priority_fee_per_gas TEXT    NOT NULL,
    gas_limit                INTEGER NOT NULL,
    created_at               INTEGER NOT NULL,
    broadcast_at             INTEGER,
    head_at_broadcast        INTEGER
) STRICT;
CREATE INDEX tx_attempts_chunk ON tx_attempts (chunk_id, created_at);

ALTER TABLE payout_chunks ADD COLUMN wallet TEXT;
ALTER TABLE payout_chunks ADD COLUMN nonce INTEGER;
ALTER TABLE payout_chunks ADD COLUMN mined_hash BLOB;
ALTER TABLE payout_chunks ADD COLUMN mined_block INTEGER;
ALTER TABLE payout_chunks ADD COLUMN mined_block_hash BLOB;
ALTER TABLE payout_chunks ADD COLUMN mined_success INTEGER;

-- Networks in safe-mode (a row exists while it is on).
CREATE TABLE network_safe_mode (
    network TEXT    PRIMARY KEY,
    reason  TEXT    NOT NULL,
    actor   TEXT    NOT NULL,
    since   INTEGER NOT NULL
) STRICT;
