-- The webhook outbox. Triggers write an event in the same database transaction as the change
-- it reports (a payout or deal timeline line, a deposit's journal entry, a safe-mode audit
-- record), so no event is lost and none exists for a rolled-back change. The event id is the
-- id of the row that caused it. The delivery worker renders the body once (`body`) and fans it
-- out to the endpoints subscribed at that moment (`webhook_deliveries`).
CREATE TABLE webhook_events (
    seq           BIGSERIAL PRIMARY KEY,
    id            UUID   NOT NULL UNIQUE,
    type          TEXT   NOT NULL,
    subject_id    UUID,
    network       TEXT,
    actor         TEXT,
    detail        TEXT,
    occurred_at   BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    body          TEXT,
    dispatched_at BIGINT
);
CREATE INDEX webhook_events_undispatched ON webhook_events (seq) WHERE dispatched_at IS NULL;
CREATE INDEX webhook_events_created ON webhook_events (created_at);

-- One row per (endpoint, event): pending until a 2xx, dead once the retry horizon has passed.
-- `due_since` is when it became due (fan-out or replay); the horizon counts from there.
CREATE TABLE webhook_deliveries (
    endpoint_id     UUID    NOT NULL REFERENCES webhook_endpoints (id),
    event_seq       BIGINT  NOT NULL REFERENCES webhook_events (seq),
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    due_since       BIGINT  NOT NULL,
    next_attempt_at BIGINT  NOT NULL,
    last_attempt_at BIGINT,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    BIGINT,
    replays         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (endpoint_id, event_seq)
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (endpoint_id, event_seq) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_dead ON webhook_deliveries (endpoint_id, event_seq) WHERE state = 'dead';

CREATE FUNCTION webhook_now() RETURNS BIGINT LANGUAGE sql AS
$$ SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT $$;

-- A chunk's transfer stored signed is sent at once: the payout is `broadcast` from then on, and
-- `payout.broadcast` (one per chunk) carries its transaction hash in `detail`.
CREATE FUNCTION webhook_payout_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_events (id, type, subject_id, detail, occurred_at, created_at)
    VALUES (NEW.id, 'payout.' || CASE NEW.kind WHEN 'signed' THEN 'broadcast' ELSE NEW.kind END, NEW.payout_id, NEW.detail, NEW.at, webhook_now());
    RETURN NULL;
END $$;
CREATE TRIGGER payout_events_to_webhooks AFTER INSERT ON payout_events FOR EACH ROW
    WHEN (NEW.kind IN ('accepted', 'approved', 'rejected', 'signed', 'confirmed', 'failed', 'reorged', 'cancelled'))
    EXECUTE FUNCTION webhook_payout_event();

CREATE FUNCTION webhook_deal_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_events (id, type, subject_id, actor, detail, occurred_at, created_at)
    VALUES (NEW.id,
            'deal.' || CASE NEW.kind WHEN 'ISSUE_RAISED' THEN 'issue' ELSE lower(NEW.kind) END,
            NEW.deal_id, NEW.actor, NEW.detail, NEW.at, webhook_now());
    RETURN NULL;
END $$;
CREATE TRIGGER deal_events_to_webhooks AFTER INSERT ON deal_events FOR EACH ROW
    WHEN (NEW.kind IN ('CREATED', 'FUNDED', 'DELIVERED', 'INSPECTION', 'APPROVED', 'ISSUE_RAISED', 'ESCALATED',
                       'SETTLED', 'TIMER_SET', 'TIMER_FIRED'))
    EXECUTE FUNCTION webhook_deal_event();

-- Deposits credited to partners: chain deposits and manual ones. The hot wallets' own inflows
-- and opening balances are bookkeeping, not partner news.
CREATE FUNCTION webhook_deposit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_events (id, type, subject_id, network, actor, occurred_at, created_at)
    VALUES (NEW.id, 'deposit.credited', NEW.id, NEW.network, NEW.actor, NEW.created_at, webhook_now());
    RETURN NULL;
END $$;
CREATE TRIGGER journal_deposits_to_webhooks AFTER INSERT ON journal_transactions FOR EACH ROW
    WHEN (NEW.kind = 'DEPOSIT' AND NEW.idempotency_key NOT LIKE 'wallet-%')
    EXECUTE FUNCTION webhook_deposit();

CREATE FUNCTION webhook_safe_mode() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_events (id, type, network, actor, detail, occurred_at, created_at)
    VALUES (NEW.id,
            CASE NEW.action WHEN 'safe_mode.enter' THEN 'safe_mode.entered' ELSE 'safe_mode.left' END,
            substr(NEW.target, length('network:') + 1), NEW.actor, NEW.reason, NEW.at, webhook_now());
    RETURN NULL;
END $$;
CREATE TRIGGER audit_safe_mode_to_webhooks AFTER INSERT ON audit_log FOR EACH ROW
    WHEN (NEW.action IN ('safe_mode.enter', 'safe_mode.leave'))
    EXECUTE FUNCTION webhook_safe_mode();
