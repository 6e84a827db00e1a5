-- Reconcile passes (docs/functions.md, `reconcile_deletes`): a low-frequency listing of a model's ids
-- whose end soft-deletes the live records it did not see. Kept apart from records_seen, whose rows a
-- sync run's saves forget as soon as a newer run writes: a pass runs beside the sync's own runs.
--
-- One open pass per (connection, model); opening another replaces it. Records written after
-- `started_at` are never deleted by the pass (an incremental run may add them while it lists).
CREATE TABLE reconcile_passes (
    connection_id bigint NOT NULL,
    model text COLLATE "C" NOT NULL,
    pass_id text NOT NULL,
    started_at timestamptz NOT NULL,
    PRIMARY KEY (connection_id, model)
);

-- The ids a pass saw, one row per call (as records_seen).
CREATE TABLE reconcile_seen (
    connection_id bigint NOT NULL,
    model text COLLATE "C" NOT NULL,
    pass_id text NOT NULL,
    external_ids text[] COLLATE "C" NOT NULL
);

CREATE INDEX reconcile_seen_pass_idx ON reconcile_seen (connection_id, model, pass_id);
