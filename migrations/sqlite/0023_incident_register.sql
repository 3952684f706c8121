-- The incident register: an incident is opened, updated along a timeline of notes and
-- resolved, and names what it touched. Incidents recorded before the register were records of
-- the past: they count as resolved when they were recorded.
ALTER TABLE incidents ADD COLUMN status TEXT NOT NULL DEFAULT 'open'
    CHECK (status IN ('open', 'mitigated', 'resolved'));
ALTER TABLE incidents ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE incidents ADD COLUMN resolved_at INTEGER;
UPDATE incidents SET status = 'resolved', updated_at = at, resolved_at = at;
CREATE INDEX incidents_status ON incidents (status, severity);

CREATE TABLE incident_notes (
    id       BLOB    PRIMARY KEY,
    incident BLOB    NOT NULL REFERENCES incidents (id),
    at       INTEGER NOT NULL,
    author   TEXT    NOT NULL,
    note     TEXT    NOT NULL,
    -- The status or severity the note set, when it changed one.
    status   TEXT    CHECK (status IN ('open', 'mitigated', 'resolved')),
    severity TEXT    CHECK (severity IN ('SEV0', 'SEV1', 'SEV2', 'SEV3'))
) STRICT;
CREATE INDEX incident_notes_incident ON incident_notes (incident, at);

CREATE TABLE incident_links (
    incident BLOB NOT NULL REFERENCES incidents (id),
    kind     TEXT NOT NULL CHECK (kind IN ('payout', 'deal', 'network', 'wallet')),
    target   TEXT NOT NULL,
    PRIMARY KEY (incident, kind, target)
) STRICT;
