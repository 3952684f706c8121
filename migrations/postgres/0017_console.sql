-- The admin console: sessions (the cookie's SHA-256, never the cookie) and the TOTP second
-- factor of Admins and Approvers (the secret is derived from the console key and the enrolment
-- id; only the id is stored), with hashed one-time recovery codes.
CREATE TABLE console_sessions (
    id_hash    BYTEA   PRIMARY KEY,
    user_name  TEXT    NOT NULL,
    role       TEXT    NOT NULL,
    csrf       TEXT    NOT NULL,
    mfa_ok     BOOLEAN NOT NULL,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);

CREATE TABLE console_mfa (
    user_name      TEXT    PRIMARY KEY,
    enrolment      TEXT    NOT NULL,
    confirmed_at   BIGINT,
    last_step      BIGINT  NOT NULL DEFAULT 0,
    recovery_codes TEXT    NOT NULL DEFAULT '[]',
    created_at     BIGINT  NOT NULL
);
