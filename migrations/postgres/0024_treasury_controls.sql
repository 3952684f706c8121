-- Treasury controls set at runtime over the configuration: a token's per-transaction cap, a
-- network's fee mode, a paused wallet. One row per control in force; clearing it deletes the
-- row (the audit log keeps the history).
CREATE TABLE treasury_controls (
    network  TEXT    NOT NULL,
    kind     TEXT    NOT NULL CHECK (kind IN ('per_tx_cap', 'fee_mode', 'wallet_pause')),
    target   TEXT    NOT NULL,
    value    TEXT    NOT NULL,
    actor    TEXT    NOT NULL,
    reason   TEXT    NOT NULL,
    incident UUID    REFERENCES incidents (id),
    at       BIGINT NOT NULL,
    PRIMARY KEY (network, kind, target)
);
