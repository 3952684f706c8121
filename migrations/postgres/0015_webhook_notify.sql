-- Wakes the webhook deliverer (any instance) as soon as a transaction that wrote outbox events
-- commits, instead of at its next poll. Notifications are sent at commit and one per
-- transaction is enough.
CREATE FUNCTION webhook_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('treasuryd_webhook_events', '');
    RETURN NULL;
END $$;
CREATE TRIGGER webhook_events_notify AFTER INSERT ON webhook_events
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_events_notify();
