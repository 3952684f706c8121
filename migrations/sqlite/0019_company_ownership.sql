-- Every partner account belongs to a company, and a company's users see and move only its
-- accounts; a webhook endpoint belongs to a company (its events only) or to staff (NULL: all). Existing partner accounts move to the company named like their owner: a company is
-- created (tier S, created by "migration") for each owner that has none. Operating, external,
-- fee and adjustment accounts (system and hot wallets) stay the operator's (NULL).
ALTER TABLE accounts ADD COLUMN company_id BLOB REFERENCES companies (id);

INSERT INTO companies (id, name, tier, created_by, created_at)
SELECT randomblob(16), owner, 'S', 'migration', CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)
FROM (SELECT DISTINCT owner FROM accounts WHERE kind = 'partner')
WHERE owner NOT IN (SELECT name FROM companies);

UPDATE accounts SET company_id = (SELECT c.id FROM companies c WHERE c.name = accounts.owner)
WHERE kind = 'partner';

CREATE INDEX accounts_company ON accounts (company_id) WHERE company_id IS NOT NULL;

ALTER TABLE webhook_endpoints ADD COLUMN company_id BLOB REFERENCES companies (id);
