-- Escrow deals, their timeline and their durable timers. A deal keeps the template it was
-- created with (as JSON); amounts are base units of the deal's asset, as decimal text.
CREATE TABLE deals (
    id                 BLOB    PRIMARY KEY,
    template_id        TEXT    NOT NULL,
    template           TEXT    NOT NULL,
    country            TEXT    NOT NULL,
    category           TEXT    NOT NULL,
    template_version   INTEGER NOT NULL,
    buyer_account      BLOB    NOT NULL REFERENCES accounts (id),
    seller_account     BLOB    NOT NULL REFERENCES accounts (id),
    network            TEXT    NOT NULL,
    asset              TEXT    NOT NULL,
    amount             TEXT    NOT NULL CHECK (CAST(amount AS INTEGER) > 0),
    immediate          TEXT    NOT NULL CHECK (CAST(immediate AS INTEGER) >= 0),
    holdback           TEXT    NOT NULL CHECK (CAST(holdback AS INTEGER) >= 0),
    state              TEXT    NOT NULL CHECK (state IN ('CREATED','FUNDED','DELIVERED','INSPECTION','APPROVED','ISSUE','SETTLED')),
    hold_id            BLOB    UNIQUE REFERENCES holds (id),
    released           TEXT    NOT NULL CHECK (CAST(released AS INTEGER) >= 0),
    offset_amount      TEXT    NOT NULL CHECK (CAST(offset_amount AS INTEGER) >= 0),
    refunded           TEXT    NOT NULL CHECK (CAST(refunded AS INTEGER) >= 0),
    issue_reason       TEXT,
    issue_detail       TEXT,
    issue_at           INTEGER,
    disputed           INTEGER NOT NULL DEFAULT 0,
    escalated          INTEGER NOT NULL,
    resolution_outcome TEXT,
    resolution_offset  TEXT,
    resolution_by      TEXT,
    resolution_reason  TEXT,
    resolution_at      INTEGER,
    reference          TEXT,
    created_by         TEXT    NOT NULL,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    settled_at         INTEGER
) STRICT;
CREATE INDEX deals_state ON deals (state, id);

CREATE TABLE deal_events (
    id      BLOB    PRIMARY KEY,
    deal_id BLOB    NOT NULL REFERENCES deals (id),
    at      INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    actor   TEXT    NOT NULL,
    detail  TEXT    NOT NULL
) STRICT;
CREATE INDEX deal_events_deal ON deal_events (deal_id, id);

CREATE TABLE timers (
    id            BLOB    PRIMARY KEY,
    kind          TEXT    NOT NULL CHECK (kind IN ('AUTO_APPROVE','DISPUTE_TTL')),
    deal_id       BLOB    NOT NULL REFERENCES deals (id),
    due_at        INTEGER NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('pending','fired','cancelled')),
    claimed_by    TEXT,
    claimed_until INTEGER,
    fired_at      INTEGER,
    created_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX timers_due ON timers (due_at) WHERE state = 'pending';
CREATE INDEX timers_deal ON timers (deal_id);

-- Evidence metadata; the content is in a content-addressed store (by sha256) on disk.
CREATE TABLE deal_evidence (
    id           BLOB    PRIMARY KEY,
    deal_id      BLOB    NOT NULL REFERENCES deals (id),
    type         TEXT    NOT NULL,
    sha256       TEXT    NOT NULL,
    size         INTEGER NOT NULL CHECK (size > 0),
    content_type TEXT    NOT NULL,
    uploaded_by  TEXT    NOT NULL,
    uploaded_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX deal_evidence_deal ON deal_evidence (deal_id, id);

-- The timeline is append-only.
CREATE TRIGGER deal_events_no_update BEFORE UPDATE ON deal_events
BEGIN SELECT RAISE(ABORT, 'deal_events is append-only'); END;
CREATE TRIGGER deal_events_no_delete BEFORE DELETE ON deal_events
BEGIN SELECT RAISE(ABORT, 'deal_events is append-only'); END;
