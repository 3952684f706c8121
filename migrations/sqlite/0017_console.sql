-- The admin console: sessions (the cookie's SHA-256, never the cookie) and the TOTP second
-- factor of Admins and Approvers (the secret is derived from the console key and the enrolment
-- id; only the id is stored), with hashed one-time recovery codes.
CREATE TABLE console_sessions (
    id_hash    BLOB    PRIMARY KEY,
    user_name  TEXT    NOT NULL,
    role       TEXT    NOT NULL,
    csrf       TEXT    NOT NULL,
    mfa_ok     INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);

CREATE TABLE console_mfa (
    user_name      TEXT    PRIMARY KEY,
    enrolment      TEXT    NOT NULL,
    confirmed_at   INTEGER,
    last_step      INTEGER NOT NULL DEFAULT 0,
    recovery_codes TEXT    NOT NULL DEFAULT '[]',
    created_at     INTEGER NOT NULL
) STRICT;
