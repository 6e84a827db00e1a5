"""The OAuth popup end to end, the way a customer's app does it: `nango up`, an app page with `@nangohq/frontend`,
a click, sign-in and consent at the strict test authorization server in the popup, the `auth()` promise; then the
stored connection's token lifecycle (read, forced refresh with the rotated refresh token, automatic refresh on
expiry, revocation and the refresh backoff)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from playwright.async_api import Browser

from tests.browser.popup import WAIT, Api, AppPage, bearer_works, providers_yaml
from tests.conftest import free_port
from tests.support.oauth_server.harness import OAuthServer
from tests.support.platform import GRPC_PORTS, Up, start_up

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

T = TypeVar("T")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, short_lived_as: OAuthServer) -> Iterator[Up]:
    tmp = tmp_path_factory.mktemp("popup")
    providers = tmp / "providers.yaml"
    providers.write_text(providers_yaml(short_lived_as))
    ports = {"SERVER_PORT": free_port(), **{name: free_port() for name in GRPC_PORTS}}
    extra = {"NANGO_PROVIDERS_FILE": str(providers), "NANGO_SERVER_URL": f"http://127.0.0.1:{ports['SERVER_PORT']}"}
    up = start_up(tmp, ports=ports, extra_env=extra, name="popup")
    try:
        yield up.wait_ready()
    finally:
        assert up.stop() == 0


async def eventually(check: Callable[[], Awaitable[T | None]], what: str) -> T:
    """Repeat `check` until it returns something, for at most WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while (found := await check()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {WAIT}s: {what}")
        await asyncio.sleep(0.5)
    return found


async def test_popup_connects_and_the_token_lives_on(
    browser: Browser, platform: Up, short_lived_as: OAuthServer, app_page: AppPage, user: tuple[str, str]
) -> None:
    api = Api(platform.api, platform.dev_key)
    app = short_lived_as.create_app(name="popup", redirect_uris=[platform.api + "/oauth/callback"])
    key = await api.integration(app)
    token = await api.session_token("end-user-popup")

    outcome = await app_page.auth(browser, host=platform.api, token=token, provider_config_key=key, user=user)
    assert outcome["ok"], outcome
    assert outcome["result"]["providerConfigKey"] == key
    connection_id = outcome["result"]["connectionId"]
    uuid.UUID(connection_id)

    # the stored token is the authorization server's own, obtained with PKCE (the server requires it)
    status, connection = await api.connection(key, connection_id)
    assert status == 200, connection
    first = connection["credentials"]["access_token"]
    assert connection["credentials"]["raw"]["access_token"] == first
    assert connection["end_user"]["id"] == "end-user-popup"
    assert connection["errors"] == []
    assert await bearer_works(short_lived_as, first)
    assert short_lived_as.stats(app.client_id)["authorization_code_grants"] == 1
    assert short_lived_as.stats(app.client_id)["refresh_grants"] == 0

    # forced: a new token, from the refresh token (which the server rotates and would refuse twice)
    status, connection = await api.connection(key, connection_id, force_refresh="true")
    assert status == 200, connection
    second = connection["credentials"]["access_token"]
    assert second != first
    assert await bearer_works(short_lived_as, second)
    assert short_lived_as.stats(app.client_id)["refresh_grants"] == 1

    # expired at the server; our stored expiry enters the 15-minute margin seconds later, and a plain read refreshes
    assert short_lived_as.expire_access_tokens(app.client_id) >= 1
    assert not await bearer_works(short_lived_as, second)

    async def refreshed() -> str | None:
        status, body = await api.connection(key, connection_id)
        assert status == 200, body
        fresh = body["credentials"]["access_token"]
        return str(fresh) if fresh != second else None

    third = await eventually(refreshed, "a plain read refreshing the expired token")
    assert await bearer_works(short_lived_as, third)
    assert short_lived_as.stats(app.client_id)["refresh_grants"] == 2

    # revoked: the forced refresh fails, the connection carries an auth error, due reads back off
    short_lived_as.revoke(app.client_id)
    status, body = await api.connection(key, connection_id, force_refresh="true")
    assert (status, body["error"]["code"]) == (400, "invalid_credentials"), body

    async def backing_off() -> dict[str, Any] | None:
        status, body = await api.connection(key, connection_id)
        if status == 200:
            assert [e["type"] for e in body["errors"]] == ["auth"]
            return None
        return {"status": status, **body}

    answer = await eventually(backing_off, "a due read answering connection_refresh_backoff")
    assert (answer["status"], answer["error"]["code"]) == (424, "connection_refresh_backoff")
    assert short_lived_as.stats(app.client_id)["refresh_grants"] == 2
