-- The operations log kept in Postgres when NANGO_LOGS_ENABLED is not true.
-- No foreign key from messages to operations: services write each side through their own batching
-- writers, so a message may land before its operation.

CREATE TABLE operations (
    id uuid PRIMARY KEY,
    type text NOT NULL CHECK (type IN ('sync', 'action', 'proxy', 'auth', 'webhook', 'events', 'deploy', 'function', 'admin')),
    action text NOT NULL,
    state text NOT NULL CHECK (state IN ('waiting', 'running', 'success', 'failed', 'timeout', 'cancelled')),
    level text NOT NULL CHECK (level IN ('debug', 'info', 'warn', 'error')),
    environment_id bigint,
    provider_config_key text,
    provider text,
    connection_id text,
    nango_connection_id bigint,
    function_name text,
    job_id text,
    end_user_id text,
    error jsonb,
    request jsonb,
    response jsonb,
    meta jsonb,
    created_at timestamptz NOT NULL,
    started_at timestamptz,
    ended_at timestamptz,
    expires_at timestamptz
);

-- Search is keyset-paginated on (created_at, id) within an environment; type and state are
-- low-cardinality and filtered on the way, integration and connection get their own index.
CREATE INDEX operations_environment_created ON operations (environment_id, created_at DESC, id DESC);
CREATE INDEX operations_environment_integration_created
    ON operations (environment_id, provider_config_key, created_at DESC, id DESC);
CREATE INDEX operations_environment_connection_created
    ON operations (environment_id, connection_id, created_at DESC, id DESC);
-- The timeout sweep only ever looks at open operations.
CREATE INDEX operations_open_expires ON operations (expires_at) WHERE state IN ('waiting', 'running');
-- Retention.
CREATE INDEX operations_created ON operations (created_at);

CREATE TABLE messages (
    id uuid PRIMARY KEY,
    -- Keeps lines written in the same microsecond in the order they were written.
    seq bigint GENERATED ALWAYS AS IDENTITY,
    operation_id uuid NOT NULL,
    created_at timestamptz NOT NULL,
    level text NOT NULL CHECK (level IN ('debug', 'info', 'warn', 'error')),
    source text NOT NULL CHECK (source IN ('internal', 'user')),
    type text NOT NULL CHECK (type IN ('log', 'http')),
    message text NOT NULL,
    error jsonb,
    request jsonb,
    response jsonb,
    retry jsonb,
    meta jsonb,
    ended_at timestamptz
);

CREATE INDEX messages_operation_created ON messages (operation_id, created_at, seq);
CREATE INDEX messages_created ON messages (created_at);
