-- Deployed functions and the per-connection syncs they run as.

CREATE TABLE functions (
    id                      uuid PRIMARY KEY,
    environment_id          bigint NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    integration_id          bigint NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    name                    text NOT NULL,
    type                    text NOT NULL CHECK (type IN ('sync', 'action', 'on-event')),
    version                 text NOT NULL,
    description             text NOT NULL DEFAULT '',
    bundle_key              text NOT NULL,
    bundle_sha256           text NOT NULL,
    module                  text NOT NULL,
    attribute               text NOT NULL,
    frequency               text,
    auto_start              boolean NOT NULL DEFAULT true,
    track_deletes           boolean NOT NULL DEFAULT false,
    models                  text[] NOT NULL DEFAULT '{}',
    models_json_schema      jsonb,
    input_json_schema       jsonb,
    output_json_schema      jsonb,
    webhook_subscriptions   text[] NOT NULL DEFAULT '{}',
    event                   text,
    scopes                  text[] NOT NULL DEFAULT '{}',
    reconcile_deletes       text,
    enabled                 boolean NOT NULL DEFAULT true,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX functions_by_name ON functions (integration_id, type, name);
CREATE INDEX functions_by_environment ON functions (environment_id);

-- One row per (connection, sync, variant): the sync's state for that connection. Its schedule lives
-- in the orchestrator under the name environment:<environment_id>:sync:<id>.
CREATE TABLE syncs (
    id              uuid PRIMARY KEY,
    environment_id  bigint NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    connection_id   bigint NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    function_id     uuid NOT NULL REFERENCES functions (id) ON DELETE CASCADE,
    name            text NOT NULL,
    variant         text NOT NULL DEFAULT 'base',
    -- a per-connection frequency override; NULL follows the function's
    frequency       text,
    last_sync_date  timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (connection_id, name, variant)
);

CREATE INDEX syncs_by_function ON syncs (function_id);
