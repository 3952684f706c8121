-- Every partner account belongs to a company, and a company's users see and move only its
-- accounts; a webhook endpoint belongs to a company (its events only) or to staff (NULL: all). Existing partner accounts move to the company named like their owner: a company is
-- created (tier S, created by "migration") for each owner that has none. Operating, external,
-- fee and adjustment accounts (system and hot wallets) stay the operator's (NULL).
ALTER TABLE accounts ADD COLUMN company_id UUID REFERENCES companies (id);

INSERT INTO companies (id, name, tier, created_by, created_at)
SELECT gen_random_uuid(), owner, 'S', 'migration', (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT
FROM (SELECT DISTINCT owner FROM accounts WHERE kind = 'partner') AS owners
WHERE owner NOT IN (SELECT name FROM companies);

UPDATE accounts SET company_id = (SELECT c.id FROM companies c WHERE c.name = accounts.owner)
WHERE kind = 'partner';

CREATE INDEX accounts_company ON accounts (company_id) WHERE company_id IS NOT NULL;

ALTER TABLE webhook_endpoints ADD COLUMN company_id UUID REFERENCES companies (id);
