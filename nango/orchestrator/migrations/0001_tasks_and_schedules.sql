-- Tasks and the schedules that create them. State lists mirror nango/orchestrator/states.py.

CREATE TABLE schedules (
    id uuid PRIMARY KEY,
    name text NOT NULL CHECK (name <> ''),
    state text NOT NULL CHECK (state IN ('STARTED', 'PAUSED', 'DELETED')),
    starts_at timestamptz NOT NULL,
    frequency interval NOT NULL CHECK (frequency > interval '0'),
    payload jsonb NOT NULL,
    group_key text COLLATE "C" NOT NULL CHECK (group_key <> ''),
    group_max_concurrency integer NOT NULL CHECK (group_max_concurrency >= 0),
    retry_max integer NOT NULL CHECK (retry_max >= 0),
    created_to_started_timeout interval NOT NULL,
    started_to_completed_timeout interval NOT NULL,
    heartbeat_timeout interval NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    next_execution_at timestamptz NOT NULL,
    -- its state is read from tasks by a join, so it can never disagree with the task
    last_scheduled_task_id uuid
);

-- a deleted schedule frees its name
CREATE UNIQUE INDEX schedules_live_name_key ON schedules (name) WHERE state <> 'DELETED';
CREATE INDEX schedules_due_idx ON schedules (next_execution_at) WHERE state = 'STARTED';
CREATE INDEX schedules_last_task_idx ON schedules (last_scheduled_task_id) WHERE last_scheduled_task_id IS NOT NULL;

CREATE TABLE tasks (
    id uuid PRIMARY KEY,
    -- FIFO order within and across batches (created_at ties inside one transaction)
    seq bigint GENERATED ALWAYS AS IDENTITY,
    name text NOT NULL CHECK (name <> ''),
    payload jsonb NOT NULL,
    group_key text COLLATE "C" NOT NULL CHECK (group_key <> ''),
    group_max_concurrency integer NOT NULL CHECK (group_max_concurrency >= 0),
    retry_max integer NOT NULL CHECK (retry_max >= 0),
    retry_count integer NOT NULL CHECK (retry_count >= 0),
    retry_key uuid NOT NULL,
    owner_key text NOT NULL DEFAULT '',
    schedule_id uuid REFERENCES schedules (id),
    starts_after timestamptz NOT NULL,
    created_to_started_timeout interval NOT NULL CHECK (created_to_started_timeout > interval '0'),
    started_to_completed_timeout interval NOT NULL CHECK (started_to_completed_timeout > interval '0'),
    heartbeat_timeout interval NOT NULL CHECK (heartbeat_timeout > interval '0'),
    created_at timestamptz NOT NULL DEFAULT now(),
    state text NOT NULL CHECK (state IN ('CREATED', 'STARTED', 'SUCCEEDED', 'FAILED', 'EXPIRED', 'CANCELLED')),
    terminated boolean NOT NULL GENERATED ALWAYS AS (state IN ('SUCCEEDED', 'FAILED', 'EXPIRED', 'CANCELLED')) STORED,
    last_state_transition_at timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at timestamptz NOT NULL DEFAULT now(),
    -- the earliest deadline of the active state (NULL once terminated): one index serves all three timeouts
    expires_at timestamptz,
    output jsonb,
    CHECK ((expires_at IS NULL) = terminated)
);

ALTER TABLE schedules ADD CONSTRAINT schedules_last_task_fkey
    FOREIGN KEY (last_scheduled_task_id) REFERENCES tasks (id);

-- claiming, oldest first; partial, so finished history never slows a claim
CREATE INDEX tasks_waiting_idx ON tasks (seq) WHERE state = 'CREATED';
-- claiming by a group-key prefix, and the per-group backlog cap
CREATE INDEX tasks_waiting_group_idx ON tasks (group_key, seq) WHERE state = 'CREATED';
-- running tasks per group, for max concurrency
CREATE INDEX tasks_running_group_idx ON tasks (group_key) WHERE state = 'STARTED';
-- the expiry sweep
CREATE INDEX tasks_expires_idx ON tasks (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX tasks_retry_key_idx ON tasks (retry_key, retry_count);
CREATE INDEX tasks_schedule_idx ON tasks (schedule_id, seq) WHERE schedule_id IS NOT NULL;
-- the cleaning sweep
CREATE INDEX tasks_terminated_idx ON tasks (last_state_transition_at) WHERE terminated;
-- SearchTasks by group over history
CREATE INDEX tasks_group_idx ON tasks (group_key, seq);

-- Long-polls in every replica LISTEN on "<schema>.task_created" (payload: group key) and
-- "<schema>.task_terminated" (payload: id, retry key, group max concurrency, group key).
CREATE FUNCTION notify_task_created() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '.task_created', g.group_key)
    FROM (SELECT DISTINCT group_key FROM created) AS g;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_created_notify AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS created
    FOR EACH STATEMENT EXECUTE FUNCTION notify_task_created();

CREATE FUNCTION notify_task_terminated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(
        TG_TABLE_SCHEMA || '.task_terminated',
        concat_ws(' ', NEW.id, NEW.retry_key, NEW.group_max_concurrency, NEW.group_key)
    );
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_terminated_notify AFTER UPDATE OF state ON tasks
    FOR EACH ROW WHEN (NEW.terminated AND NOT OLD.terminated)
    EXECUTE FUNCTION notify_task_terminated();
