-- An automatic safe-mode records what it saw (blocks, balances, the transfers it counted) as
-- JSON next to its reason, in the audit and in the webhook event the audit row raises.
ALTER TABLE audit_log ADD COLUMN evidence TEXT;
ALTER TABLE webhook_events ADD COLUMN evidence TEXT;

CREATE OR REPLACE FUNCTION webhook_safe_mode() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_events (id, type, network, actor, detail, evidence, occurred_at, created_at)
    VALUES (NEW.id,
            CASE NEW.action WHEN 'safe_mode.enter' THEN 'safe_mode.entered' ELSE 'safe_mode.left' END,
            substr(NEW.target, length('network:') + 1), NEW.actor, NEW.reason, NEW.evidence, NEW.at,
            webhook_now());
    RETURN NULL;
END $$;

-- Reconciliation reads the chunks settled from blocks after the one it compares at.
CREATE INDEX payout_chunks_mined_block ON payout_chunks (mined_block) WHERE mined_block IS NOT NULL;
