-- PostgreSQL wakes the webhook deliverer with NOTIFY (its 0015); SQLite has no such thing and the
-- deliverer polls. Kept so both databases carry the same migration numbers.
SELECT 1;
