-- Ledger: assets, accounts with cached balances, holds, the hash-chained journal, audit log.
-- Amounts are integers in base units (NUMERIC(38,0)); times are Unix microseconds.

CREATE TABLE assets (
    network  TEXT     NOT NULL,
    code     TEXT     NOT NULL,
    decimals SMALLINT NOT NULL CHECK (decimals BETWEEN 0 AND 18),
    PRIMARY KEY (network, code)
);

CREATE TABLE accounts (
    id             UUID          PRIMARY KEY,
    owner          TEXT          NOT NULL,
    network        TEXT          NOT NULL,
    asset          TEXT          NOT NULL,
    kind           TEXT          NOT NULL CHECK (kind IN ('partner','operating','external','fees','adjustments')),
    allow_negative BOOLEAN       NOT NULL,
    available      NUMERIC(38,0) NOT NULL DEFAULT 0,
    held           NUMERIC(38,0) NOT NULL DEFAULT 0 CHECK (held >= 0),
    version        BIGINT        NOT NULL DEFAULT 0,
    created_at     BIGINT        NOT NULL,
    FOREIGN KEY (network, asset) REFERENCES assets (network, code),
    CONSTRAINT accounts_owner_asset_kind_key UNIQUE (owner, network, asset, kind),
    CHECK (allow_negative OR available >= 0)
);

CREATE TABLE holds (
    id          UUID          PRIMARY KEY,
    account_id  UUID          NOT NULL REFERENCES accounts (id),
    amount      NUMERIC(38,0) NOT NULL CHECK (amount > 0),
    released    NUMERIC(38,0) NOT NULL DEFAULT 0 CHECK (released >= 0),
    voided      NUMERIC(38,0) NOT NULL DEFAULT 0 CHECK (voided >= 0),
    state       TEXT          NOT NULL CHECK (state IN ('open','resolved')),
    reference   TEXT,
    created_at  BIGINT        NOT NULL,
    resolved_at BIGINT,
    CHECK (released + voided <= amount),
    CHECK ((state = 'resolved') = (released + voided = amount))
);
CREATE INDEX holds_account ON holds (account_id);

-- One row: the last journal sequence number and its chain hash. Locked last in every ledger
-- write so that sequence numbers are gapless and the chain has no forks.
CREATE TABLE ledger_head (
    id   SMALLINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT   NOT NULL,
    hash BYTEA    NOT NULL
);
INSERT INTO ledger_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));

CREATE TABLE journal_transactions (
    seq             BIGINT  PRIMARY KEY,
    id              UUID    NOT NULL UNIQUE,
    kind            TEXT    NOT NULL CHECK (kind IN ('DEPOSIT','HOLD','RELEASE','OFFSET','REFUND','PAYOUT','FEE','ADJUSTMENT')),
    network         TEXT    NOT NULL,
    asset           TEXT    NOT NULL,
    hold_id         UUID    REFERENCES holds (id),
    idempotency_key TEXT    NOT NULL,
    request_hash    BYTEA   NOT NULL,
    reference       TEXT,
    memo            TEXT,
    actor           TEXT,
    created_at      BIGINT  NOT NULL,
    hash            BYTEA   NOT NULL,
    CONSTRAINT journal_idempotency_key UNIQUE (idempotency_key)
);
CREATE INDEX journal_kind_seq ON journal_transactions (kind, seq);
CREATE INDEX journal_created_seq ON journal_transactions (created_at, seq);
CREATE INDEX journal_hold ON journal_transactions (hold_id) WHERE hold_id IS NOT NULL;

CREATE TABLE postings (
    seq        BIGINT        NOT NULL REFERENCES journal_transactions (seq),
    idx        SMALLINT      NOT NULL,
    account_id UUID          NOT NULL REFERENCES accounts (id),
    bucket     TEXT          NOT NULL CHECK (bucket IN ('available','held')),
    amount     NUMERIC(38,0) NOT NULL CHECK (amount <> 0),
    PRIMARY KEY (seq, idx)
);
CREATE INDEX postings_account_seq ON postings (account_id, seq);

-- The journal is append-only: corrections are new transactions, never edits.
CREATE FUNCTION journal_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the journal is append-only (% on %)', TG_OP, TG_TABLE_NAME;
END $$;
CREATE TRIGGER journal_transactions_append_only BEFORE UPDATE OR DELETE ON journal_transactions
    FOR EACH ROW EXECUTE FUNCTION journal_is_append_only();
CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION journal_is_append_only();

CREATE TABLE audit_log (
    id         UUID   PRIMARY KEY,
    at         BIGINT NOT NULL,
    actor      TEXT   NOT NULL,
    role       TEXT   NOT NULL,
    action     TEXT   NOT NULL,
    target     TEXT   NOT NULL,
    reason     TEXT,
    request_id TEXT   NOT NULL
);
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION journal_is_append_only();
