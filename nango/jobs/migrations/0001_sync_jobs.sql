-- Sync-job history, and the tasks jobs dispatched with the result reported for each.

CREATE TABLE sync_jobs (
    -- also the run's track-deletes generation in persist: a positive integer that only grows
    id bigserial PRIMARY KEY,
    sync_id uuid NOT NULL,
    task_id uuid NOT NULL UNIQUE,
    environment_id bigint NOT NULL,
    nango_connection_id bigint NOT NULL,
    type text NOT NULL CHECK (type IN ('FULL', 'INCREMENTAL', 'WEBHOOK')),
    status text NOT NULL DEFAULT 'RUNNING' CHECK (status IN ('RUNNING', 'SUCCESS', 'ERROR', 'STOPPED')),
    -- {"<model>": {"added": n, "updated": n, "deleted": n}}
    results jsonb NOT NULL DEFAULT '{}',
    -- {"type", "message", "payload", "status", "upstream"} when status is ERROR or STOPPED
    error jsonb,
    started_at timestamptz NOT NULL DEFAULT now(),
    ended_at timestamptz,
    CHECK ((status = 'RUNNING') = (ended_at IS NULL))
);

-- the latest job of a sync: ORDER BY id DESC within one sync_id
CREATE INDEX sync_jobs_sync_latest ON sync_jobs (sync_id, id DESC);
CREATE INDEX sync_jobs_running ON sync_jobs (id) WHERE status = 'RUNNING';
CREATE INDEX sync_jobs_ended ON sync_jobs (ended_at) WHERE status <> 'RUNNING';

CREATE TABLE dispatched_tasks (
    task_id uuid PRIMARY KEY,
    type text NOT NULL CHECK (type IN ('sync', 'action', 'webhook', 'on-event')),
    environment_id bigint NOT NULL,
    nango_connection_id bigint NOT NULL,
    -- the task's arguments as jobs read them (docs/functions.md)
    args jsonb NOT NULL,
    sync_job_id bigint REFERENCES sync_jobs (id) ON DELETE SET NULL,
    dispatched_at timestamptz NOT NULL DEFAULT now(),
    -- the first result reported (or decided, for a task lost to expiry); later reports are ignored
    result jsonb,
    reported_at timestamptz,
    -- every consequence of the result applied: orchestrator, sync job, server, completion event
    settled_at timestamptz,
    CHECK ((result IS NULL) = (reported_at IS NULL)),
    CHECK (settled_at IS NULL OR result IS NOT NULL)
);

CREATE INDEX dispatched_tasks_unsettled ON dispatched_tasks (dispatched_at) WHERE settled_at IS NULL;
CREATE INDEX dispatched_tasks_settled ON dispatched_tasks (settled_at) WHERE settled_at IS NOT NULL;
