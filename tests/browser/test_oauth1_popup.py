"""The OAuth 1.0a popup end to end, the way a customer's app does it: `nango up`, an app page with
`@nangohq/frontend`, a click, the popup's walk (our connect route, the provider's authorize page, our callback page)
and the `auth()` promise; then the stored token credentials are used through the proxy, which the provider checks
with oauthlib."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
import yaml
from playwright.async_api import Browser

from tests.browser.popup import WAIT, Api, AppPage
from tests.conftest import free_port
from tests.support.oauth1_provider import OAuth1Provider
from tests.support.platform import GRPC_PORTS, Up, start_up

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

PROVIDER = "test-oauth1"


@pytest.fixture(scope="module")
async def oauth1_provider() -> AsyncIterator[OAuth1Provider]:
    async with OAuth1Provider.serving() as served:
        yield served


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, oauth1_provider: OAuth1Provider) -> Iterator[Up]:
    tmp = tmp_path_factory.mktemp("oauth1-popup")
    providers = tmp / "providers.yaml"
    entry = {
        "display_name": "Test OAuth 1.0a",
        "categories": ["dev-tools"],
        "docs": "https://example.com/docs",
        "auth_mode": "OAUTH1",
        "request_url": oauth1_provider.url + "/oauth/request_token",
        "authorization_url": oauth1_provider.url + "/oauth/authorize",
        "token_url": oauth1_provider.url + "/oauth/access_token",
        "signature_method": "HMAC-SHA1",
        "proxy": {"base_url": oauth1_provider.url},
    }
    providers.write_text(yaml.safe_dump({PROVIDER: entry}))
    ports = {"SERVER_PORT": free_port(), **{name: free_port() for name in GRPC_PORTS}}
    extra = {
        "NANGO_PROVIDERS_FILE": str(providers),
        "NANGO_SERVER_URL": f"http://127.0.0.1:{ports['SERVER_PORT']}",
        # the proxy may call the provider on loopback
        "NANGO_OUTBOUND_URL_POLICY": '{"mode": "permissive"}',
    }
    up = start_up(tmp, ports=ports, extra_env=extra, name="oauth1-popup")
    try:
        yield up.wait_ready()
    finally:
        assert up.stop() == 0


async def popup_auth(browser: Browser, app_page: AppPage, *, host: str, token: str, key: str) -> dict[str, Any]:
    """Click Connect and let the popup walk on its own (the provider approves at once); what `auth()` settled with."""
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.goto(f"{app_page.url}#{urlencode({'host': host, 'token': token, 'pck': key})}", timeout=WAIT * 1000)
        await page.wait_for_selector("#connect:not([disabled])", timeout=WAIT * 1000)
        async with page.expect_popup(timeout=WAIT * 1000):
            await page.click("#connect", timeout=WAIT * 1000)
        outcome: dict[str, Any] = await asyncio.wait_for(page.evaluate("window.authOutcome"), WAIT)
        return outcome
    finally:
        await context.close()


async def test_oauth1_popup_connects_and_the_proxy_signs_with_the_token(
    browser: Browser, platform: Up, oauth1_provider: OAuth1Provider, app_page: AppPage
) -> None:
    api = Api(platform.api, platform.dev_key)
    consumer = oauth1_provider.consumer()
    key = f"{PROVIDER}-{uuid.uuid4().hex[:8]}"
    credentials = {"type": "OAUTH1", "client_id": consumer.key, "client_secret": consumer.secret}
    status, answer = await api.call(
        "POST", "/integrations", {"provider": PROVIDER, "unique_key": key, "credentials": credentials}
    )
    assert status in (200, 201), answer
    token = await api.session_token("end-user-oauth1")

    outcome = await popup_auth(browser, app_page, host=platform.api, token=token, key=key)
    assert outcome["ok"], outcome
    assert outcome["result"]["providerConfigKey"] == key
    assert outcome["result"]["isPending"] is False
    connection_id = outcome["result"]["connectionId"]

    status, connection = await api.connection(key, connection_id)
    assert status == 200, connection
    assert connection["credentials"]["type"] == "OAUTH1"
    assert connection["end_user"]["id"] == "end-user-oauth1"
    assert oauth1_provider.stores.issued_access_tokens == 1

    # the proxy signs the call with the consumer and the stored token credentials; oauthlib verifies it
    headers = {
        "Authorization": f"Bearer {platform.dev_key}",
        "Connection-Id": connection_id,
        "Provider-Config-Key": key,
    }
    timeout = aiohttp.ClientTimeout(total=WAIT)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(platform.api + "/proxy/me", headers=headers) as response,
    ):
        assert response.status == 200, await response.text()
        assert await response.json() == {"screen_name": "ada"}
