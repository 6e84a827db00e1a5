"""Connect UI in Chromium against `nango up`: a connect_link opened as a page, and `openConnectUI()` of the official
`@nangohq/frontend` build embedding it in an iframe. API-key connections are tested by a local upstream (the
provider's verification call); OAuth goes through the strict test authorization server in a popup."""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
import yaml
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, Page, expect

from tests.browser.popup import PROVIDER, WAIT, Api
from tests.browser.popup import providers_yaml as oauth_providers_yaml
from tests.conftest import free_port
from tests.support.browser import login_and_consent
from tests.support.oauth_server.harness import OAuthServer
from tests.support.platform import GRPC_PORTS, Up, start_up

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

FRONTEND_DIST = Path(__file__).parents[1] / "compat" / "node_modules" / "@nangohq" / "frontend" / "dist"
SDK_FILES = ("index.js", "authModal.js", "connectUI.js")
KEY_PROVIDER = "cui-keystone"
GOOD_KEY = "ks_good_" + secrets.token_hex(6)
MS = WAIT * 1000

# The customer's page: the SDK's openConnectUI() with every event kept in window.events.
HOST_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>host app</title></head><body><h1>Host app</h1>
<script type="module">
import Nango from '/sdk/index.js';
const params = new URLSearchParams(location.hash.slice(1));
window.events = [];
const nango = new Nango({ host: params.get('api') });
nango.openConnectUI({
  baseURL: params.get('ui'),
  apiURL: params.get('api'),
  sessionToken: params.get('token'),
  onEvent: (event) => { window.events.push(JSON.parse(JSON.stringify(event))); },
});
</script></body></html>
"""


def _key_provider(upstream: str) -> dict[str, Any]:
    return {
        "display_name": "Keystone",
        "categories": ["dev-tools"],
        "docs": "https://docs.keystone.test",
        "docs_connect": "https://docs.keystone.test/connect",
        "auth_mode": "API_KEY",
        "connection_config": {
            "workspace": {
                "type": "string",
                "title": "Workspace",
                "description": "The name in your Keystone address",
                "example": "acme",
                "pattern": "^[a-z0-9-]+$",
                "suffix": ".keystone.test",
            },
            "tenant_id": {"type": "string", "title": "Tenant", "description": "Set by the platform", "automated": True},
        },
        "credentials": {
            "apiKey": {
                "type": "string",
                "title": "Keystone API key",
                "description": "Settings, then API keys",
                "example": "ks_live_123",
                "pattern": "^ks_",
                "secret": True,
                "doc_section": "#api-key",
            }
        },
        "proxy": {
            "base_url": upstream,
            "headers": {"authorization": "Bearer ${apiKey}"},
            "verification": {"method": "GET", "endpoints": ["/me"]},
        },
    }


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[str]:
    """The API-key provider's API: its verification endpoint accepts GOOD_KEY only."""

    async def me(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") == f"Bearer {GOOD_KEY}":
            return web.json_response({"id": "me"})
        return web.json_response({"error": "invalid api key"}, status=401)

    app = web.Application()
    app.router.add_get("/me", me)
    runner, url = await _serve(app)
    try:
        yield url
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
async def host_page() -> AsyncIterator[str]:
    """An app origin on 127.0.0.1 that loads `@nangohq/frontend` and opens Connect UI."""
    if not (FRONTEND_DIST / "index.js").exists():
        pytest.fail("npm packages missing: run `npm ci --prefix tests/compat` (scripts/test.sh does)")

    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=HOST_PAGE, content_type="text/html")

    async def sdk(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in SDK_FILES:
            raise web.HTTPNotFound()
        return web.Response(body=(FRONTEND_DIST / name).read_bytes(), content_type="text/javascript")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/sdk/{name}", sdk)
    runner, url = await _serve(app)
    try:
        yield url + "/"
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, upstream: str, short_lived_as: OAuthServer) -> Iterator[Up]:
    tmp = tmp_path_factory.mktemp("connect-ui")
    providers = tmp / "providers.yaml"
    entries = yaml.safe_load(oauth_providers_yaml(short_lived_as))
    entries[KEY_PROVIDER] = _key_provider(upstream)
    providers.write_text(yaml.safe_dump(entries))
    ports = {"SERVER_PORT": free_port(), "NANGO_CONNECT_UI_PORT": free_port(), **{n: free_port() for n in GRPC_PORTS}}
    # NANGO_PUBLIC_CONNECT_URL is left unset: connect links follow NANGO_CONNECT_UI_PORT (http://localhost:<port>)
    extra = {"NANGO_PROVIDERS_FILE": str(providers), "NANGO_SERVER_URL": f"http://127.0.0.1:{ports['SERVER_PORT']}"}
    up = start_up(tmp, ports=ports, extra_env=extra, name="connect-ui")
    try:
        yield up.wait_ready()
    finally:
        assert up.stop() == 0


@pytest.fixture
def api(platform: Up) -> Api:
    return Api(platform.api, platform.dev_key)


async def _integration(api: Api, provider: str) -> str:
    key = f"{provider}-{secrets.token_hex(3)}"
    status, answer = await api.call("POST", "/integrations", {"provider": provider, "unique_key": key})
    assert status in (200, 201), answer
    return key


async def _session(api: Api, end_user: str, allowed: list[str]) -> tuple[str, str]:
    body = {"end_user": {"id": end_user}, "allowed_integrations": allowed}
    status, answer = await api.call("POST", "/connect/sessions", body)
    assert status == 201, answer
    return answer["data"]["token"], answer["data"]["connect_link"]


async def _only_connection(api: Api, key: str) -> dict[str, Any]:
    status, listed = await api.call("GET", f"/connections?integrationId={key}")
    assert status == 200, listed
    assert len(listed["connections"]) == 1, listed
    connection_id = listed["connections"][0]["connection_id"]
    status, connection = await api.connection(key, connection_id)
    assert status == 200, connection
    return dict(connection)


async def _end_session(api_url: str, token: str) -> int:
    """DELETE /connect/session, as a backend does when the user gives up."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as http,
        http.delete(api_url + "/connect/session", headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        return response.status


async def _context(browser: Browser, **options: Any) -> BrowserContext:
    context = await browser.new_context(**options)
    context.set_default_timeout(MS)
    return context


async def _no_horizontal_scroll(page: Page) -> None:
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


async def _events(page: Page, kind: str) -> list[dict[str, Any]]:
    await page.wait_for_function(f"window.events.some((e) => e.type === '{kind}')", timeout=MS)
    events: list[dict[str, Any]] = await page.evaluate("window.events")
    return events


async def test_connect_link_lists_integrations_validates_and_connects_with_an_api_key(
    browser: Browser, platform: Up, api: Api, tmp_path: Path
) -> None:
    key = await _integration(api, KEY_PROVIDER)
    other = await _integration(api, "resend")
    _, link = await _session(api, "end-user-link", [key, other])
    assert re.fullmatch(rf"http://localhost:{platform.ports['NANGO_CONNECT_UI_PORT']}/\?session_token=\S+", link)

    context = await _context(browser, viewport={"width": 375, "height": 740})
    try:
        page = await context.new_page()
        await page.goto(link)
        await expect(page.get_by_role("heading", name="Choose an integration")).to_be_focused()
        assert "session_token" not in page.url  # taken out of the address bar and the history
        await expect(page.get_by_role("button", name="Resend")).to_be_visible()
        await _no_horizontal_scroll(page)
        await page.screenshot(path=tmp_path / "list.png")

        await page.get_by_role("button", name="Keystone").click()
        await expect(page.get_by_role("heading", name="Connect Keystone")).to_be_focused()
        workspace = page.get_by_label("Workspace", exact=True)
        api_key = page.get_by_label("Keystone API key", exact=True)
        await expect(workspace).to_have_attribute("placeholder", "acme")
        await expect(api_key).to_have_attribute("type", "password")
        await expect(page.get_by_text(".keystone.test", exact=True)).to_be_visible()
        await expect(page.get_by_text("Tenant")).to_have_count(0)  # automated: filled by the platform
        guide = page.get_by_role("link", name="How to connect Keystone")
        await expect(guide).to_have_attribute("href", "https://docs.keystone.test/connect")
        await expect(page.get_by_role("link", name="Where do I find this?")).to_have_attribute(
            "href", "https://docs.keystone.test/connect#api-key"
        )

        # keyboard only: Enter submits; the first invalid field gets the focus and the messages
        await workspace.focus()
        await page.keyboard.press("Enter")
        await expect(page.get_by_text("Workspace is required.")).to_be_visible()
        await expect(page.get_by_text("Keystone API key is required.")).to_be_visible()
        await expect(workspace).to_be_focused()
        await expect(workspace).to_have_attribute("aria-invalid", "true")
        await workspace.fill("Acme")
        await api_key.fill("live-123")
        await page.keyboard.press("Enter")
        await expect(page.get_by_text("Workspace is not in the expected format. For example: acme")).to_be_visible()
        await expect(page.get_by_text("Keystone API key is not in the expected format.")).to_be_visible()
        await _no_horizontal_scroll(page)
        await page.screenshot(path=tmp_path / "form-invalid.png")

        await workspace.fill("acme.keystone.test")  # the suffix, typed in full, is not sent twice
        await api_key.fill(GOOD_KEY)
        await page.get_by_role("button", name="Show Keystone API key").click()
        await expect(api_key).to_have_attribute("type", "text")
        await page.keyboard.press("Tab")
        await api_key.press("Enter")
        await expect(page.get_by_role("heading", name="Keystone is connected")).to_be_visible(timeout=MS)
        await expect(page.get_by_role("button", name="Finish")).to_be_focused()
        await page.screenshot(path=tmp_path / "success.png")
        await page.get_by_role("button", name="Finish").click()
        await expect(page.get_by_text("You can close this window now.")).to_be_visible()
    finally:
        await context.close()

    connection = await _only_connection(api, key)
    assert connection["end_user"]["id"] == "end-user-link"
    assert connection["credentials"] == {"type": "API_KEY", "apiKey": GOOD_KEY}
    assert connection["connection_config"]["workspace"] == "acme"


async def test_open_connect_ui_in_an_iframe_reports_connect_then_close(
    browser: Browser, platform: Up, api: Api, host_page: str, tmp_path: Path
) -> None:
    key = await _integration(api, KEY_PROVIDER)
    token, _ = await _session(api, "end-user-iframe", [key])
    context = await _context(browser)
    try:
        page = await context.new_page()
        fragment = urlencode({"ui": platform.connect_ui, "api": platform.api, "token": token})
        await page.goto(f"{host_page}#{fragment}")
        frame = page.frame_locator("#connect-ui")
        # a single allowed integration: straight to its form
        await expect(frame.get_by_role("heading", name="Connect Keystone")).to_be_visible()
        await expect(frame.get_by_role("dialog")).to_be_visible()
        await frame.get_by_label("Workspace", exact=True).fill("acme")
        await frame.get_by_label("Keystone API key", exact=True).fill(GOOD_KEY)
        await page.screenshot(path=tmp_path / "iframe-form.png")
        await frame.get_by_role("button", name="Connect").click()
        await expect(frame.get_by_role("heading", name="Keystone is connected")).to_be_visible(timeout=MS)
        await page.screenshot(path=tmp_path / "iframe-success.png")

        events = await _events(page, "connect")
        assert events[0] == {"type": "ready"}
        connect = next(e for e in events if e["type"] == "connect")
        assert connect["payload"]["providerConfigKey"] == key
        uuid.UUID(connect["payload"]["connectionId"])

        await frame.get_by_role("button", name="Finish").click()
        assert (await _events(page, "close"))[-1] == {"type": "close"}
        await expect(page.locator("#connect-ui")).to_have_count(0)  # the SDK removed the iframe
    finally:
        await context.close()

    connection = await _only_connection(api, key)
    assert connection["connection_id"] == connect["payload"]["connectionId"]
    assert connection["end_user"]["id"] == "end-user-iframe"


async def test_oauth_in_the_popup_from_the_iframe(
    browser: Browser,
    platform: Up,
    api: Api,
    host_page: str,
    short_lived_as: OAuthServer,
    user: tuple[str, str],
    tmp_path: Path,
) -> None:
    app = short_lived_as.create_app(name="connect-ui", redirect_uris=[platform.api + "/oauth/callback"])
    key = await api.integration(app)
    token, _ = await _session(api, "end-user-oauth", [key])
    context = await _context(browser)
    try:
        page = await context.new_page()
        fragment = urlencode({"ui": platform.connect_ui, "api": platform.api, "token": token})
        await page.goto(f"{host_page}#{fragment}")
        frame = page.frame_locator("#connect-ui")
        await expect(frame.get_by_role("heading", name="Connect Test DOT")).to_be_visible()
        await expect(frame.get_by_text("A window will open where you sign in to Test DOT")).to_be_visible()
        async with context.expect_page(timeout=MS) as opened:
            await frame.get_by_role("button", name="Connect").click()
        popup = await opened.value
        await expect(frame.get_by_role("heading", name="Finish in the Test DOT window")).to_be_visible()
        await page.screenshot(path=tmp_path / "oauth-waiting.png")
        await login_and_consent(popup, *user, timeout=WAIT)
        await expect(frame.get_by_role("heading", name="Test DOT is connected")).to_be_visible(timeout=MS)
        events = await _events(page, "connect")
        if not popup.is_closed():  # the callback page closes itself once Connect UI acknowledges it
            await popup.wait_for_event("close", timeout=MS)
    finally:
        await context.close()

    connect = next(e for e in events if e["type"] == "connect")
    assert connect["payload"]["providerConfigKey"] == key
    assert connect["payload"]["isPending"] is False
    status, connection = await api.connection(key, connect["payload"]["connectionId"])
    assert status == 200, connection
    assert connection["end_user"]["id"] == "end-user-oauth"
    assert connection["credentials"]["type"] == "OAUTH2"
    assert short_lived_as.stats(app.client_id)["authorization_code_grants"] == 1
    assert connection["provider"] == PROVIDER


async def test_a_refused_consent_shows_the_provider_error(
    browser: Browser, platform: Up, api: Api, short_lived_as: OAuthServer, user: tuple[str, str], tmp_path: Path
) -> None:
    app = short_lived_as.create_app(name="connect-ui-deny", redirect_uris=[platform.api + "/oauth/callback"])
    key = await api.integration(app)
    _, link = await _session(api, "end-user-deny", [key])
    context = await _context(browser)
    try:
        page = await context.new_page()
        await page.goto(link)
        async with page.expect_popup(timeout=MS) as opened:
            await page.get_by_role("button", name="Connect").click()
        # the authorization server's pages send COOP same-origin: the popup loses its opener, so the outcome can
        # only come back on the websocket (and the error page stays open for the user to read and close)
        await login_and_consent(await opened.value, *user, allow=False, timeout=WAIT)
        await expect(page.get_by_role("heading", name="Couldn't connect Test DOT")).to_be_visible(timeout=MS)
        await expect(page.locator("#failure-message")).to_contain_text("access_denied")
        await page.screenshot(path=tmp_path / "oauth-denied.png")
    finally:
        await context.close()
    status, listed = await api.call("GET", f"/connections?integrationId={key}")
    assert (status, listed["connections"]) == (200, [])


async def test_an_oauth_error_page_is_acknowledged_and_its_popup_closed(
    browser: Browser, platform: Up, api: Api
) -> None:
    key = await _integration(api, PROVIDER)  # no OAuth client: /oauth/connect answers with its error page
    _, link = await _session(api, "end-user-no-client", [key])
    context = await _context(browser)
    try:
        page = await context.new_page()
        await page.goto(link)
        async with page.expect_popup(timeout=MS) as opened:
            await page.get_by_role("button", name="Connect").click()
        popup = await opened.value
        await expect(page.get_by_role("heading", name="Couldn't connect Test DOT")).to_be_visible(timeout=MS)
        await expect(page.locator("#failure-message")).to_contain_text("missing its OAuth client id or client secret")
        # the error page stays open unless its opener answers nango_oauth_callback_ack (or closes it)
        if not popup.is_closed():
            await popup.wait_for_event("close", timeout=MS)
    finally:
        await context.close()


async def test_a_refused_key_shows_the_reason_and_try_again_keeps_the_other_fields(
    browser: Browser, platform: Up, api: Api, tmp_path: Path
) -> None:
    key = await _integration(api, KEY_PROVIDER)
    _, link = await _session(api, "end-user-refused", [key])
    refused = "ks_refused_" + secrets.token_hex(8)
    context = await _context(browser, color_scheme="dark")
    try:
        page = await context.new_page()
        await page.goto(link)
        await page.get_by_label("Workspace", exact=True).fill("acme")
        await page.get_by_label("Keystone API key", exact=True).fill(refused)
        await page.get_by_role("button", name="Connect").click()
        await expect(page.get_by_role("heading", name="Couldn't connect Keystone")).to_be_focused()
        await expect(
            page.get_by_text("The provider refused the credentials: GET /me answered 401", exact=True)
        ).to_be_visible()
        await page.get_by_text("Details").click()
        await expect(page.get_by_text("connection_test_failed")).to_be_visible()
        assert refused not in await page.content()
        background = await page.evaluate("getComputedStyle(document.getElementById('card')).backgroundColor")
        assert background == "rgb(23, 27, 33)"  # the dark palette, from prefers-color-scheme
        await page.screenshot(path=tmp_path / "refused-dark.png")

        await page.get_by_role("button", name="Try again").click()
        await expect(page.get_by_label("Workspace", exact=True)).to_have_value("acme")
        await expect(page.get_by_label("Keystone API key", exact=True)).to_have_value("")  # secrets are not kept
        await page.get_by_label("Keystone API key", exact=True).fill(GOOD_KEY)
        await page.get_by_role("button", name="Connect").click()
        await expect(page.get_by_role("heading", name="Keystone is connected")).to_be_visible(timeout=MS)
    finally:
        await context.close()
    assert (await _only_connection(api, key))["end_user"]["id"] == "end-user-refused"


async def test_unknown_expired_and_missing_sessions_say_so(
    browser: Browser, platform: Up, api: Api, tmp_path: Path
) -> None:
    key = await _integration(api, KEY_PROVIDER)
    token, link = await _session(api, "end-user-gone", [key])
    assert await _end_session(platform.api, token) == 204
    context = await _context(browser)
    try:
        page = await context.new_page()
        for url in (link, f"{platform.connect_ui}/?session_token=nango_connect_session_{'0' * 64}"):
            await page.goto(url)
            await expect(page.get_by_role("heading", name="This link has expired")).to_be_visible()
            await expect(page.get_by_text("Go back to the app and start again.")).to_be_visible()
        await page.screenshot(path=tmp_path / "expired.png")
        await page.goto(f"{platform.connect_ui}/?session_token=not-a-token")
        await expect(page.get_by_role("heading", name="This link is not valid")).to_be_visible()
        await page.goto(platform.connect_ui + "/")
        await expect(page.get_by_role("heading", name="This page needs a connection link")).to_be_visible()
        await page.goto(f"{platform.connect_ui}/?session_token={token}&apiURL=https://api.nango.dev")
        await expect(page.get_by_role("heading", name="This page was opened incorrectly")).to_be_visible()
    finally:
        await context.close()


async def test_escape_closes_the_iframe(browser: Browser, platform: Up, api: Api, host_page: str) -> None:
    key = await _integration(api, KEY_PROVIDER)
    token, _ = await _session(api, "end-user-escape", [key])
    context = await _context(browser)
    try:
        page = await context.new_page()
        fragment = urlencode({"ui": platform.connect_ui, "api": platform.api, "token": token})
        await page.goto(f"{host_page}#{fragment}")
        frame = page.frame_locator("#connect-ui")
        await expect(frame.get_by_role("heading", name="Connect Keystone")).to_be_focused()
        await page.keyboard.press("Escape")
        assert [e["type"] for e in await _events(page, "close")] == ["ready", "close"]
        await expect(page.locator("#connect-ui")).to_have_count(0)
    finally:
        await context.close()


async def test_a_reconnect_session_goes_straight_to_its_form_and_keeps_the_connection(
    browser: Browser, platform: Up, api: Api, tmp_path: Path
) -> None:
    key = await _integration(api, KEY_PROVIDER)
    connection = {
        "provider_config_key": key,
        "connection_id": "cui-reconnect",
        "connection_config": {"workspace": "acme"},
        "credentials": {"type": "API_KEY", "apiKey": GOOD_KEY},
    }
    status, answer = await api.call("POST", "/connections", connection)
    assert status == 201, answer
    guide = "https://help.example.test/keystone"
    body = {
        "connection_id": "cui-reconnect",
        "integration_id": key,
        "end_user": {"id": "end-user-reconnect"},
        "overrides": {key: {"docs_connect": guide}},
        "integrations_config_defaults": {key: {"connection_config": {"workspace": "acme"}}},
    }
    status, answer = await api.call("POST", "/connect/sessions/reconnect", body)
    assert status == 201, answer
    context = await _context(browser)
    try:
        page = await context.new_page()
        await page.goto(answer["data"]["connect_link"])
        await expect(page.get_by_role("heading", name="Reconnect Keystone")).to_be_focused()
        await expect(page.get_by_role("link", name="How to connect Keystone")).to_have_attribute("href", guide)
        await expect(page.get_by_label("Workspace", exact=True)).to_have_count(0)  # set by the session
        await expect(page.get_by_role("button", name="Back to the list")).to_be_hidden()
        await page.screenshot(path=tmp_path / "reconnect.png")
        await page.get_by_label("Keystone API key", exact=True).fill(GOOD_KEY)
        await page.get_by_role("button", name="Reconnect").click()
        await expect(page.get_by_role("heading", name="Keystone is connected")).to_be_visible(timeout=MS)
    finally:
        await context.close()
    reconnected = await _only_connection(api, key)
    assert reconnected["connection_id"] == "cui-reconnect"
    assert reconnected["connection_config"]["workspace"] == "acme"
