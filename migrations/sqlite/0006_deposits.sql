-- On-chain deposits: the addresses that credit a partner account, and how far each network's
-- confirmed blocks have been read. Each deposit is credited once, under the ledger
-- idempotency key deposit:{chain id}:{tx hash}:{log index}.
CREATE TABLE deposit_addresses (
    account_id BLOB   NOT NULL REFERENCES accounts (id),
    network    TEXT   NOT NULL,
    address    TEXT   NOT NULL,
    added_by   TEXT   NOT NULL,
    added_at   INTEGER NOT NULL,
    PRIMARY KEY (network, address, account_id)
) STRICT;
CREATE INDEX deposit_addresses_account ON deposit_addresses (account_id);

CREATE TABLE deposit_cursors (
    network    TEXT   PRIMARY KEY,
    next_block INTEGER NOT NULL CHECK (next_block >= 0)
) STRICT;
