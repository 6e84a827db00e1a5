"""Connect sessions through `@nangohq/node`, and what Connect UI then does with the token."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from tests.compat.conftest import Sdk, SdkError
from tests.support.platform import Up

pytestmark = pytest.mark.compat


async def _get(up: Up, path: str, token: str, method: str = "GET") -> tuple[int, dict]:  # type: ignore[type-arg]
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, up.api + path, headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        body = await response.json() if response.status != 204 else {}
        return response.status, body


async def test_session_create_use_and_delete(sdk: Sdk, platform: Up) -> None:
    allowed = f"github-{uuid.uuid4().hex[:6]}"
    hidden = f"slack-{uuid.uuid4().hex[:6]}"
    await sdk("createIntegration", {"provider": "github", "unique_key": allowed})
    await sdk("createIntegration", {"provider": "slack", "unique_key": hidden})

    created = await sdk(
        "createConnectSession",
        {
            "end_user": {"id": "user-42", "email": "grace@example.com", "display_name": "Grace"},
            "organization": {"id": "org-1", "display_name": "Acme"},
            "allowed_integrations": [allowed],
            "tags": {"plan": "pro"},
        },
    )
    token = created["data"]["token"]
    assert token.startswith("nango_connect_session_")
    assert len(token) == len("nango_connect_session_") + 64
    connect_port = platform.ports["NANGO_CONNECT_UI_PORT"]
    assert created["data"]["connect_link"] == f"http://localhost:{connect_port}/?session_token={token}"
    expires = datetime.fromisoformat(created["data"]["expires_at"].replace("Z", "+00:00"))
    assert timedelta(minutes=29) < expires - datetime.now(UTC) <= timedelta(minutes=30)

    status, session = await _get(platform, "/connect/session", token)
    assert status == 200
    assert session["data"]["allowed_integrations"] == [allowed]
    assert session["data"]["endUser"] == {
        "id": "user-42",
        "display_name": "Grace",
        "email": "grace@example.com",
        "tags": None,
        "organization": {"id": "org-1", "display_name": "Acme"},
    }
    assert session["data"]["tags"] == {"plan": "pro"}
    assert session["data"]["websocketsPath"] == "/"

    status, integrations = await _get(platform, "/integrations", token)
    assert status == 200
    assert [i["unique_key"] for i in integrations["data"]] == [allowed]
    status, _ = await _get(platform, "/providers/github", token)
    assert status == 200

    status, connections = await _get(platform, "/connections", token)
    assert (status, connections["error"]["code"]) == (401, "invalid_secret_key_format")

    assert (await _get(platform, "/connect/session", token, method="DELETE"))[0] == 204
    status, body = await _get(platform, "/connect/session", token)
    assert (status, body["error"]["code"]) == (401, "unknown_connect_session_token")


async def test_session_errors(sdk: Sdk, platform: Up) -> None:
    with pytest.raises(SdkError) as unknown:
        await sdk("createConnectSession", {"end_user": {"id": "u"}, "allowed_integrations": ["does-not-exist"]})
    assert (unknown.value.status, unknown.value.code) == (400, "invalid_body")
    assert unknown.value.data["error"]["errors"][0]["path"] == ["allowed_integrations", 0]
    with pytest.raises(SdkError) as nobody:
        await sdk("createConnectSession", {})
    assert nobody.value.code == "invalid_body"
    status, body = await _get(platform, "/connect/session", "nango_connect_session_nothex")
    assert (status, body["error"]["code"]) == (401, "invalid_connect_session_token_format")
    status, body = await _get(platform, "/connect/session", "nango_connect_session_" + "0" * 64)
    assert (status, body["error"]["code"]) == (401, "unknown_connect_session_token")
    with pytest.raises(SdkError) as reconnect_unknown:
        await sdk("createReconnectSession", {"connection_id": "nope", "integration_id": "nope"})
    assert (reconnect_unknown.value.status, reconnect_unknown.value.code) == (400, "unknown_connection")


async def test_reconnect_session_is_bound_to_its_connection(sdk: Sdk, platform: Up) -> None:
    integration = f"resend-{uuid.uuid4().hex[:6]}"
    await sdk("createIntegration", {"provider": "resend", "unique_key": integration})
    await sdk(
        "_importConnection",
        {"provider_config_key": integration, "connection_id": "c1", "credentials": {"type": "API_KEY", "apiKey": "k"}},
    )
    created = await sdk("createReconnectSession", {"connection_id": "c1", "integration_id": integration})
    status, session = await _get(platform, "/connect/session", created["data"]["token"])
    assert status == 200
    assert session["data"]["isReconnecting"] is True
    assert session["data"]["allowed_integrations"] == [integration]
