-- Trust pairs and their end-of-day sessions. A session's cut-off is its own durable timer: the
-- runner closes sessions that are `open` past `cutoff_at`, and closing is guarded by that
-- state, so each closes once. Amounts are base units of the pair's asset.
CREATE TABLE companies (
    id         UUID   PRIMARY KEY,
    name       TEXT   NOT NULL UNIQUE,
    tier       TEXT   NOT NULL CHECK (tier IN ('S', 'M', 'L', 'XL')),
    created_by TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE company_members (
    company_id UUID   NOT NULL REFERENCES companies (id),
    user_name  TEXT   NOT NULL,
    role       TEXT   NOT NULL CHECK (role IN ('admin', 'trader', 'approver', 'operator')),
    added_by   TEXT   NOT NULL,
    added_at   BIGINT NOT NULL,
    PRIMARY KEY (company_id, user_name)
);

CREATE TABLE trust_pairs (
    id             UUID    PRIMARY KEY,
    company_a      UUID    NOT NULL REFERENCES companies (id),
    company_b      UUID    NOT NULL REFERENCES companies (id),
    account_a      UUID    NOT NULL REFERENCES accounts (id),
    account_b      UUID    NOT NULL REFERENCES accounts (id),
    network        TEXT    NOT NULL,
    asset          TEXT    NOT NULL,
    limit_a_to_b   NUMERIC NOT NULL CHECK (limit_a_to_b >= 0),
    limit_b_to_a   NUMERIC NOT NULL CHECK (limit_b_to_a >= 0),
    timezone       TEXT    NOT NULL,
    cutoff         TEXT    NOT NULL,
    mode           TEXT    NOT NULL CHECK (mode IN ('full', 'partial', 't_plus_1')),
    -- Where each side's settlements are paid out on chain (EIP-55); NULL: they stay on its account.
    payout_address_a TEXT,
    payout_address_b TEXT,
    created_by     TEXT    NOT NULL,
    created_at     BIGINT  NOT NULL,
    CHECK (company_a <> company_b)
);

CREATE TABLE trust_sessions (
    id             UUID    PRIMARY KEY,
    pair_id        UUID    NOT NULL REFERENCES trust_pairs (id),
    business_date  TEXT    NOT NULL,
    cutoff_at      BIGINT  NOT NULL,
    state          TEXT    NOT NULL CHECK (state IN ('open', 'closed', 'settling', 'settled', 'unsettled')),
    frozen_seq     BIGINT,
    obligations    INTEGER NOT NULL DEFAULT 0,
    gross_a_to_b   NUMERIC NOT NULL DEFAULT 0,
    gross_b_to_a   NUMERIC NOT NULL DEFAULT 0,
    debtor         TEXT    CHECK (debtor IN ('A', 'B')),
    net_amount     NUMERIC NOT NULL DEFAULT 0,
    outcome        TEXT    CHECK (outcome IN ('nothing', 'full', 'partial', 'carried', 'unsettled')),
    settled_amount NUMERIC NOT NULL DEFAULT 0,
    carried_amount NUMERIC NOT NULL DEFAULT 0,
    payout_id      UUID    REFERENCES payouts (id),
    hold_id        UUID    REFERENCES holds (id),
    closed_by      TEXT,
    closed_at      BIGINT,
    settled_at     BIGINT,
    UNIQUE (pair_id, business_date)
);
CREATE INDEX trust_sessions_due ON trust_sessions (cutoff_at) WHERE state = 'open';
CREATE INDEX trust_sessions_unsettled ON trust_sessions (pair_id) WHERE state IN ('closed', 'settling', 'unsettled');

-- `seq` orders obligations across every session: closing freezes a session at its last seq.
CREATE TABLE trust_obligations (
    seq             BIGSERIAL PRIMARY KEY,
    id              UUID    NOT NULL UNIQUE,
    session_id      UUID    NOT NULL REFERENCES trust_sessions (id),
    debtor          TEXT    NOT NULL CHECK (debtor IN ('A', 'B')),
    amount          NUMERIC NOT NULL CHECK (amount > 0),
    kind            TEXT    NOT NULL CHECK (kind IN ('intraday', 't_plus_1')),
    reference       TEXT,
    idempotency_key TEXT    UNIQUE,
    created_by      TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL
);
CREATE INDEX trust_obligations_session ON trust_obligations (session_id, seq);

-- Partners hear of their sessions through the webhook outbox (see 0013), in the same
-- transaction as the change.
CREATE FUNCTION webhook_trust_session() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_events (id, type, subject_id, actor, occurred_at, created_at)
    VALUES (gen_random_uuid(), 'eod.session_' || NEW.state, NEW.id, NEW.closed_by,
            COALESCE(CASE NEW.state WHEN 'settled' THEN NEW.settled_at ELSE NEW.closed_at END, webhook_now()),
            webhook_now());
    RETURN NULL;
END $$;
CREATE TRIGGER trust_sessions_to_webhooks AFTER UPDATE OF state ON trust_sessions FOR EACH ROW
    WHEN (NEW.state <> OLD.state AND NEW.state IN ('closed', 'settled', 'unsettled'))
    EXECUTE FUNCTION webhook_trust_session();
