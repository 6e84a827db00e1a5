-- The records cache. One row per (connection, model, external id); the payload is sealed with the
-- platform's keys (AES-256-GCM, nango/persist/sealing.py), so the table never holds a readable payload.
--
-- Hash-partitioned by (connection_id, model) into 32 partitions: every query names both keys, so it
-- touches one partition and one small index, and a huge connection bloats (and vacuums) only its own
-- partition. Nango uses 256 for its cloud; on a 2-core box each extra partition costs catalog
-- entries, relcache memory per backend and planning time, and 32 already spreads load evenly.

CREATE TABLE records (
    connection_id bigint NOT NULL,
    -- 'Model' or 'Model::variant'
    model text COLLATE "C" NOT NULL,
    external_id text COLLATE "C" NOT NULL,
    -- second half of the read cursor; random, the external id is the identity
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    -- the payload's JSON, sealed; NULL once pruned
    data bytea,
    -- blake2b-128 of that JSON, for change detection without decrypting
    data_hash bytea NOT NULL,
    -- bytes of that JSON held in `data` (0 once pruned)
    size_bytes integer NOT NULL CHECK (size_bytes >= 0),
    -- size_bytes before the row's last write, NULL when that write created it: the upsert's RETURNING
    -- reads it back (RETURNING sees only new values) to classify rows and keep record_counts exact
    previous_size integer,
    created_at timestamptz NOT NULL,
    -- moves only when the content changes or the record is deleted; first half of the cursor
    updated_at timestamptz NOT NULL,
    deleted_at timestamptz,
    pruned_at timestamptz,
    sync_id uuid,
    PRIMARY KEY (connection_id, model, external_id)
) PARTITION BY HASH (connection_id, model);

DO $$
BEGIN
    FOR i IN 0..31 LOOP
        EXECUTE format(
            'CREATE TABLE records_p%s PARTITION OF records FOR VALUES WITH (MODULUS 32, REMAINDER %s)', i, i
        );
    END LOOP;
END
$$;

-- keyset pagination: (updated_at, id) > cursor within one (connection, model)
CREATE INDEX records_cursor_idx ON records (connection_id, model, updated_at, id);

-- Track-deletes: the ids each batch of a sync job (generation) carried, appended one row per batch.
-- An append costs one small row where marking 1,000 records as seen would rewrite 1,000 wide rows.
-- Only the newest generation of a model is kept (a save of generation G drops the older ones).
CREATE TABLE records_seen (
    connection_id bigint NOT NULL,
    model text COLLATE "C" NOT NULL,
    generation bigint NOT NULL,
    external_ids text[] COLLATE "C" NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX records_seen_generation_idx ON records_seen (connection_id, model, generation);

-- Kept up to date by every write, in the writing transaction: counting a million-row model on
-- each dashboard view would scan its whole index.
CREATE TABLE record_counts (
    connection_id bigint NOT NULL,
    model text COLLATE "C" NOT NULL,
    environment_id bigint NOT NULL,
    -- rows held, soft-deleted included (they are still served, as DELETED)
    count bigint NOT NULL DEFAULT 0,
    size_bytes bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- when the auto-pruning daemon last claimed this model (NULL: due)
    pruning_checked_at timestamptz,
    PRIMARY KEY (connection_id, model)
);

CREATE INDEX record_counts_environment_idx ON record_counts (environment_id, connection_id);
CREATE INDEX record_counts_pruning_idx ON record_counts (pruning_checked_at NULLS FIRST) WHERE size_bytes > 0;

CREATE TABLE checkpoints (
    connection_id bigint NOT NULL,
    key text COLLATE "C" NOT NULL,
    environment_id bigint NOT NULL,
    checkpoint jsonb NOT NULL,
    -- 1 on creation, +1 on every write or delete: the optimistic-concurrency token
    version bigint NOT NULL CHECK (version > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    PRIMARY KEY (connection_id, key)
);

CREATE TABLE locks (
    environment_id bigint NOT NULL,
    key text COLLATE "C" NOT NULL,
    owner text COLLATE "C" NOT NULL,
    expires_at timestamptz NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (environment_id, key)
);

CREATE INDEX locks_owner_idx ON locks (environment_id, owner);
CREATE INDEX locks_expires_idx ON locks (expires_at);
