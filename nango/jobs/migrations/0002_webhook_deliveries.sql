-- Outgoing webhooks to deliver: one row per (event, URL), sent until a 2xx answer or until it fails
-- for good. Rows are claimed with FOR UPDATE SKIP LOCKED, so any number of jobs replicas share them.

CREATE TABLE webhook_deliveries (
    id bigserial PRIMARY KEY,
    -- sent as X-Nango-Delivery-Id: the same for every attempt and for every URL of the event
    event_id text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 255),
    url text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    environment_id bigint NOT NULL,
    type text NOT NULL CHECK (type IN ('auth', 'sync', 'forward', 'async_action')),
    -- the body exactly as it is sent (stable-stringified JSON); signed at send time with the current key
    body text NOT NULL,
    -- forwarded provider headers (type forward)
    headers jsonb NOT NULL DEFAULT '{}',
    connection_id text NOT NULL DEFAULT '',
    provider_config_key text NOT NULL DEFAULT '',
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    -- attempts used (postponing for an open circuit or an unreachable server uses none)
    attempts integer NOT NULL DEFAULT 0,
    -- pending: when the row may be claimed next; a claimed row's lease ends here, so the rows of a
    -- replica that died come back by themselves
    due_at timestamptz NOT NULL DEFAULT now(),
    -- the claim holding the row (NULL when free); a result is recorded only under its own claim
    claim uuid,
    last_status integer,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    UNIQUE (event_id, url),
    CHECK ((state = 'pending') = (finished_at IS NULL))
);

-- the claim query walks only pending rows, in due order, whatever the history
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (due_at, id) WHERE state = 'pending';
-- waking a URL's postponed rows when its circuit closes
CREATE INDEX webhook_deliveries_pending_url ON webhook_deliveries (url) WHERE state = 'pending';
-- retention
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (finished_at) WHERE state <> 'pending';
