-- Escrow deals, their timeline and their durable timers. A deal keeps the template it was
-- created with (as JSON); amounts are base units of the deal's asset.
CREATE TABLE deals (
    id                 UUID          PRIMARY KEY,
    template_id        TEXT          NOT NULL,
    template           TEXT          NOT NULL,
    country            TEXT          NOT NULL,
    category           TEXT          NOT NULL,
    template_version   INTEGER       NOT NULL,
    buyer_account      UUID          NOT NULL REFERENCES accounts (id),
    seller_account     UUID          NOT NULL REFERENCES accounts (id),
    network            TEXT          NOT NULL,
    asset              TEXT          NOT NULL,
    amount             NUMERIC(38,0) NOT NULL CHECK (amount > 0),
    immediate          NUMERIC(38,0) NOT NULL CHECK (immediate >= 0),
    holdback           NUMERIC(38,0) NOT NULL CHECK (holdback >= 0),
    state              TEXT          NOT NULL CHECK (state IN ('CREATED','FUNDED','DELIVERED','INSPECTION','APPROVED','ISSUE','SETTLED')),
    hold_id            UUID          UNIQUE REFERENCES holds (id),
    released           NUMERIC(38,0) NOT NULL CHECK (released >= 0),
    offset_amount      NUMERIC(38,0) NOT NULL CHECK (offset_amount >= 0),
    refunded           NUMERIC(38,0) NOT NULL CHECK (refunded >= 0),
    issue_reason       TEXT,
    issue_detail       TEXT,
    issue_at           BIGINT,
    disputed           BOOLEAN       NOT NULL DEFAULT FALSE,
    escalated          BOOLEAN       NOT NULL,
    resolution_outcome TEXT,
    resolution_offset  NUMERIC(38,0),
    resolution_by      TEXT,
    resolution_reason  TEXT,
    resolution_at      BIGINT,
    reference          TEXT,
    created_by         TEXT          NOT NULL,
    created_at         BIGINT        NOT NULL,
    updated_at         BIGINT        NOT NULL,
    settled_at         BIGINT,
    CHECK (immediate + holdback = amount),
    CHECK (released + offset_amount + refunded <= amount)
);
CREATE INDEX deals_state ON deals (state, id);

CREATE TABLE deal_events (
    id      UUID   PRIMARY KEY,
    deal_id UUID   NOT NULL REFERENCES deals (id),
    at      BIGINT NOT NULL,
    kind    TEXT   NOT NULL,
    actor   TEXT   NOT NULL,
    detail  TEXT   NOT NULL
);
CREATE INDEX deal_events_deal ON deal_events (deal_id, id);

CREATE TABLE timers (
    id            UUID   PRIMARY KEY,
    kind          TEXT   NOT NULL CHECK (kind IN ('AUTO_APPROVE','DISPUTE_TTL')),
    deal_id       UUID   NOT NULL REFERENCES deals (id),
    due_at        BIGINT NOT NULL,
    state         TEXT   NOT NULL CHECK (state IN ('pending','fired','cancelled')),
    claimed_by    TEXT,
    claimed_until BIGINT,
    fired_at      BIGINT,
    created_at    BIGINT NOT NULL
);
CREATE INDEX timers_due ON timers (due_at) WHERE state = 'pending';
CREATE INDEX timers_deal ON timers (deal_id);

-- Evidence metadata; the content is in a content-addressed store (by sha256) on disk.
CREATE TABLE deal_evidence (
    id           UUID    PRIMARY KEY,
    deal_id      UUID    NOT NULL REFERENCES deals (id),
    type         TEXT    NOT NULL,
    sha256       TEXT    NOT NULL,
    size         BIGINT  NOT NULL CHECK (size > 0),
    content_type TEXT    NOT NULL,
    uploaded_by  TEXT    NOT NULL,
    uploaded_at  BIGINT  NOT NULL
);
CREATE INDEX deal_evidence_deal ON deal_evidence (deal_id, id);

-- The timeline is append-only.
CREATE FUNCTION deal_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'deal_events is append-only';
END $$;
CREATE TRIGGER deal_events_no_update BEFORE UPDATE OR DELETE ON deal_events
    FOR EACH ROW EXECUTE FUNCTION deal_events_append_only();
