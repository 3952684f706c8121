-- Ledger: assets, accounts with cached balances, holds, the hash-chained journal, audit log.
-- Amounts are integers in base units stored as decimal TEXT (SQLite integers stop at 2^63);
-- the CHECKs cast them, which saturates but keeps the sign. Times are Unix microseconds.

CREATE TABLE assets (
    network  TEXT    NOT NULL,
    code     TEXT    NOT NULL,
    decimals INTEGER NOT NULL CHECK (decimals BETWEEN 0 AND 18),
    PRIMARY KEY (network, code)
) STRICT;

CREATE TABLE accounts (
    id             BLOB    PRIMARY KEY,
    owner          TEXT    NOT NULL,
    network        TEXT    NOT NULL,
    asset          TEXT    NOT NULL,
    kind           TEXT    NOT NULL CHECK (kind IN ('partner','operating','external','fees','adjustments')),
    allow_negative INTEGER NOT NULL,
    available      TEXT    NOT NULL DEFAULT '0',
    held           TEXT    NOT NULL DEFAULT '0' CHECK (CAST(held AS INTEGER) >= 0),
    version        INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    FOREIGN KEY (network, asset) REFERENCES assets (network, code),
    CONSTRAINT accounts_owner_asset_kind_key UNIQUE (owner, network, asset, kind),
    CHECK (allow_negative OR CAST(available AS INTEGER) >= 0)
) STRICT;

CREATE TABLE holds (
    id          BLOB    PRIMARY KEY,
    account_id  BLOB    NOT NULL REFERENCES accounts (id),
    amount      TEXT    NOT NULL CHECK (CAST(amount AS INTEGER) > 0),
    released    TEXT    NOT NULL DEFAULT '0',
    voided      TEXT    NOT NULL DEFAULT '0',
    state       TEXT    NOT NULL CHECK (state IN ('open','resolved')),
    reference   TEXT,
    created_at  INTEGER NOT NULL,
    resolved_at INTEGER
) STRICT;
CREATE INDEX holds_account ON holds (account_id);

CREATE TABLE ledger_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash BLOB    NOT NULL
) STRICT;
INSERT INTO ledger_head (id, seq, hash) VALUES (1, 0, zeroblob(32));

CREATE TABLE journal_transactions (
    seq             INTEGER PRIMARY KEY,
    id              BLOB    NOT NULL UNIQUE,
    kind            TEXT    NOT NULL CHECK (kind IN ('DEPOSIT','HOLD','RELEASE','OFFSET','REFUND','PAYOUT','FEE','ADJUSTMENT')),
    network         TEXT    NOT NULL,
    asset           TEXT    NOT NULL,
    hold_id         BLOB    REFERENCES holds (id),
    idempotency_key TEXT    NOT NULL,
    request_hash    BLOB    NOT NULL,
    reference       TEXT,
    memo            TEXT,
    actor           TEXT,
    created_at      INTEGER NOT NULL,
    hash            BLOB    NOT NULL,
    CONSTRAINT journal_idempotency_key UNIQUE (idempotency_key)
) STRICT;
CREATE INDEX journal_kind_seq ON journal_transactions (kind, seq);
CREATE INDEX journal_created_seq ON journal_transactions (created_at, seq);
CREATE INDEX journal_hold ON journal_transactions (hold_id) WHERE hold_id IS NOT NULL;

CREATE TABLE postings (
    seq        INTEGER NOT NULL REFERENCES journal_transactions (seq),
    idx        INTEGER NOT NULL,
    account_id BLOB    NOT NULL REFERENCES accounts (id),
    bucket     TEXT    NOT NULL CHECK (bucket IN ('available','held')),
    amount     TEXT    NOT NULL CHECK (CAST(amount AS INTEGER) <> 0),
    PRIMARY KEY (seq, idx)
) STRICT;
CREATE INDEX postings_account_seq ON postings (account_id, seq);

CREATE TRIGGER journal_transactions_no_update BEFORE UPDATE ON journal_transactions
BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
CREATE TRIGGER journal_transactions_no_delete BEFORE DELETE ON journal_transactions
BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
CREATE TRIGGER postings_no_update BEFORE UPDATE ON postings
BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
CREATE TRIGGER postings_no_delete BEFORE DELETE ON postings
BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;

CREATE TABLE audit_log (
    id         BLOB    PRIMARY KEY,
    at         INTEGER NOT NULL,
    actor      TEXT    NOT NULL,
    role       TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    target     TEXT    NOT NULL,
    reason     TEXT,
    request_id TEXT    NOT NULL
) STRICT;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
