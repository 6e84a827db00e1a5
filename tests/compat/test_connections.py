"""Connections through `@nangohq/node`: import, list with filters, get, patch, metadata, delete."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.compat.conftest import Sdk, SdkError

pytestmark = pytest.mark.compat


@pytest.fixture
async def integration(sdk: Sdk) -> str:
    unique_key = f"resend-{uuid.uuid4().hex[:8]}"
    await sdk("createIntegration", {"provider": "resend", "unique_key": unique_key})
    return unique_key


async def import_api_key(sdk: Sdk, integration: str, connection_id: str, **extra: Any) -> dict[str, Any]:
    body = {
        "provider_config_key": integration,
        "connection_id": connection_id,
        "credentials": {"type": "API_KEY", "apiKey": f"SG.{connection_id}"},
        **extra,
    }
    return await _post_connection(sdk, body)


async def _post_connection(sdk: Sdk, body: dict[str, Any]) -> dict[str, Any]:
    # @nangohq/node 0.71 has no method for POST /connections; the driver sends it with the SDK's client.
    return await sdk("_importConnection", body)


async def test_get_list_patch_delete(sdk: Sdk, integration: str) -> None:
    connection_id = f"user-{uuid.uuid4().hex[:6]}"
    created = await import_api_key(
        sdk,
        integration,
        connection_id,
        metadata={"plan": "pro"},
        end_user={"id": "u1", "email": "ada@example.com", "display_name": "Ada"},
        tags={"Team": "core"},
    )
    assert created["connection_id"] == connection_id
    assert created["credentials"] == {"type": "API_KEY", "apiKey": f"SG.{connection_id}"}

    fetched = await sdk("getConnection", integration, connection_id)
    assert fetched["provider"] == "resend"
    assert fetched["credentials"]["apiKey"] == f"SG.{connection_id}"
    assert fetched["metadata"] == {"plan": "pro"}
    assert fetched["end_user"]["email"] == "ada@example.com"
    assert fetched["tags"]["team"] == "core"
    assert fetched["tags"]["end_user_id"] == "u1"
    assert await sdk("getToken", integration, connection_id) == {"type": "API_KEY", "apiKey": f"SG.{connection_id}"}

    listed = await sdk("listConnections", {"integrationId": integration})
    assert [c["connection_id"] for c in listed["connections"]] == [connection_id]
    by_user = await sdk("listConnections", {"userId": "u1", "integrationId": integration})
    assert len(by_user["connections"]) == 1
    by_tag = await sdk("listConnections", {"tags": {"team": "core"}, "integrationId": integration})
    assert len(by_tag["connections"]) == 1
    by_email = await sdk("listConnections", {"tags": {"email": "ada@example.com"}, "integrationId": integration})
    assert len(by_email["connections"]) == 1
    nobody = await sdk("listConnections", {"tags": {"team": "other"}, "integrationId": integration})
    assert nobody["connections"] == []

    patched = await sdk(
        "patchConnection", {"connectionId": connection_id, "provider_config_key": integration}, {"tags": {"team": "x"}}
    )
    assert patched == {"success": True}
    assert (await sdk("getConnection", integration, connection_id))["tags"] == {"team": "x"}

    deleted = await sdk("deleteConnection", integration, connection_id)
    assert deleted["status"] == 200
    assert deleted["data"] == {"success": True}
    with pytest.raises(SdkError) as gone:
        await sdk("getConnection", integration, connection_id)
    assert gone.value.status == 404
    with pytest.raises(SdkError) as again:
        await sdk("deleteConnection", integration, connection_id)
    assert (again.value.status, again.value.code) == (400, "unknown_connection")


async def test_metadata_set_and_update(sdk: Sdk, integration: str) -> None:
    first, second = f"m1-{uuid.uuid4().hex[:6]}", f"m2-{uuid.uuid4().hex[:6]}"
    await import_api_key(sdk, integration, first, metadata={"keep": 1, "replace": "old"})
    await import_api_key(sdk, integration, second)

    set_response = await sdk("setMetadata", integration, first, {"replace": "new"})
    assert set_response["status"] == 201
    assert await sdk("getMetadata", integration, first) == {"replace": "new"}

    update_response = await sdk("updateMetadata", integration, [first, second], {"added": True})
    assert update_response["status"] == 200
    assert await sdk("getMetadata", integration, first) == {"replace": "new", "added": True}
    assert await sdk("getMetadata", integration, second) == {"added": True}

    with pytest.raises(SdkError) as missing:
        await sdk("setMetadata", integration, "nope", {"a": 1})
    assert (missing.value.status, missing.value.code) == (404, "unknown_connection")


async def test_get_connection_errors(sdk: Sdk, integration: str) -> None:
    with pytest.raises(SdkError) as unknown_integration:
        await sdk("getConnection", "no-such-integration", "x")
    assert (unknown_integration.value.status, unknown_integration.value.code) == (404, "unknown_provider_config")
    with pytest.raises(SdkError) as unknown_connection:
        await sdk("getConnection", integration, "no-such-connection")
    assert unknown_connection.value.status == 404
