"""`POST /webhook/{environmentUuid}/{providerConfigKey}` on an in-process server (reference §7.1).

Providers' requests are signed here the way each provider documents it (GitHub: X-Hub-Signature-256;
Slack: v0 signing secret; HubSpot: v3; Stripe: Stripe-Signature), never with the server's own code.
What the server accepted is read back from its outbox (jobs and the orchestrator are not running, so
the rows stay there): the forward deliveries and webhook tasks of the matched connection and of no
other, nothing at all for a refused request, and never a 500.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest

from nango.crypto import generate_key
from tests.support.inprocess import InProcessServer, new_schema, server_env, start_server
from tests.support.services import add_function

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PUBLIC_URL = "https://nango.example"
CUSTOMER_URL = "https://customer.example/hooks"
OVERRIDE_URL = "https://override.example/hooks"
GITHUB_SECRET = "gh-app-webhook-secret"
GITHUB_OAUTH_SECRET = "gh-repo-hook-secret"
SLACK_SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
HUBSPOT_CLIENT_SECRET = "hubspot-client-secret"
STRIPE_SECRET = "whsec_test_secret"
# only its shape is checked when the integration is created; nothing signs with it here
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9\n-----END RSA PRIVATE KEY-----"


# ---- signing, as each provider documents it


def github_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def slack_headers(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    basestring = f"v0:{ts}:".encode() + body
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": "v0=" + hmac.new(secret.encode(), basestring, hashlib.sha256).hexdigest(),
    }


def hubspot_v3_headers(secret: str, method: str, uri: str, body: bytes, timestamp_ms: int) -> dict[str, str]:
    source = f"{method}{uri}".encode() + body + str(timestamp_ms).encode()
    digest = hmac.new(secret.encode(), source, hashlib.sha256).digest()
    return {
        "X-HubSpot-Signature-v3": base64.b64encode(digest).decode(),
        "X-HubSpot-Request-Timestamp": str(timestamp_ms),
    }


def stripe_header(secret: str, body: bytes, t: int) -> str:
    return f"t={t},v1=" + hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


@dataclass
class Stack:
    server: InProcessServer
    pool: asyncpg.Pool
    http: aiohttp.ClientSession
    key: str
    environment_id: int
    environment_uuid: str
    # connection id -> connections.id
    rows: dict[str, int]
    # (connection id, function name) -> sync id
    syncs: dict[tuple[str, str], str]

    async def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.key}"}
        async with self.http.request(method, self.server.url + path, json=body, headers=headers) as response:
            return response.status, await response.json(content_type=None)

    def path(self, key: str, environment_uuid: str | None = None) -> str:
        return f"/webhook/{environment_uuid or self.environment_uuid}/{key}"

    async def post(
        self,
        path: str,
        body: bytes,
        headers: dict[str, str] | None = None,
        content_type: str | None = "application/json",
    ) -> tuple[int, Any]:
        sent = dict(headers or {})
        if content_type is not None:
            sent["Content-Type"] = content_type
        async with self.http.post(self.server.url + path, data=body, headers=sent) as response:
            text = await response.text()
            return response.status, (json.loads(text) if text else None)

    async def github_app(self, payload: Any, event: str = "issues", key: str = "gh-app") -> tuple[int, Any]:
        body = json.dumps(payload).encode()
        headers = {
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": github_signature(GITHUB_SECRET, body),
            "User-Agent": "GitHub-Hookshot/abc",
        }
        return await self.post(self.path(key), body, headers)

    async def stored(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(forward deliveries, tasks) in the outbox (auth webhooks of connections made here are not ours)."""
        rows = await self.pool.fetch("SELECT kind, item FROM webhook_outbox ORDER BY id")
        deliveries = [json.loads(r["item"]) for r in rows if r["kind"] == "delivery"]
        deliveries = [d for d in deliveries if d["type"] != "auth"]
        tasks = [json.loads(r["item"]) for r in rows if r["kind"] == "task"]
        return deliveries, tasks


async def _connection(stack: Stack, key: str, connection_id: str, config: dict[str, Any], **extra: Any) -> None:
    """A connection as a completed auth flow leaves it (imported through the API where it can be)."""
    body = {
        "provider_config_key": key,
        "connection_id": connection_id,
        "connection_config": config,
        "credentials": {"type": "OAUTH2", "access_token": "t"},
        **extra,
    }
    status, answer = await stack.api("POST", "/connections", body)
    assert status == 201, answer


async def _app_connection(stack: Stack, key: str, connection_id: str, installation_id: str, **extra: Any) -> int:
    """GitHub App connections: importing one asks GitHub for a token, so the row is written as the flow would."""
    row_id = await stack.pool.fetchval(
        """INSERT INTO connections (uuid, environment_id, integration_id, connection_id, connection_config, auth_mode,
               credentials_sealed, webhook_url_override)
           SELECT $1, environment_id, id, $3, $4::jsonb, 'APP', 'unused', $5 FROM integrations
           WHERE environment_id = $2 AND unique_key = $6 RETURNING id""",
        uuid.uuid4(),
        stack.environment_id,
        connection_id,
        json.dumps({"installation_id": installation_id, "app_id": "42"}),
        extra.get("webhook_url_override"),
        key,
    )
    return int(row_id)


async def _sync(stack: Stack, key: str, function: str, connection_id: str) -> None:
    function_id = await stack.pool.fetchval(
        """SELECT f.id FROM functions f JOIN integrations i ON i.id = f.integration_id
           WHERE i.unique_key = $1 AND f.name = $2""",
        key,
        function,
    )
    sync_id = uuid.uuid4()
    await stack.pool.execute(
        "INSERT INTO syncs (id, environment_id, connection_id, function_id, name) VALUES ($1, $2, $3, $4, $5)",
        sync_id,
        stack.environment_id,
        stack.rows[connection_id],
        function_id,
        function,
    )
    stack.syncs[(connection_id, function)] = str(sync_id)


@pytest.fixture(scope="module")
async def stack(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    schema = new_schema("nango_webhooks_in")
    dev = str(uuid.uuid4())
    server = await start_server(
        server_env(
            database_url,
            schema,
            tmp_path_factory.mktemp("webhooks-in"),
            NANGO_ENCRYPTION_KEY=generate_key(),
            NANGO_SECRET_KEY_DEV=dev,
            NANGO_SERVER_URL=PUBLIC_URL,
            # nothing listens here: accepted webhooks stay in the outbox, where the tests read them
            JOBS_SERVICE_URL="127.0.0.1:9",
            ORCHESTRATOR_SERVICE_URL="127.0.0.1:9",
            PERSIST_SERVICE_URL="127.0.0.1:9",
            RUNNER_SERVICE_URL="127.0.0.1:9",
            LOG_LEVEL="warning",
        )
    )
    pool = await asyncpg.create_pool(database_url, server_settings={"search_path": schema})
    environment = await pool.fetchrow("SELECT id, uuid FROM environments WHERE name = 'dev'")
    async with aiohttp.ClientSession() as http:
        stack = Stack(server, pool, http, dev, environment["id"], str(environment["uuid"]), {}, {})
        try:
            await _populate(stack)
            yield stack
        finally:
            await pool.close()
            await server.stop()


async def _populate(stack: Stack) -> None:
    status, answer = await stack.api("PATCH", "/environment/webhook-settings", {"primary_url": CUSTOMER_URL})
    assert status == 200, answer
    app = {"type": "APP", "app_id": "42", "app_link": "https://github.com/apps/acme", "private_key": PEM}
    integrations: list[dict[str, Any]] = [
        {
            "provider": "github-app",
            "unique_key": "gh-app",
            "credentials": app,
            "custom": {"webhookSecret": GITHUB_SECRET},
        },
        {
            "provider": "github-app",
            "unique_key": "gh-quiet",
            "credentials": app,
            "custom": {"webhookSecret": GITHUB_SECRET},
            "forward_webhooks": False,
        },
        {
            "provider": "github",
            "unique_key": "gh",
            "credentials": {
                "type": "OAUTH2",
                "client_id": "c",
                "client_secret": "s",
                "webhook_secret": GITHUB_OAUTH_SECRET,
            },
        },
        {
            "provider": "slack",
            "unique_key": "slack",
            "credentials": {
                "type": "OAUTH2",
                "client_id": "c",
                "client_secret": "s",
                "webhook_secret": SLACK_SIGNING_SECRET,
            },
        },
        {
            "provider": "hubspot",
            "unique_key": "hubspot",
            "credentials": {"type": "OAUTH2", "client_id": "c", "client_secret": HUBSPOT_CLIENT_SECRET},
        },
        {"provider": "stripe", "unique_key": "stripe", "custom": {"webhookSecret": STRIPE_SECRET}},
        {"provider": "resend", "unique_key": "no-router"},
    ]
    for body in integrations:
        status, answer = await stack.api("POST", "/integrations", body)
        assert status == 200, answer
    for connection_id, installation in (("inst-101", "101"), ("inst-102", "102"), ("inst-103", "103")):
        extra = {"webhook_url_override": OVERRIDE_URL} if connection_id == "inst-103" else {}
        stack.rows[connection_id] = await _app_connection(stack, "gh-app", connection_id, installation, **extra)
    stack.rows["quiet-201"] = await _app_connection(stack, "gh-quiet", "quiet-201", "201")
    await _connection(stack, "gh", "acme", {})
    for team in ("T1", "T2"):
        await _connection(stack, "slack", f"slack-{team}", {"team.id": team})
    await _connection(stack, "hubspot", "portal-1", {"portalId": "1"})
    await _connection(stack, "hubspot", "portal-2", {"portalId": 2})
    subscriptions = {"issues-sync": ["issues"], "push-sync": ["push"], "everything-sync": ["*"]}
    for name, events in subscriptions.items():
        await add_function(stack.pool, stack.environment_id, "gh-app", name, "sync")
        await stack.pool.execute("UPDATE functions SET webhook_subscriptions = $1 WHERE name = $2", events, name)
    await add_function(stack.pool, stack.environment_id, "gh-app", "no-webhooks-sync", "sync")
    await add_function(stack.pool, stack.environment_id, "gh-quiet", "quiet-sync", "sync")
    await stack.pool.execute("UPDATE functions SET webhook_subscriptions = '{*}' WHERE name = 'quiet-sync'")
    for connection_id, function in (
        ("inst-101", "issues-sync"),
        ("inst-102", "issues-sync"),
        ("inst-102", "push-sync"),
        ("inst-102", "no-webhooks-sync"),
        ("inst-103", "everything-sync"),
        ("quiet-201", "quiet-sync"),
    ):
        await _sync(stack, "gh-app" if connection_id != "quiet-201" else "gh-quiet", function, connection_id)


@pytest.fixture(autouse=True)
async def empty_outbox(stack: Stack) -> None:
    await stack.pool.execute("DELETE FROM webhook_outbox")


# ---- routing


async def test_a_github_app_webhook_reaches_its_installation_and_no_other(stack: Stack) -> None:
    payload = {"action": "opened", "installation": {"id": 102}, "issue": {"number": 7, "title": "bug"}}
    status, answer = await stack.github_app(payload, event="issues")
    assert (status, answer) == (200, {"status": "success"})
    deliveries, tasks = await stack.stored()
    (delivery,) = deliveries
    assert delivery["type"] == "forward"
    assert delivery["connection_id"] == "inst-102"
    assert delivery["provider_config_key"] == "gh-app"
    assert delivery["urls"] == [CUSTOMER_URL]
    assert delivery["body"] == {
        "from": "github-app",
        "type": "forward",
        "connectionId": "inst-102",
        "providerConfigKey": "gh-app",
        "payload": payload,
    }
    headers = delivery["headers"]
    assert headers["x-github-event"] == "issues"
    assert headers["x-hub-signature-256"].startswith("sha256=")
    assert not {"host", "content-type", "content-length", "user-agent"} & set(headers)
    (task,) = tasks
    assert task["group_key"] == f"webhook:environment:{stack.environment_id}"
    assert task["args"] == {
        "type": "webhook",
        "environment_id": stack.environment_id,
        "nango_connection_id": stack.rows["inst-102"],
        "connection_id": "inst-102",
        "provider_config_key": "gh-app",
        "function": "issues-sync",
        "sync_id": stack.syncs[("inst-102", "issues-sync")],
        "variant": "base",
        "full": False,
        "empty_cache": False,
        "input": payload,
    }


@pytest.mark.parametrize(
    ("installation", "event", "functions"),
    [
        (102, "push", ["push-sync"]),
        (101, "issues", ["issues-sync"]),
        (101, "push", []),
        (103, "star", ["everything-sync"]),
        (102, "star", []),
    ],
)
async def test_webhook_tasks_are_created_only_for_subscribed_syncs(
    stack: Stack, installation: int, event: str, functions: list[str]
) -> None:
    status, _ = await stack.github_app({"installation": {"id": installation}}, event=event)
    assert status == 200
    deliveries, tasks = await stack.stored()
    connection_id = f"inst-{installation}"
    assert [(t["args"]["connection_id"], t["args"]["function"]) for t in tasks] == [
        (connection_id, f) for f in functions
    ]
    assert [t["args"]["sync_id"] for t in tasks] == [stack.syncs[(connection_id, f)] for f in functions]
    assert [d["connection_id"] for d in deliveries] == [connection_id]


async def test_a_connection_override_replaces_the_environment_urls(stack: Stack) -> None:
    status, _ = await stack.github_app({"installation": {"id": 103}}, event="star")
    assert status == 200
    deliveries, _ = await stack.stored()
    assert [(d["connection_id"], d["urls"]) for d in deliveries] == [("inst-103", [OVERRIDE_URL])]


async def test_a_webhook_for_no_known_connection_is_forwarded_unwrapped(stack: Stack) -> None:
    payload = {"action": "created", "installation": {"id": 999}}
    status, _ = await stack.github_app(payload, event="installation")
    assert status == 200
    deliveries, tasks = await stack.stored()
    (delivery,) = deliveries
    assert delivery["body"] == payload
    assert delivery["connection_id"] == ""
    assert delivery["urls"] == [CUSTOMER_URL]
    assert tasks == []


async def test_nothing_is_forwarded_when_the_integration_does_not_forward(stack: Stack) -> None:
    status, _ = await stack.github_app({"installation": {"id": 201}}, event="push", key="gh-quiet")
    assert status == 200
    deliveries, tasks = await stack.stored()
    assert deliveries == []
    assert [(t["args"]["connection_id"], t["args"]["function"]) for t in tasks] == [("quiet-201", "quiet-sync")]


async def test_turning_forwarding_off_takes_effect_at_once(stack: Stack) -> None:
    status, answer = await stack.api("PATCH", "/integrations/gh-app", {"forward_webhooks": False})
    assert status == 200, answer
    try:
        status, _ = await stack.github_app({"installation": {"id": 101}}, event="push")
        assert status == 200
        assert await stack.stored() == ([], [])
    finally:
        status, answer = await stack.api("PATCH", "/integrations/gh-app", {"forward_webhooks": True})
        assert status == 200, answer


async def test_a_github_repository_hook_is_routed_by_its_connection_id_parameter(stack: Stack) -> None:
    body = json.dumps({"ref": "refs/heads/main", "repository": {"full_name": "acme/app"}}).encode()
    headers = {"X-GitHub-Event": "push", "X-Hub-Signature-256": github_signature(GITHUB_OAUTH_SECRET, body)}
    status, _ = await stack.post(stack.path("gh") + "?connectionId=acme&other=dropped", body, headers)
    assert status == 200
    deliveries, _ = await stack.stored()
    assert [(d["connection_id"], d["body"]["connectionId"]) for d in deliveries] == [("acme", "acme")]


async def test_a_bad_signature_is_refused_and_nothing_happens(stack: Stack) -> None:
    body = json.dumps({"installation": {"id": 102}}).encode()
    for signature in (github_signature("not the secret", body), "sha256=", None):
        headers = {"X-GitHub-Event": "issues"}
        if signature is not None:
            headers["X-Hub-Signature-256"] = signature
        status, answer = await stack.post(stack.path("gh-app"), body, headers)
        assert status == 401, answer
        assert answer["error"]["code"] == "invalid_signature"
        assert GITHUB_SECRET not in json.dumps(answer)
    assert await stack.stored() == ([], [])


# ---- Slack


async def test_a_slack_event_reaches_its_workspace(stack: Stack) -> None:
    payload = {"type": "event_callback", "team_id": "T2", "event": {"type": "message", "text": "hello"}}
    body = json.dumps(payload).encode()
    status, answer = await stack.post(stack.path("slack"), body, slack_headers(SLACK_SIGNING_SECRET, body))
    assert (status, answer) == (200, {"status": "success"})
    deliveries, _ = await stack.stored()
    assert [(d["connection_id"], d["body"]["payload"]) for d in deliveries] == [("slack-T2", payload)]


async def test_slack_url_verification_gets_its_challenge_and_nothing_is_stored(stack: Stack) -> None:
    payload = {
        "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
        "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3",
        "type": "url_verification",
    }
    body = json.dumps(payload).encode()
    status, answer = await stack.post(stack.path("slack"), body, slack_headers(SLACK_SIGNING_SECRET, body))
    assert (status, answer) == (200, {"challenge": payload["challenge"]})
    assert await stack.stored() == ([], [])


async def test_a_new_connection_is_routed_to_at_once(stack: Stack) -> None:
    payload = {"type": "event_callback", "team_id": "T3", "event": {"type": "message"}}
    body = json.dumps(payload).encode()
    status, _ = await stack.post(stack.path("slack"), body, slack_headers(SLACK_SIGNING_SECRET, body))
    assert status == 200
    deliveries, _ = await stack.stored()
    assert [d["connection_id"] for d in deliveries] == [""]
    await stack.pool.execute("DELETE FROM webhook_outbox")
    await _connection(stack, "slack", "slack-T3", {"team.id": "T3"})
    status, _ = await stack.post(stack.path("slack"), body, slack_headers(SLACK_SIGNING_SECRET, body))
    assert status == 200
    deliveries, _ = await stack.stored()
    assert [d["connection_id"] for d in deliveries] == ["slack-T3"]


# ---- replays


async def test_replayed_requests_are_refused(stack: Stack) -> None:
    old = int(time.time()) - 600
    slack_body = json.dumps({"type": "event_callback", "team_id": "T1", "event": {"type": "message"}}).encode()
    hubspot_body = json.dumps([{"portalId": 1, "subscriptionType": "contact.creation", "objectId": 1}]).encode()
    hubspot_path = stack.path("hubspot")
    stripe_body = json.dumps({"id": "evt_1", "type": "invoice.paid"}).encode()
    attempts = [
        (stack.path("slack"), slack_body, slack_headers(SLACK_SIGNING_SECRET, slack_body, old)),
        (
            hubspot_path,
            hubspot_body,
            hubspot_v3_headers(HUBSPOT_CLIENT_SECRET, "POST", PUBLIC_URL + hubspot_path, hubspot_body, old * 1000),
        ),
        (stack.path("stripe"), stripe_body, {"Stripe-Signature": stripe_header(STRIPE_SECRET, stripe_body, old)}),
    ]
    for path, body, headers in attempts:
        status, answer = await stack.post(path, body, headers)
        assert status == 401, (path, answer)
        assert answer["error"]["code"] == "invalid_signature"
    assert await stack.stored() == ([], [])


async def test_fresh_hubspot_and_stripe_requests_are_accepted(stack: Stack) -> None:
    now = int(time.time())
    hubspot_body = json.dumps(
        [
            {"portalId": 1, "subscriptionType": "contact.creation", "objectId": 1},
            {"portalId": 2, "subscriptionType": "deal.creation", "objectId": 2},
        ]
    ).encode()
    path = stack.path("hubspot")
    headers = hubspot_v3_headers(HUBSPOT_CLIENT_SECRET, "POST", PUBLIC_URL + path, hubspot_body, now * 1000)
    status, answer = await stack.post(path, hubspot_body, headers)
    assert status == 200, answer
    stripe_body = json.dumps({"id": "evt_2", "type": "invoice.paid", "account": "acct_nobody"}).encode()
    status, answer = await stack.post(
        stack.path("stripe"), stripe_body, {"Stripe-Signature": stripe_header(STRIPE_SECRET, stripe_body, now)}
    )
    assert status == 200, answer
    deliveries, _ = await stack.stored()
    assert [d["connection_id"] for d in deliveries] == ["portal-1", "portal-2", ""]


# ---- bad input


def _valid_github_body() -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"installation": {"id": 102}}).encode()
    return body, {"X-GitHub-Event": "issues", "X-Hub-Signature-256": github_signature(GITHUB_SECRET, body)}


def _signed(body: bytes) -> dict[str, str]:
    return {"X-GitHub-Event": "issues", "X-Hub-Signature-256": github_signature(GITHUB_SECRET, body)}


@pytest.mark.parametrize(
    ("case", "expected_status", "expected_code"),
    [
        ("unknown environment", 404, "unknown_environment"),
        ("environment that is not a uuid", 404, "unknown_environment"),
        ("unknown integration", 404, "unknown_provider_config"),
        ("malformed JSON", 400, "invalid_json"),
        ("NaN in JSON", 400, "invalid_json"),
        ("number too large for JSON", 400, "invalid_json"),
        ("deeply nested JSON", 400, "invalid_json"),
        ("unpaired surrogate", 400, "invalid_json"),
        ("XML body", 415, "invalid_content_type"),
        ("multipart body", 415, "invalid_content_type"),
        ("JSON array for an object provider", 400, "invalid_body"),
        ("empty body, no provider header", 204, None),
        ("provider without a router", 204, None),
        ("GET instead of POST", 405, "method_not_allowed"),
    ],
)
async def test_bad_input_gets_its_answer_and_stores_nothing(
    stack: Stack, case: str, expected_status: int, expected_code: str | None
) -> None:
    body, headers = _valid_github_body()
    path, content_type, method = stack.path("gh-app"), "application/json", "POST"
    if case == "unknown environment":
        path = stack.path("gh-app", str(uuid.uuid4()))
    elif case == "environment that is not a uuid":
        path = "/webhook/not-a-uuid/gh-app"
    elif case == "unknown integration":
        path = stack.path("nope")
    elif case == "malformed JSON":
        body = b'{"installation": {"id": 102'
    elif case == "NaN in JSON":
        body = b'{"installation": {"id": NaN}}'
    elif case == "number too large for JSON":
        body = b'{"installation": {"id": 102}, "amount": 1e400}'
    elif case == "deeply nested JSON":
        body = b"[" * 100_000 + b"]" * 100_000
    elif case == "unpaired surrogate":
        body = b'{"installation": {"id": 102}, "title": "\\ud800"}'
    elif case == "XML body":
        body, content_type = b"<installation><id>102</id></installation>", "application/xml"
    elif case == "multipart body":
        content_type = "multipart/form-data; boundary=x"
    elif case == "JSON array for an object provider":
        body = b"[1, 2, 3]"
    elif case == "empty body, no provider header":
        body, headers, content_type = b"", {}, None
    elif case == "provider without a router":
        path = stack.path("no-router")
    elif case == "GET instead of POST":
        method = "GET"
    if case not in ("empty body, no provider header", "unknown environment", "environment that is not a uuid"):
        headers = _signed(body)
    sent = dict(headers)
    if content_type is not None:
        sent["Content-Type"] = content_type
    async with stack.http.request(method, stack.server.url + path, data=body, headers=sent) as response:
        status, text = response.status, await response.text()
    assert status == expected_status, text
    if expected_code is not None:
        assert json.loads(text)["error"]["code"] == expected_code
    assert await stack.stored() == ([], [])


async def _raw_request(stack: Stack, head: bytes, body_parts: list[bytes]) -> bytes:
    """Send a request by hand (the client stops sending once the answer is in) and read the status line."""
    port = int(stack.server.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        for part in body_parts:
            writer.write(part)
            await writer.drain()
        return await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()


async def test_a_20_mb_body_is_refused_at_the_limit_without_being_read(stack: Stack) -> None:
    path = stack.path("gh-app")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {20 * 1024 * 1024}\r\n"
        "X-GitHub-Event: push\r\n\r\n"
    ).encode()
    # only the first 64 KiB are ever sent: the answer cannot have waited for the rest
    status_line = await _raw_request(stack, head, [b"[" * 65_536])
    assert status_line.startswith(b"HTTP/1.1 413"), status_line
    chunk = b"x" * 1024 * 1024
    chunked = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        "X-GitHub-Event: push\r\n\r\n"
    ).encode()
    # a streamed body is refused as soon as it passes 5 MiB (6 MiB sent, 20 MiB announced by nothing)
    status_line = await _raw_request(stack, head, [chunked] * 6)
    assert status_line.startswith(b"HTTP/1.1 413"), status_line
    async with stack.http.post(
        stack.server.url + path, data=b" " * (6 * 1024 * 1024), headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 413
        assert (await response.json())["error"]["code"] == "payload_too_large"
    assert await stack.stored() == ([], [])


async def test_the_integration_shows_its_webhook_url(stack: Stack) -> None:
    status, answer = await stack.api("GET", "/integrations/gh-app?include=webhook")
    assert status == 200, answer
    assert answer["data"]["webhook_url"] == f"{PUBLIC_URL}/webhook/{stack.environment_uuid}/gh-app"


async def test_concurrent_webhooks_are_each_stored_once(stack: Stack) -> None:
    results = await asyncio.gather(
        *(stack.github_app({"installation": {"id": 101}, "n": n}, event="push") for n in range(50))
    )
    assert all(status == 200 for status, _ in results)
    deliveries, tasks = await stack.stored()
    assert sorted(d["body"]["payload"]["n"] for d in deliveries) == list(range(50))
    assert tasks == []


# ---- ingress rate limit


async def test_the_ingress_rate_limit_is_enforced_per_environment(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    schema = new_schema("nango_webhooks_rl")
    dev, prod = str(uuid.uuid4()), str(uuid.uuid4())
    limit = 5
    server = await start_server(
        server_env(
            database_url,
            schema,
            tmp_path_factory.mktemp("webhooks-rl"),
            NANGO_ENCRYPTION_KEY=generate_key(),
            NANGO_SECRET_KEY_DEV=dev,
            NANGO_SECRET_KEY_PROD=prod,
            NANGO_WEBHOOK_INGRESS_RATE_LIMIT_PER_MIN=str(limit),
            NANGO_WEBHOOK_INGRESS_RATE_LIMIT_ENFORCE="true",
            JOBS_SERVICE_URL="127.0.0.1:9",
            ORCHESTRATOR_SERVICE_URL="127.0.0.1:9",
            LOG_LEVEL="warning",
        )
    )
    pool = await asyncpg.create_pool(database_url, server_settings={"search_path": schema})
    try:
        uuids = {r["name"]: str(r["uuid"]) for r in await pool.fetch("SELECT name, uuid FROM environments")}
        async with aiohttp.ClientSession() as http:

            async def hit(environment: str) -> int:
                url = f"{server.url}/webhook/{uuids[environment]}/missing"
                async with http.post(url, data=b"{}", headers={"Content-Type": "application/json"}) as response:
                    if response.status == 429:
                        assert int(response.headers["Retry-After"]) >= 1
                        assert (await response.json())["error"]["code"] == "too_many_request"
                    return response.status

            # at most `limit` per minute pass, so 2·limit + 1 in a row (even across a minute) meet a 429
            statuses = [await hit("dev") for _ in range(2 * limit + 1)]
            assert 429 in statuses
            assert set(statuses) <= {404, 429}
            assert await hit("prod") == 404
    finally:
        await pool.close()
        await server.stop()
