-- Canary payouts (1 unit from a canary wallet to the network's canary address) and their
-- outcome; and the configuration freeze an Admin sets for a launch window.
CREATE TABLE canary_runs (
    id          UUID   PRIMARY KEY,
    network     TEXT   NOT NULL,
    payout_id   UUID   NOT NULL REFERENCES payouts (id),
    started_by  TEXT   NOT NULL,
    started_at  BIGINT NOT NULL,
    result      TEXT   CHECK (result IN ('green', 'red')),
    reason      TEXT,
    finished_at BIGINT
);
CREATE INDEX canary_runs_network ON canary_runs (network, started_at);

CREATE TABLE config_freeze (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    reason TEXT    NOT NULL,
    actor  TEXT    NOT NULL,
    since  BIGINT  NOT NULL,
    until  BIGINT
);
