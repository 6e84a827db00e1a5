-- Integrations, end users, connections and the short-lived state of auth flows.
-- Secrets (client secrets, credentials, flow verifiers) are stored sealed (nango.crypto); each
-- row's `uuid` is bound into its ciphertexts as associated data, so a sealed value moved to
-- another row does not open.

CREATE TABLE integrations (
    id                      bigserial PRIMARY KEY,
    uuid                    uuid NOT NULL UNIQUE,
    environment_id          bigint NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    unique_key              text NOT NULL,
    provider                text NOT NULL,
    display_name            text,
    client_id               text,
    client_secret_sealed    text,
    scopes                  text,
    app_link                text,
    webhook_secret_sealed   text,
    custom_sealed           text,
    integration_config      jsonb NOT NULL DEFAULT '{}',
    forward_webhooks        boolean NOT NULL DEFAULT true,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    UNIQUE (environment_id, unique_key)
);

CREATE TABLE end_users (
    id                          bigserial PRIMARY KEY,
    environment_id              bigint NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    end_user_id                 text NOT NULL,
    email                       text,
    display_name                text,
    organization_id             text,
    organization_display_name   text,
    tags                        jsonb,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (environment_id, end_user_id)
);

CREATE TABLE connections (
    id                      bigserial PRIMARY KEY,
    uuid                    uuid NOT NULL UNIQUE,
    environment_id          bigint NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    integration_id          bigint NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    connection_id           text NOT NULL,
    end_user_id             bigint REFERENCES end_users (id) ON DELETE SET NULL,
    tags                    jsonb NOT NULL DEFAULT '{}',
    connection_config       jsonb NOT NULL DEFAULT '{}',
    metadata                jsonb,
    auth_mode               text NOT NULL,
    credentials_sealed      text NOT NULL,
    credentials_expires_at  timestamptz,
    last_fetched_at         timestamptz,
    last_refresh_success    timestamptz,
    last_refresh_failure    timestamptz,
    refresh_attempts        integer,
    refresh_exhausted       boolean NOT NULL DEFAULT false,
    webhook_url_override    text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    deleted_at              timestamptz
);

CREATE UNIQUE INDEX connections_live_key ON connections (integration_id, connection_id) WHERE deleted_at IS NULL;
CREATE INDEX connections_by_environment ON connections (environment_id, created_at) WHERE deleted_at IS NULL;
CREATE INDEX connections_by_end_user ON connections (end_user_id) WHERE deleted_at IS NULL;
CREATE INDEX connections_deleted ON connections (deleted_at) WHERE deleted_at IS NOT NULL;
-- the refresh daemon looks for live connections whose credentials expire soon or were not used lately
CREATE INDEX connections_expiring ON connections (credentials_expires_at)
    WHERE deleted_at IS NULL AND refresh_exhausted = false;

-- Active problems of a connection, shown as `errors: [{type, log_id}]`.
CREATE TABLE connection_errors (
    connection_id   bigint NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    type            text NOT NULL,
    log_id          text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection_id, type)
);

CREATE TABLE connect_sessions (
    id                              bigserial PRIMARY KEY,
    uuid                            uuid NOT NULL UNIQUE,
    environment_id                  bigint NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    token_hash                      text NOT NULL UNIQUE,
    token_sealed                    text NOT NULL,
    end_user_id                     bigint REFERENCES end_users (id) ON DELETE CASCADE,
    allowed_integrations            text[],
    integrations_config_defaults    jsonb,
    overrides                       jsonb,
    webhook_url_override            text,
    tags                            jsonb,
    connection_id                   bigint REFERENCES connections (id) ON DELETE CASCADE,
    expires_at                      timestamptz NOT NULL,
    last_access_at                  timestamptz,
    created_at                      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX connect_sessions_expiry ON connect_sessions (expires_at);

-- One row per auth flow in progress; its id is the OAuth `state`, deleted when the callback uses it.
CREATE TABLE oauth_sessions (
    id                      uuid PRIMARY KEY,
    environment_id          bigint NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    integration_id          bigint NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    provider                text NOT NULL,
    auth_mode               text NOT NULL,
    connection_id           text NOT NULL,
    connect_session_id      bigint REFERENCES connect_sessions (id) ON DELETE SET NULL,
    callback_url            text NOT NULL,
    secrets_sealed          text NOT NULL,
    connection_config       jsonb NOT NULL DEFAULT '{}',
    webhook_url_override    text,
    ws_client_id            text,
    activity_log_id         text,
    created_at              timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX oauth_sessions_age ON oauth_sessions (created_at);
