-- Sending: the next nonce per wallet, every signed transaction (stored before it is
-- broadcast), and where each chunk was mined.

CREATE TABLE wallet_nonces (
    network    TEXT   NOT NULL,
    address    TEXT   NOT NULL,
    next_nonce BIGINT NOT NULL CHECK (next_nonce >= 0),
    PRIMARY KEY (network, address)
);

CREATE TABLE tx_attempts (
    id                       UUID          PRIMARY KEY,
    chunk_id                 UUID          NOT NULL REFERENCES payout_chunks (id),
    wallet                   TEXT          NOT NULL,
    nonce                    BIGINT        NOT NULL,
    hash                     BYTEA         NOT NULL UNIQUE,
    raw                      BYTEA         NOT NULL,
    max_fee_per_gas          NUMERIC(38,0) NOT NULL,
    max_priority_fee_per_gas NUMERIC(38,0) NOT NULL,
    gas_limit                BIGINT        NOT NULL,
    created_at               BIGINT        NOT NULL,
    broadcast_at             BIGINT,
    head_at_broadcast        BIGINT
);
CREATE INDEX tx_attempts_chunk ON tx_attempts (chunk_id, created_at);

ALTER TABLE payout_chunks ADD COLUMN wallet TEXT;
ALTER TABLE payout_chunks ADD COLUMN nonce BIGINT;
ALTER TABLE payout_chunks ADD COLUMN mined_hash BYTEA;
ALTER TABLE payout_chunks ADD COLUMN mined_block BIGINT;
ALTER TABLE payout_chunks ADD COLUMN mined_block_hash BYTEA;
ALTER TABLE payout_chunks ADD COLUMN mined_success BOOLEAN;

-- Networks in safe-mode (a row exists while it is on).
CREATE TABLE network_safe_mode (
    network TEXT   PRIMARY KEY,
    reason  TEXT   NOT NULL,
    actor   TEXT   NOT NULL,
    since   BIGINT NOT NULL
);
