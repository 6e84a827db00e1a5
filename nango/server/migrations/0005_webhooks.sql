-- Outgoing webhooks: where each environment's webhooks go, what they are sent for, the key that
-- signs them (sealed, like every secret), and the outbox that hands events to jobs durably.

-- One row per environment, created with it (or at the first start after this migration): an
-- environment is never without a signing key. The signing key is not the secret key.
CREATE TABLE environment_webhook_settings (
    environment_id              bigint PRIMARY KEY REFERENCES environments (id) ON DELETE CASCADE,
    primary_url                 text CHECK (length(primary_url) <= 2048),
    secondary_url               text CHECK (length(secondary_url) <= 2048),
    on_auth_creation            boolean NOT NULL DEFAULT true,
    on_auth_refresh_error       boolean NOT NULL DEFAULT true,
    on_sync_error               boolean NOT NULL DEFAULT true,
    on_sync_completion_always   boolean NOT NULL DEFAULT false,
    on_async_action_completion  boolean NOT NULL DEFAULT true,
    signing_key_sealed          text NOT NULL,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);

-- Events written in the transaction of the change they announce; the relay hands them to jobs
-- (kind 'delivery') or the orchestrator (kind 'task') and deletes a row only once that succeeded.
-- `item` is the item as JSON text (text, not jsonb: a forwarded provider body may hold \u0000).
CREATE TABLE webhook_outbox (
    id              bigserial PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('delivery', 'task')),
    environment_id  bigint NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    item            text NOT NULL,
    -- hand-overs refused for this row itself (not for an unreachable service), and when to try again
    attempts        integer NOT NULL DEFAULT 0,
    available_at    timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX webhook_outbox_due ON webhook_outbox (available_at, id);
