-- One self-hosted account with its environments; secret keys are stored sealed (AES-256-GCM),
-- and found by the SHA-256 of the key.
CREATE TABLE accounts (
    id          bigserial PRIMARY KEY,
    uuid        uuid NOT NULL UNIQUE,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE environments (
    id                 bigserial PRIMARY KEY,
    account_id         bigint NOT NULL REFERENCES accounts (id),
    uuid               uuid NOT NULL UNIQUE,
    name               text NOT NULL,
    secret_key_hash    text NOT NULL UNIQUE,
    secret_key_sealed  text NOT NULL,
    public_key         uuid NOT NULL UNIQUE,
    is_production      boolean NOT NULL DEFAULT false,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, name)
);

CREATE TABLE environment_variables (
    environment_id  bigint NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    name            text NOT NULL,
    value_sealed    text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (environment_id, name)
);
