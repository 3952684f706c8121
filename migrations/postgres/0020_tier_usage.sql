-- A company's payouts in the current month, read under the company's lock when a payout's
-- tier quota is checked (`company_usage`).
CREATE INDEX payouts_account_created ON payouts (account_id, created_at);
