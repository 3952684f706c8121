-- The pilot's scope flags, one row: which new deals are accepted. Lists are JSON arrays.
CREATE TABLE pilot_scope (
    id                 INTEGER PRIMARY KEY CHECK (id = 1),
    enabled            INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    country_allowlist  TEXT    NOT NULL,
    category_allowlist TEXT    NOT NULL,
    template_version   TEXT    NOT NULL,
    actor              TEXT    NOT NULL,
    reason             TEXT    NOT NULL,
    since              INTEGER NOT NULL
) STRICT;
