"""Self-test of the OAuth test harness: the authorization server is real and strict, and the browser drives it."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Browser
from yarl import URL

from tests.support.browser import browser, login_and_consent
from tests.support.fixtures import oauth_server
from tests.support.oauth_server.harness import OAuthApp, OAuthServer, pkce_pair

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

__all__ = ["browser", "oauth_server"]  # fixtures, imported so pytest finds them

WAIT = 10.0  # seconds: the bound of every single wait in this module

CALLBACK_PAGE = """<!doctype html><html><body><p id="done">callback received</p>
<script>if (window.opener) { window.close(); }</script></body></html>"""

OPENER_PAGE = """<!doctype html><html><body>
<button id="connect" onclick="window.open(decodeURIComponent(location.hash.slice(1)), 'as', 'popup')">Connect</button>
</body></html>"""


@dataclass
class Callback:
    """A redirect-URI server on 127.0.0.1 that hands over the query of every hit on /callback."""

    url: str
    opener_url: str
    hits: asyncio.Queue[dict[str, str]]

    async def next(self) -> dict[str, str]:
        return await asyncio.wait_for(self.hits.get(), WAIT)


@dataclass
class Tokens:
    access_token: str
    refresh_token: str
    body: dict[str, Any]


@pytest.fixture
async def callback() -> AsyncIterator[Callback]:
    hits: asyncio.Queue[dict[str, str]] = asyncio.Queue()

    async def on_callback(request: web.Request) -> web.Response:
        hits.put_nowait(dict(request.query))
        return web.Response(text=CALLBACK_PAGE, content_type="text/html")

    async def on_opener(request: web.Request) -> web.Response:
        return web.Response(text=OPENER_PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/callback", on_callback)
    app.router.add_get("/opener", on_opener)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield Callback(url=f"http://{host}:{port}/callback", opener_url=f"http://{host}:{port}/opener", hits=hits)
    finally:
        await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as session:
        yield session


@pytest.fixture(scope="module")
def user(oauth_server: OAuthServer) -> tuple[str, str]:
    username, password = f"user-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    oauth_server.create_user(username, password)
    return username, password


async def authorize_in_browser(
    browser: Browser,
    server: OAuthServer,
    app: OAuthApp,
    callback: Callback,
    user: tuple[str, str],
    *,
    code_challenge: str | None,
    popup: bool = False,
) -> dict[str, str]:
    """Runs the authorization request in a fresh browser context; returns the query the redirect URI received."""
    state = secrets.token_urlsafe(8)
    url = server.authorization_request_url(app, redirect_uri=callback.url, state=state, code_challenge=code_challenge)
    context = await browser.new_context()
    try:
        page = await context.new_page()
        if popup:
            await page.goto(callback.opener_url + "#" + url, timeout=WAIT * 1000)
            async with page.expect_popup(timeout=WAIT * 1000) as popup_info:
                await page.click("#connect")
            await login_and_consent(await popup_info.value, *user, timeout=WAIT)
        else:
            await page.goto(url, timeout=WAIT * 1000)
            await login_and_consent(page, *user, timeout=WAIT)
        query = await callback.next()
    finally:
        await context.close()
    assert query.get("state") == state
    return query


async def token_request(
    http: aiohttp.ClientSession, server: OAuthServer, app: OAuthApp, **form: str
) -> tuple[int, dict[str, Any]]:
    auth = {"Authorization": aiohttp.encode_basic_auth(app.client_id, app.client_secret)}
    async with http.post(server.token_url, data=form, headers=auth) as response:
        return response.status, await response.json()


async def code_flow(
    browser: Browser,
    http: aiohttp.ClientSession,
    server: OAuthServer,
    app: OAuthApp,
    callback: Callback,
    user: tuple[str, str],
    *,
    popup: bool = False,
) -> Tokens:
    verifier, challenge = pkce_pair()
    query = await authorize_in_browser(browser, server, app, callback, user, code_challenge=challenge, popup=popup)
    assert "code" in query, query
    status, body = await token_request(
        http,
        server,
        app,
        grant_type="authorization_code",
        code=query["code"],
        redirect_uri=callback.url,
        code_verifier=verifier,
    )
    assert status == 200, body
    return Tokens(access_token=body["access_token"], refresh_token=body["refresh_token"], body=body)


async def me(http: aiohttp.ClientSession, server: OAuthServer, access_token: str) -> tuple[int, dict[str, Any]]:
    async with http.get(server.me_url, headers={"Authorization": f"Bearer {access_token}"}) as response:
        return response.status, await response.json()


async def refresh(
    http: aiohttp.ClientSession, server: OAuthServer, app: OAuthApp, refresh_token: str
) -> tuple[int, dict[str, Any]]:
    return await token_request(http, server, app, grant_type="refresh_token", refresh_token=refresh_token)


async def test_authorization_code_flow_with_pkce_in_browser(
    browser: Browser,
    http: aiohttp.ClientSession,
    oauth_server: OAuthServer,
    callback: Callback,
    user: tuple[str, str],
) -> None:
    app = oauth_server.create_app(name="pkce", redirect_uris=[callback.url])
    verifier, challenge = pkce_pair()
    query = await authorize_in_browser(browser, oauth_server, app, callback, user, code_challenge=challenge)
    code = query["code"]
    exchange = {"grant_type": "authorization_code", "code": code, "redirect_uri": callback.url}

    # Strict: the code is bound to the challenge, and to the client's secret.
    status, body = await token_request(http, oauth_server, app, **exchange, code_verifier=pkce_pair()[0])
    assert (status, body["error"]) == (400, "invalid_grant")
    wrong_secret = OAuthApp(**{**app.__dict__, "client_secret": "not-the-secret"})
    status, body = await token_request(http, oauth_server, wrong_secret, **exchange, code_verifier=verifier)
    assert (status, body["error"]) == (401, "invalid_client")

    status, tokens = await token_request(http, oauth_server, app, **exchange, code_verifier=verifier)
    assert status == 200, tokens
    assert tokens["token_type"] == "Bearer"
    assert tokens["access_token"]
    assert tokens["refresh_token"]
    assert tokens["expires_in"] > 0
    assert set(tokens["scope"].split()) == {"read", "write"}

    status, who = await me(http, oauth_server, tokens["access_token"])
    assert (status, who["username"], who["client_id"]) == (200, user[0], app.client_id)

    # A code is good once.
    status, body = await token_request(http, oauth_server, app, **exchange, code_verifier=verifier)
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_authorization_request_without_pkce_is_refused(
    browser: Browser, oauth_server: OAuthServer, callback: Callback, user: tuple[str, str]
) -> None:
    app = oauth_server.create_app(name="no-pkce", redirect_uris=[callback.url])
    query = await authorize_in_browser(browser, oauth_server, app, callback, user, code_challenge=None)
    assert "code" not in query
    assert query["error"] == "invalid_request"
    assert "challenge" in query.get("error_description", "").lower()


async def test_refresh_rotates_and_the_old_refresh_token_is_refused(
    browser: Browser,
    http: aiohttp.ClientSession,
    oauth_server: OAuthServer,
    callback: Callback,
    user: tuple[str, str],
) -> None:
    app = oauth_server.create_app(name="rotation", redirect_uris=[callback.url])
    first = await code_flow(browser, http, oauth_server, app, callback, user, popup=True)  # popup this time

    status, second = await refresh(http, oauth_server, app, first.refresh_token)
    assert status == 200, second
    assert second["refresh_token"] != first.refresh_token
    assert second["access_token"] != first.access_token
    assert (await me(http, oauth_server, second["access_token"]))[0] == 200

    status, body = await refresh(http, oauth_server, app, first.refresh_token)
    assert (status, body["error"]) == (400, "invalid_grant")
    status, third = await refresh(http, oauth_server, app, second["refresh_token"])
    assert status == 200, third


async def test_stats_count_successful_grants_by_type(
    browser: Browser,
    http: aiohttp.ClientSession,
    oauth_server: OAuthServer,
    callback: Callback,
    user: tuple[str, str],
) -> None:
    app = oauth_server.create_app(name="stats", redirect_uris=[callback.url])
    assert oauth_server.stats(app.client_id) == {
        "authorization_code_grants": 0,
        "refresh_grants": 0,
        "client_credentials_grants": 0,
    }
    tokens = await code_flow(browser, http, oauth_server, app, callback, user)
    assert (await refresh(http, oauth_server, app, tokens.refresh_token))[0] == 200
    assert (await refresh(http, oauth_server, app, tokens.refresh_token))[0] == 400  # refused: not counted
    assert (await refresh(http, oauth_server, app, "bogus"))[0] == 400
    assert oauth_server.stats(app.client_id) == {
        "authorization_code_grants": 1,
        "refresh_grants": 1,
        "client_credentials_grants": 0,
    }

    machine = oauth_server.create_app(name="stats-m2m", grant_type="client-credentials")
    for _ in range(2):
        status, body = await token_request(http, oauth_server, machine, grant_type="client_credentials", scope="read")
        assert status == 200, body
    wrong_secret = OAuthApp(**{**machine.__dict__, "client_secret": "nope"})
    assert (await token_request(http, oauth_server, wrong_secret, grant_type="client_credentials"))[0] == 401
    assert oauth_server.stats(machine.client_id) == {
        "authorization_code_grants": 0,
        "refresh_grants": 0,
        "client_credentials_grants": 2,
    }


async def test_revoke_makes_refresh_fail(
    browser: Browser,
    http: aiohttp.ClientSession,
    oauth_server: OAuthServer,
    callback: Callback,
    user: tuple[str, str],
) -> None:
    app = oauth_server.create_app(name="revoke", redirect_uris=[callback.url])
    tokens = await code_flow(browser, http, oauth_server, app, callback, user)
    assert oauth_server.revoke(app.client_id) == {"refresh_tokens_revoked": 1, "access_tokens_revoked": 1}

    status, body = await refresh(http, oauth_server, app, tokens.refresh_token)
    assert (status, body["error"]) == (400, "invalid_grant")
    assert (await me(http, oauth_server, tokens.access_token))[0] == 401


async def test_expire_makes_me_answer_401_until_refreshed(
    browser: Browser,
    http: aiohttp.ClientSession,
    oauth_server: OAuthServer,
    callback: Callback,
    user: tuple[str, str],
) -> None:
    app = oauth_server.create_app(name="expire", redirect_uris=[callback.url])
    tokens = await code_flow(browser, http, oauth_server, app, callback, user)
    assert (await me(http, oauth_server, tokens.access_token))[0] == 200

    assert oauth_server.expire_access_tokens(app.client_id) == 1
    async with http.get(oauth_server.me_url, headers={"Authorization": f"Bearer {tokens.access_token}"}) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")

    status, fresh = await refresh(http, oauth_server, app, tokens.refresh_token)  # the refresh token still works
    assert status == 200, fresh
    assert (await me(http, oauth_server, fresh["access_token"]))[0] == 200


async def test_concurrent_token_requests(http: aiohttp.ClientSession, oauth_server: OAuthServer) -> None:
    """50 concurrent grants all succeed; 50 concurrent refreshes of one refresh token: exactly one wins."""
    machine = oauth_server.create_app(name="concurrency", grant_type="client-credentials")
    results = await asyncio.gather(
        *(token_request(http, oauth_server, machine, grant_type="client_credentials") for _ in range(50))
    )
    assert [status for status, _ in results] == [200] * 50
    assert oauth_server.stats(machine.client_id)["client_credentials_grants"] == 50

    # Client credentials issue no refresh token: get one from a browser-free code flow.
    app, refresh_token = await _refresh_token_without_browser(http, oauth_server)
    races = await asyncio.gather(*(refresh(http, oauth_server, app, refresh_token) for _ in range(50)))
    statuses = sorted(status for status, _ in races)
    assert statuses == [200] + [400] * 49, statuses
    assert oauth_server.stats(app.client_id)["refresh_grants"] == 1


async def _refresh_token_without_browser(http: aiohttp.ClientSession, server: OAuthServer) -> tuple[OAuthApp, str]:
    """Signs in through the login form with aiohttp (CSRF token + session cookie) and runs a PKCE code flow with an
    app that skips consent: a refresh token without the cost of a browser."""
    username, password = f"race-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    server.create_user(username, password)
    redirect_uri = "http://127.0.0.1:9/callback"  # never followed
    app = server.create_app(name="race", redirect_uris=[redirect_uri], skip_authorization=True)
    verifier, challenge = pkce_pair()
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=WAIT), cookie_jar=aiohttp.CookieJar(unsafe=True)
    ) as session:
        async with session.get(server.login_url) as response:
            assert response.status == 200
        csrf = session.cookie_jar.filter_cookies(URL(server.url))["oauth_as_csrftoken"].value
        form = {"username": username, "password": password, "csrfmiddlewaretoken": csrf}
        async with session.post(
            server.login_url, data=form, headers={"Referer": server.login_url}, allow_redirects=False
        ) as response:
            assert response.status == 302
        url = server.authorization_request_url(app, code_challenge=challenge, state="race")
        async with session.get(url, allow_redirects=False) as response:
            assert response.status == 302
            location = response.headers["Location"]
    code = dict(parse_qsl(urlsplit(location).query))["code"]
    status, body = await token_request(
        http,
        server,
        app,
        grant_type="authorization_code",
        code=code,
        redirect_uri=redirect_uri,
        code_verifier=verifier,
    )
    assert status == 200, body
    return app, body["refresh_token"]
