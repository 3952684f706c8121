-- An automatic safe-mode records what it saw (blocks, balances, the transfers it counted) as
-- JSON next to its reason, in the audit and in the webhook event the audit row raises.
ALTER TABLE audit_log ADD COLUMN evidence TEXT;
ALTER TABLE webhook_events ADD COLUMN evidence TEXT;

DROP TRIGGER audit_safe_mode_to_webhooks;
CREATE TRIGGER audit_safe_mode_to_webhooks AFTER INSERT ON audit_log
    WHEN NEW.action IN ('safe_mode.enter', 'safe_mode.leave')
BEGIN
    INSERT INTO webhook_events (id, type, network, actor, detail, evidence, occurred_at, created_at)
    VALUES (NEW.id,
            CASE NEW.action WHEN 'safe_mode.enter' THEN 'safe_mode.entered' ELSE 'safe_mode.left' END,
            substr(NEW.target, length('network:') + 1), NEW.actor, NEW.reason, NEW.evidence, NEW.at,
            CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER));
END;

-- Reconciliation reads the chunks settled from blocks after the one it compares at.
CREATE INDEX payout_chunks_mined_block ON payout_chunks (mined_block) WHERE mined_block IS NOT NULL;
