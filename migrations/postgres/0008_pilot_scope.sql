-- The pilot's scope flags, one row: which new deals are accepted. Lists are JSON arrays.
CREATE TABLE pilot_scope (
    id                 INTEGER PRIMARY KEY CHECK (id = 1),
    enabled            BOOLEAN NOT NULL,
    country_allowlist  TEXT    NOT NULL,
    category_allowlist TEXT    NOT NULL,
    template_version   TEXT    NOT NULL,
    actor              TEXT    NOT NULL,
    reason             TEXT    NOT NULL,
    since              BIGINT  NOT NULL
);
