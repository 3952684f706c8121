-- Transfers batched on chain through contracts/Disperse.sol: one signed transaction (one
-- nonce, one hash) pays several chunks, so an attempt's hash is unique per chunk rather than
-- overall, and each batched attempt says where in the batch its chunk is paid. SQLite cannot
-- drop a UNIQUE constraint in place: the table is rebuilt with the same rows.
CREATE TABLE tx_attempts_batched (
    id                       BLOB    PRIMARY KEY,
    chunk_id                 BLOB    NOT NULL REFERENCES payout_chunks (id),
    wallet                   TEXT    NOT NULL,
    nonce                    INTEGER NOT NULL,
    hash                     BLOB    NOT NULL,
    raw                      BLOB    NOT NULL,
    max_fee_per_gas          TEXT    NOT NULL,
    max_priority_fee_per_gas TEXT    NOT NULL,
    gas_limit                INTEGER NOT NULL,
    created_at               INTEGER NOT NULL,
    broadcast_at             INTEGER,
    head_at_broadcast        INTEGER,
    kind                     TEXT    NOT NULL DEFAULT 'transfer' CHECK (kind IN ('transfer', 'cancel')),
    -- Batched attempts only: the chunk's place among the batch's payments, and their number.
    batch_index              INTEGER CHECK (batch_index >= 0),
    batch_size               INTEGER CHECK (batch_size >= 1),
    UNIQUE (chunk_id, hash),
    CHECK ((batch_index IS NULL) = (batch_size IS NULL))
) STRICT;
INSERT INTO tx_attempts_batched (id, chunk_id, wallet, nonce, hash, raw, max_fee_per_gas,
    max_priority_fee_per_gas, gas_limit, created_at, broadcast_at, head_at_broadcast, kind)
SELECT id, chunk_id, wallet, nonce, hash, raw, max_fee_per_gas, max_priority_fee_per_gas,
    gas_limit, created_at, broadcast_at, head_at_broadcast, kind FROM tx_attempts;
DROP TABLE tx_attempts;
ALTER TABLE tx_attempts_batched RENAME TO tx_attempts;
CREATE INDEX tx_attempts_chunk ON tx_attempts (chunk_id, created_at);
CREATE INDEX tx_attempts_hash ON tx_attempts (hash);

-- A batched transaction's signed bytes, once: its chunks' attempt rows leave `raw` empty and
-- read it from here (a batch of 100 would otherwise store its ~6.5 KB a hundred times).
CREATE TABLE signed_batches (
    hash BLOB PRIMARY KEY,
    raw  BLOB NOT NULL
) STRICT;

-- A chunk whose batch reverted (or whose nonce a batch-mate's cancel took) is queued again to
-- go out on its own, never in a batch again: that is how the failing destination is found.
ALTER TABLE payout_chunks ADD COLUMN single_only INTEGER NOT NULL DEFAULT 0 CHECK (single_only IN (0, 1));

-- Transactions a hot wallet sends that pay no chunk: the one-time approval of the disperse
-- contract. Stored before broadcast under the wallet's nonce lock, like every attempt, so a
-- crash can never leave a nonce assigned and unsent.
CREATE TABLE wallet_calls (
    hash         BLOB    PRIMARY KEY,
    network      TEXT    NOT NULL,
    wallet       TEXT    NOT NULL,
    nonce        INTEGER NOT NULL CHECK (nonce >= 0),
    kind         TEXT    NOT NULL CHECK (kind IN ('approve')),
    token        TEXT    NOT NULL,
    spender      TEXT    NOT NULL,
    raw          BLOB    NOT NULL,
    created_at   INTEGER NOT NULL,
    broadcast_at INTEGER,
    UNIQUE (network, wallet, nonce)
) STRICT;
