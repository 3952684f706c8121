-- Partners' webhook endpoints. The signing secrets are kept to sign deliveries; the API shows
-- a secret only when it is created or rotated.
CREATE TABLE webhook_endpoints (
    id              BLOB    PRIMARY KEY,
    url             TEXT    NOT NULL,
    event_types     TEXT    NOT NULL,
    active          INTEGER NOT NULL,
    secret          TEXT    NOT NULL,
    previous_secret TEXT,
    previous_until  INTEGER,
    disabled_reason TEXT,
    created_by      TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
) STRICT;
