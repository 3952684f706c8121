-- Incidents recorded by on-call (SEV0 worst): the Go/No-Go report counts SEV0/SEV1.
CREATE TABLE incidents (
    id          UUID   PRIMARY KEY,
    severity    TEXT   NOT NULL CHECK (severity IN ('SEV0','SEV1','SEV2','SEV3')),
    summary     TEXT   NOT NULL,
    at          BIGINT NOT NULL,
    recorded_by TEXT   NOT NULL
);
CREATE INDEX incidents_at ON incidents (at);
