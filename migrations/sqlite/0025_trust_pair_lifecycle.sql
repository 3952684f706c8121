-- A session runs on the terms its pair had when it opened: a change of limits or mode takes
-- effect from the next session (a change of cut-off or time zone already does: each session
-- keeps the cut-off it opened with). Sessions opened before this read their pair's terms.
ALTER TABLE trust_sessions ADD COLUMN mode TEXT CHECK (mode IN ('full', 'partial', 't_plus_1'));
ALTER TABLE trust_sessions ADD COLUMN limit_a_to_b TEXT;
ALTER TABLE trust_sessions ADD COLUMN limit_b_to_a TEXT;

-- A suspended pair takes no new obligations; what it has closes and settles as usual.
ALTER TABLE trust_pairs ADD COLUMN suspended_by TEXT;
ALTER TABLE trust_pairs ADD COLUMN suspended_reason TEXT;
ALTER TABLE trust_pairs ADD COLUMN suspended_at INTEGER;
