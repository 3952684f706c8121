-- A session lives only as long as the token it signed in with (its SHA-256); sessions from
-- before have none and end.
ALTER TABLE console_sessions ADD COLUMN token_sha256 BLOB NOT NULL DEFAULT X'';

-- A console session of a company's user (deeplinks open pages for them); NULL: staff.
ALTER TABLE console_sessions ADD COLUMN company_id BLOB REFERENCES companies (id);

-- Deeplinks minted: each opens its page at most once (`used_at`), only before `expires_at`.
CREATE TABLE deeplinks (
    jti        TEXT    PRIMARY KEY,
    target     TEXT    NOT NULL,
    company_id BLOB    REFERENCES companies (id),
    created_by TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_by    TEXT,
    used_at    INTEGER
) STRICT;

-- A company's policy: its users need a second factor in the console whatever their role
-- (seed 004: "активация 2FA"). On for every company unless an Admin turns it off.
ALTER TABLE companies ADD COLUMN second_factor INTEGER NOT NULL DEFAULT 1;
