"""Fixtures of the browser tests: the authorization server with short-lived access tokens, a sign-in user, and
an app page on 127.0.0.1 that loads the official `@nangohq/frontend` build and calls `auth()` on a click."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.browser.popup import ACCESS_TOKEN_TTL, AppPage
from tests.support.browser import browser
from tests.support.oauth_server.harness import OAuthServer

__all__ = ["browser"]  # a fixture, imported so pytest finds it

FRONTEND_DIST = Path(__file__).parents[1] / "compat" / "node_modules" / "@nangohq" / "frontend" / "dist"
SDK_FILES = ("index.js", "authModal.js", "connectUI.js")

# Clicking the button calls `new Nango({host, connectSessionToken}).auth(pck)` (the popup needs a user gesture);
# the settled promise lands in window.authOutcome.
APP_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>app</title></head><body>
<button id="connect" disabled>Connect</button>
<script type="module">
import Nango from '/sdk/index.js';
const params = new URLSearchParams(location.hash.slice(1));
const button = document.getElementById('connect');
button.addEventListener('click', () => {
  const nango = new Nango({ host: params.get('host'), connectSessionToken: params.get('token') });
  window.authOutcome = nango.auth(params.get('pck')).then(
    (result) => ({ ok: true, result }),
    (error) => ({ ok: false, type: error.type, message: error.message }),
  );
});
button.disabled = false;
</script>
</body></html>
"""


@pytest.fixture(scope="session")
def short_lived_as(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OAuthServer]:
    """The strict authorization server; its access tokens expire a few seconds past our 15-minute refresh margin."""
    server = OAuthServer.start(tmp_path_factory.mktemp("oauth-as-short"), access_token_ttl=ACCESS_TOKEN_TTL)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def user(short_lived_as: OAuthServer) -> tuple[str, str]:
    username, password = f"user-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    short_lived_as.create_user(username, password)
    return username, password


@pytest.fixture(scope="session")
async def app_page() -> AsyncIterator[AppPage]:
    if not (FRONTEND_DIST / "index.js").exists():
        pytest.fail("npm packages missing: run `npm ci --prefix tests/compat` (scripts/test.sh does)")

    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=APP_PAGE, content_type="text/html")

    async def sdk(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in SDK_FILES:
            raise web.HTTPNotFound()
        return web.Response(body=(FRONTEND_DIST / name).read_bytes(), content_type="text/javascript")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/sdk/{name}", sdk)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield AppPage(f"http://{host}:{port}/")
    finally:
        await runner.cleanup()
