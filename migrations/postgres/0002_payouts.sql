-- Payout requests and their chunks (one on-chain transfer each, at most the per-tx cap), and
-- the decisions and steps of each payout. A payout row is written in the same database
-- transaction as the HOLD that reserves its amount.

CREATE TABLE payouts (
    id              UUID          PRIMARY KEY,
    account_id      UUID          NOT NULL REFERENCES accounts (id),
    network         TEXT          NOT NULL,
    asset           TEXT          NOT NULL,
    destination     TEXT          NOT NULL,
    amount          NUMERIC(38,0) NOT NULL CHECK (amount > 0),
    reference       TEXT,
    metadata        TEXT,
    state           TEXT          NOT NULL CHECK (state IN ('pending_approval','queued','broadcast','confirmed','failed','cancelled','rejected')),
    initial_state   TEXT          NOT NULL,
    created_by      TEXT          NOT NULL,
    hold_id         UUID          NOT NULL UNIQUE REFERENCES holds (id),
    created_at      BIGINT        NOT NULL,
    updated_at      BIGINT        NOT NULL
);
CREATE INDEX payouts_state_id ON payouts (state, id);
CREATE INDEX payouts_account_id ON payouts (account_id, id);

CREATE TABLE payout_chunks (
    id         UUID          PRIMARY KEY,
    payout_id  UUID          NOT NULL REFERENCES payouts (id),
    idx        INTEGER       NOT NULL,
    amount     NUMERIC(38,0) NOT NULL CHECK (amount > 0),
    state      TEXT          NOT NULL CHECK (state IN ('queued','signed','broadcast','mined','confirmed','failed','cancelled')),
    updated_at BIGINT        NOT NULL,
    UNIQUE (payout_id, idx)
);
-- The sender claims queued chunks oldest first; only unfinished chunks are indexed.
CREATE INDEX payout_chunks_open ON payout_chunks (state, id) WHERE state NOT IN ('confirmed','failed','cancelled');

CREATE TABLE payout_events (
    id        UUID   PRIMARY KEY,
    payout_id UUID   NOT NULL REFERENCES payouts (id),
    at        BIGINT NOT NULL,
    kind      TEXT   NOT NULL,
    detail    TEXT   NOT NULL
);
CREATE INDEX payout_events_payout ON payout_events (payout_id, id);
