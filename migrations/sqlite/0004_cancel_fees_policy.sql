-- Operator cancels, gas fees, and the policy state kept per network and per partner account.

-- A cancel asked for by an Operator: chunks not yet mined get a same-nonce self-transfer.
ALTER TABLE payouts ADD COLUMN cancel_reason TEXT;
ALTER TABLE payouts ADD COLUMN cancel_by TEXT;
CREATE INDEX payouts_cancelling ON payouts (network) WHERE cancel_reason IS NOT NULL AND state = 'broadcast';

-- What a signed transaction does: pay the chunk, or cancel its nonce.
ALTER TABLE tx_attempts ADD COLUMN kind TEXT NOT NULL DEFAULT 'transfer' CHECK (kind IN ('transfer', 'cancel'));

-- Gas the mined transaction burned (wei), posted as FEE in the native asset at confirmation.
ALTER TABLE payout_chunks ADD COLUMN mined_fee TEXT;
-- When the chunk was first signed: the rollout guardrail counts a day's volume by it.
ALTER TABLE payout_chunks ADD COLUMN signed_at INTEGER;
CREATE INDEX payout_chunks_signed_at ON payout_chunks (signed_at) WHERE signed_at IS NOT NULL;

-- The rollout phase per network, once set through the API (until then, the configured one).
CREATE TABLE network_rollout (
    network TEXT    PRIMARY KEY,
    phase   TEXT    NOT NULL CHECK (phase IN ('pilot', 'canary', 'full')),
    actor   TEXT    NOT NULL,
    reason  TEXT    NOT NULL,
    since   INTEGER NOT NULL
) STRICT;

-- Tokens frozen on a network: their payouts queue, nothing new is broadcast.
CREATE TABLE asset_freezes (
    network TEXT    NOT NULL,
    asset   TEXT    NOT NULL,
    reason  TEXT    NOT NULL,
    actor   TEXT    NOT NULL,
    since   INTEGER NOT NULL,
    PRIMARY KEY (network, asset)
) STRICT;

-- Destinations a partner account may pay to, when its allowlist is enforced.
CREATE TABLE destination_allowlists (
    account_id BLOB    PRIMARY KEY REFERENCES accounts (id),
    enforced   INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE TABLE allowed_destinations (
    account_id BLOB    NOT NULL REFERENCES accounts (id),
    network    TEXT    NOT NULL,
    address    TEXT    NOT NULL,
    label      TEXT,
    added_by   TEXT    NOT NULL,
    added_at   INTEGER NOT NULL,
    PRIMARY KEY (account_id, network, address)
) STRICT;
