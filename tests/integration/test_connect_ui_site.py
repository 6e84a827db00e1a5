"""Connect UI's site over real sockets: the page and its assets with strict headers, 404s for everything
else (traversal included), and the server process serving it on NANGO_CONNECT_UI_PORT — or refusing to start
when that port is taken."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from nango.config import SettingsError
from nango.crypto import generate_key
from nango.server import connect_ui
from nango.server.connect_ui.site import STATIC_DIR, Bundle
from tests.conftest import free_port
from tests.support.inprocess import new_schema, server_env, start_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

API = "https://api.example.test:8443"


@pytest.fixture(scope="module")
async def site() -> AsyncIterator[str]:
    port = free_port()
    runner = await connect_ui.start(
        connect_ui.build_app(api_url=API + "/"), host="127.0.0.1", port=port, shutdown_timeout=1
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, CIMultiDict[str], bytes]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.get(url, headers=headers, allow_redirects=False) as response,
    ):
        return response.status, CIMultiDict(response.headers), await response.read()


async def _raw(port: int, target: str) -> tuple[int, bytes]:
    """A request line sent as is, so no client normalises `..` or percent-escapes away."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    status = int(data.split(b" ", 2)[1])
    return status, data


def _assert_strict(headers: Mapping[str, str]) -> None:
    csp = headers["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["connect-src"] == f"'self' {API} wss://api.example.test:8443"
    assert directives["img-src"] == f"'self' {API} data:"
    assert directives["frame-ancestors"] == "*"
    assert directives["base-uri"] == "'none'"
    assert directives["object-src"] == "'none'"
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert "X-Frame-Options" not in headers  # embedding is the point of openConnectUI


@pytest.mark.parametrize("path", ["/", "/integrations", "/go", "/?session_token=x&apiURL=y"])
async def test_spa_routes_serve_the_page_with_strict_headers(site: str, path: str) -> None:
    status, headers, body = await _get(site + path)
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-cache"
    _assert_strict(headers)
    page = body.decode()
    version = Bundle.load().version
    assert f'data-api-url="{API}/"' in page
    # no inline script: every <script> has a src, and the module is versioned
    assert re.findall(r"<script[^>]*>", page) == [f'<script type="module" src="assets/main.js?v={version}">']
    assert f'href="assets/app.css?v={version}"' in page
    assert "style=" not in page
    assert "<style" not in page
    assert "{{" not in page


async def test_versioned_assets_are_cached_for_good_and_others_revalidate(site: str) -> None:
    version = Bundle.load().version
    status, headers, body = await _get(f"{site}/assets/main.js?v={version}")
    assert status == 200
    assert headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert body == (STATIC_DIR / "main.js").read_bytes()
    _assert_strict(headers)

    # a module import carries no version: it revalidates with its ETag
    status, headers, _ = await _get(f"{site}/assets/api.js")
    assert (status, headers["Cache-Control"]) == (200, "no-cache")
    etag = headers["ETag"]
    status, headers, body = await _get(f"{site}/assets/api.js", {"If-None-Match": etag})
    assert (status, body) == (304, b"")
    status, headers, _ = await _get(f"{site}/assets/app.css?v=stale")
    assert (status, headers["Cache-Control"], headers["Content-Type"]) == (200, "no-cache", "text/css; charset=utf-8")
    status, headers, _ = await _get(f"{site}/assets/icon.svg?v={version}")
    assert (status, headers["Content-Type"]) == (200, "image/svg+xml")


@pytest.mark.parametrize(
    "path",
    [
        "/nope",
        "/index.html",
        "/assets/index.html",
        "/assets/nope.js",
        "/assets/",
        "/static/main.js",
        "/integrations/",
        "/go/x",
        "/favicon.ico",
    ],
)
async def test_anything_else_is_a_404_with_the_same_headers(site: str, path: str) -> None:
    status, headers, body = await _get(site + path)
    assert status == 404
    assert headers["Content-Type"].startswith("text/plain")
    _assert_strict(headers)
    assert b"<html" not in body


@pytest.mark.parametrize(
    "target",
    [
        "/assets/../site.py",
        "/assets/..%2Fsite.py",
        "/assets/%2e%2e%2fsite.py",
        "/assets/..%2F..%2Fsettings.py",
        "/assets/....//site.py",
        "/../../../../etc/passwd",
        "/assets/%2e%2e/%2e%2e/app.py",
        "/assets/..\\site.py",
        "/assets/main.js%00.py",
    ],
)
async def test_no_path_reaches_the_filesystem(site: str, target: str) -> None:
    port = int(site.rsplit(":", 1)[1])
    status, data = await _raw(port, target)
    assert status in (400, 404), data[:200]
    assert b"import " not in data
    assert b"root:" not in data


async def test_only_get_and_head(site: str) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.post(site + "/", data=b"x") as response:
            assert response.status == 405
            assert response.headers["Allow"] == "GET, HEAD"
            _assert_strict(response.headers)
        async with http.head(site + "/go") as response:
            assert response.status == 200


def test_the_api_url_is_escaped_into_the_page() -> None:
    page = Bundle.load().render_index(api_url='https://api.example.test/"><script>alert(1)</script>').decode()
    assert "<script>alert" not in page
    assert 'data-api-url="https://api.example.test/&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in page


async def test_the_server_serves_it_and_connect_links_follow_the_port(database_url: str, tmp_path: Path) -> None:
    ui_port, dev_key = free_port(), str(uuid.uuid4())
    env = server_env(
        database_url,
        new_schema("nango_cui"),
        tmp_path,
        NANGO_ENCRYPTION_KEY=generate_key(),
        NANGO_SECRET_KEY_DEV=dev_key,
        FLAG_SERVE_CONNECT_UI="true",
        NANGO_CONNECT_UI_PORT=str(ui_port),
    )
    server = await start_server(env)
    try:
        status, headers, body = await _get(f"http://127.0.0.1:{ui_port}/")
        assert status == 200
        # the page calls NANGO_SERVER_URL (here its default) unless openConnectUI passes apiURL
        assert 'data-api-url="http://localhost:3003"' in body.decode()
        assert "connect-src 'self' http://localhost:3003 ws://localhost:3003" in headers["Content-Security-Policy"]
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
            http.post(
                server.url + "/connect/sessions",
                json={"end_user": {"id": "u1"}},
                headers={"Authorization": f"Bearer {dev_key}"},
            ) as response,
        ):
            assert response.status == 201
            data = (await response.json())["data"]
        assert data["connect_link"] == f"http://localhost:{ui_port}/?session_token={data['token']}"
        # the page reads API errors across origins: they carry the CORS headers too
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
            http.get(
                server.url + "/connect/session",
                headers={"Authorization": f"Bearer nango_connect_session_{'0' * 64}", "Origin": "http://localhost"},
            ) as response,
        ):
            assert response.status == 401
            assert response.headers["Access-Control-Allow-Origin"] == "*"
            assert (await response.json())["error"]["code"] == "unknown_connect_session_token"
    finally:
        await server.stop()


async def test_a_taken_port_stops_the_server_with_a_clear_message(database_url: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = server_env(
            database_url,
            new_schema("nango_cui"),
            tmp_path,
            NANGO_ENCRYPTION_KEY=generate_key(),
            FLAG_SERVE_CONNECT_UI="true",
            NANGO_CONNECT_UI_PORT=str(port),
            NANGO_LOG_FORMAT="text",
        )
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "nango.server"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=45,
        )
    assert done.returncode == 2, done.stdout[-2000:]
    assert f"NANGO_CONNECT_UI_PORT {port} is already in use" in done.stdout
    assert "Traceback" not in done.stdout


async def test_the_site_alone_refuses_a_taken_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SettingsError, match=f"NANGO_CONNECT_UI_PORT {port} is already in use"):
            await connect_ui.start(web.Application(), host="127.0.0.1", port=port, shutdown_timeout=1)
