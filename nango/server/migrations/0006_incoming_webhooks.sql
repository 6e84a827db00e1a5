-- Incoming provider webhooks find their connections by a connection_config or metadata value
-- (e.g. GitHub App `installation_id`, HubSpot `portalId`), so these lookups must stay fast with
-- many connections per integration: containment (`@>`) on GIN indexes of the live rows.

CREATE INDEX connections_config_lookup ON connections USING gin (connection_config jsonb_path_ops)
    WHERE deleted_at IS NULL;
CREATE INDEX connections_metadata_lookup ON connections USING gin (metadata jsonb_path_ops)
    WHERE deleted_at IS NULL;
