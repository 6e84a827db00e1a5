"""Providers and integrations through `@nangohq/node`."""

from __future__ import annotations

import uuid

import pytest

from tests.compat.conftest import Sdk, SdkError

pytestmark = pytest.mark.compat


def key(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_list_and_get_providers(sdk: Sdk) -> None:
    listed = await sdk("listProviders", {})
    names = {p["name"] for p in listed["data"]}
    assert len(names) >= 100
    assert {"github", "slack", "salesforce", "hubspot", "google-calendar"} <= names
    found = await sdk("listProviders", {"search": "^git"})
    assert {p["name"] for p in found["data"]} >= {"github", "gitlab"}
    github = (await sdk("getProvider", {"provider": "github"}))["data"]
    assert github["auth_mode"] == "OAUTH2"
    assert github["authorization_url"].startswith("https://github.com/")
    assert github["logo_url"].endswith("/images/template-logos/github.svg")
    with pytest.raises(SdkError) as missing:
        await sdk("getProvider", {"provider": "no-such-provider"})
    assert (missing.value.status, missing.value.code) == (404, "unknown_provider")


async def test_integration_lifecycle(sdk: Sdk) -> None:
    unique_key = key("gh")
    created = await sdk(
        "createIntegration",
        {
            "provider": "github",
            "unique_key": unique_key,
            "display_name": "Our GitHub",
            "credentials": {"type": "OAUTH2", "client_id": "cid", "client_secret": "csecret", "scopes": "repo,user"},
        },
    )
    assert created["data"]["unique_key"] == unique_key
    assert created["data"]["provider"] == "github"
    assert created["data"]["display_name"] == "Our GitHub"
    assert "credentials" not in created["data"]

    listed = await sdk("listIntegrations")
    assert unique_key in {c["unique_key"] for c in listed["configs"]}

    with_credentials = await sdk("getIntegration", {"uniqueKey": unique_key}, {"include": ["credentials"]})
    assert with_credentials["data"]["credentials"] == {
        "type": "OAUTH2",
        "client_id": "cid",
        "client_secret": "csecret",
        "scopes": "repo,user",
        "webhook_secret": None,
    }
    with_webhook = await sdk("getIntegration", {"uniqueKey": unique_key}, {"include": ["webhook"]})
    assert "/webhook/" in with_webhook["data"]["webhook_url"]
    assert with_webhook["data"]["webhook_url"].endswith("/" + unique_key)

    renamed = key("gh-renamed")
    updated = await sdk("updateIntegration", {"uniqueKey": unique_key}, {"unique_key": renamed, "display_name": "GH"})
    assert (updated["data"]["unique_key"], updated["data"]["display_name"]) == (renamed, "GH")
    with pytest.raises(SdkError) as gone:
        await sdk("getIntegration", {"uniqueKey": unique_key})
    assert gone.value.status == 404

    deleted = await sdk("deleteIntegration", renamed)
    assert deleted["data"] == {"success": True}
    with pytest.raises(SdkError):
        await sdk("getIntegration", {"uniqueKey": renamed})


async def test_integration_errors(sdk: Sdk) -> None:
    unique_key = key("slack")
    await sdk("createIntegration", {"provider": "slack", "unique_key": unique_key})
    with pytest.raises(SdkError) as duplicate:
        await sdk("createIntegration", {"provider": "slack", "unique_key": unique_key})
    assert (duplicate.value.status, duplicate.value.code) == (409, "conflict")
    with pytest.raises(SdkError) as unknown:
        await sdk("createIntegration", {"provider": "not-a-provider", "unique_key": key("x")})
    assert (unknown.value.status, unknown.value.code) == (400, "invalid_body")
    with pytest.raises(SdkError) as incompatible:
        await sdk(
            "createIntegration",
            {
                "provider": "sendgrid",
                "unique_key": key("sg"),
                "credentials": {"type": "OAUTH2", "client_id": "a", "client_secret": "b"},
            },
        )
    assert incompatible.value.code == "invalid_body"
    with pytest.raises(SdkError) as strict:
        await sdk("createIntegration", {"provider": "slack", "unique_key": key("s"), "surprise": 1})
    assert strict.value.code == "invalid_body"
    assert strict.value.data["error"]["errors"][0]["path"] == ["surprise"]
