-- Transfers batched on chain through contracts/Disperse.sol: one signed transaction (one
-- nonce, one hash) pays several chunks, so an attempt's hash is unique per chunk rather than
-- overall, and each batched attempt says where in the batch its chunk is paid.
ALTER TABLE tx_attempts DROP CONSTRAINT tx_attempts_hash_key;
ALTER TABLE tx_attempts ADD CONSTRAINT tx_attempts_chunk_hash UNIQUE (chunk_id, hash);
CREATE INDEX tx_attempts_hash ON tx_attempts (hash);
ALTER TABLE tx_attempts ADD COLUMN batch_index INTEGER CHECK (batch_index >= 0);
ALTER TABLE tx_attempts ADD COLUMN batch_size INTEGER CHECK (batch_size >= 1);
ALTER TABLE tx_attempts ADD CONSTRAINT tx_attempts_batch_slot CHECK ((batch_index IS NULL) = (batch_size IS NULL));

-- A batched transaction's signed bytes, once: its chunks' attempt rows leave `raw` empty and
-- read it from here (a batch of 100 would otherwise store its ~6.5 KB a hundred times).
CREATE TABLE signed_batches (
    hash BYTEA PRIMARY KEY,
    raw  BYTEA NOT NULL
);

-- A chunk whose batch reverted (or whose nonce a batch-mate's cancel took) is queued again to
-- go out on its own, never in a batch again: that is how the failing destination is found.
ALTER TABLE payout_chunks ADD COLUMN single_only BOOLEAN NOT NULL DEFAULT FALSE;

-- Transactions a hot wallet sends that pay no chunk: the one-time approval of the disperse
-- contract. Stored before broadcast under the wallet's nonce lock, like every attempt, so a
-- crash can never leave a nonce assigned and unsent.
CREATE TABLE wallet_calls (
    hash         BYTEA  PRIMARY KEY,
    network      TEXT   NOT NULL,
    wallet       TEXT   NOT NULL,
    nonce        BIGINT NOT NULL CHECK (nonce >= 0),
    kind         TEXT   NOT NULL CHECK (kind IN ('approve')),
    token        TEXT   NOT NULL,
    spender      TEXT   NOT NULL,
    raw          BYTEA  NOT NULL,
    created_at   BIGINT NOT NULL,
    broadcast_at BIGINT,
    UNIQUE (network, wallet, nonce)
);
