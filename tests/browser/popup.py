"""Helpers of the browser tests: the provider file, REST calls with the secret key, and one popup flow run the way
an app runs it (button click -> `@nangohq/frontend` `auth()` -> popup -> sign-in and consent -> promise)."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
import yaml
from playwright.async_api import Browser

from tests.support.browser import login_and_consent
from tests.support.oauth_server.harness import OAuthApp, OAuthServer

WAIT = 15.0  # seconds: the bound of every single wait in the browser tests
PROVIDER = "test-dot"
# 7 s past the 15-minute refresh margin: a token is read as-is for 7 s, then any read refreshes it
ACCESS_TOKEN_TTL = 15 * 60 + 7


def providers_yaml(authorization_server: OAuthServer) -> str:
    provider = {
        "display_name": "Test DOT",
        "categories": ["dev-tools"],
        "docs": "https://example.com/docs",
        "auth_mode": "OAUTH2",
        "authorization_url": authorization_server.authorize_url,
        "token_url": authorization_server.token_url,
        "scope_separator": " ",
        "proxy": {"base_url": authorization_server.url},
    }
    return yaml.safe_dump({PROVIDER: provider})


@dataclass
class Api:
    """The REST API with the environment's secret key."""

    url: str
    secret_key: str

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.secret_key}"}
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as session,
            session.request(method, self.url + path, json=body, headers=headers) as response,
        ):
            return response.status, await response.json()

    async def integration(self, app: OAuthApp) -> str:
        key = f"{PROVIDER}-{secrets.token_hex(4)}"
        credentials = {
            "type": "OAUTH2",
            "client_id": app.client_id,
            "client_secret": app.client_secret,
            "scopes": "read,write",
        }
        status, answer = await self.call(
            "POST", "/integrations", {"provider": PROVIDER, "unique_key": key, "credentials": credentials}
        )
        assert status in (200, 201), answer
        return key

    async def session_token(self, end_user_id: str) -> str:
        status, answer = await self.call("POST", "/connect/sessions", {"end_user": {"id": end_user_id}})
        assert status == 201, answer
        return str(answer["data"]["token"])

    async def connection(self, key: str, connection_id: str, **flags: str) -> tuple[int, Any]:
        query = "&".join(f"{name}={value}" for name, value in {"provider_config_key": key, **flags}.items())
        return await self.call("GET", f"/connections/{connection_id}?{query}")


async def bearer_works(authorization_server: OAuthServer, access_token: str) -> bool:
    """Whether the authorization server's protected API accepts the token."""
    headers = {"Authorization": f"Bearer {access_token}"}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as session,
        session.get(authorization_server.me_url, headers=headers) as response,
    ):
        return response.status == 200


@dataclass
class AppPage:
    """The app page served on 127.0.0.1 that embeds `@nangohq/frontend`."""

    url: str

    async def auth(
        self, browser: Browser, *, host: str, token: str, provider_config_key: str, user: tuple[str, str]
    ) -> dict[str, Any]:
        """Click Connect, sign in and consent in the popup; what `auth()` settled with."""
        context = await browser.new_context()
        try:
            page = await context.new_page()
            fragment = urlencode({"host": host, "token": token, "pck": provider_config_key})
            await page.goto(f"{self.url}#{fragment}", timeout=WAIT * 1000)
            await page.wait_for_selector("#connect:not([disabled])", timeout=WAIT * 1000)
            async with page.expect_popup(timeout=WAIT * 1000) as popup_info:
                await page.click("#connect", timeout=WAIT * 1000)
            await login_and_consent(await popup_info.value, *user, timeout=WAIT)
            outcome: dict[str, Any] = await asyncio.wait_for(page.evaluate("window.authOutcome"), WAIT)
            return outcome
        finally:
            await context.close()
