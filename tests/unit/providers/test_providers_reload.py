"""The reloader against a real HTTP server on loopback, started by each test."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from nango.providers import CatalogRef, CatalogReloader, ProviderCatalog, ProvidersSettings, load_catalog

VALID = """
acme-crm:
  display_name: Acme CRM
  categories: [crm]
  auth_mode: API_KEY
  docs: https://docs.acme.example
  proxy:
    base_url: https://api.acme.example
    headers:
      authorization: "Bearer ${apiKey}"
  credentials:
    apiKey: {type: string, title: API Key}
"""

VALID_V2 = VALID.replace("Acme CRM", "Acme CRM v2")

INVALID = """
acme-crm:
  display_name: Acme CRM
  categories: [crm]
  auth_mode: API_KEY
  docs: https://docs.acme.example
  proxy:
    base_urll: https://api.acme.example
"""


@dataclass
class Served:
    url: str
    body: str = VALID
    status: int = 200
    requests: int = 0


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    state = Served(url="")

    async def providers_file(_: web.Request) -> web.Response:
        state.requests += 1
        return web.Response(status=state.status, text=state.body, content_type="application/yaml")

    app = web.Application()
    app.router.add_get("/providers.yaml", providers_file)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}/providers.yaml"
    try:
        yield state
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
def packaged() -> ProviderCatalog:
    return load_catalog()


async def _started(reloader: CatalogReloader) -> CatalogReloader:
    await asyncio.wait_for(reloader.start(), timeout=10)
    return reloader


async def test_start_swaps_in_a_valid_remote_file(served: Served, packaged: ProviderCatalog) -> None:
    ref = CatalogRef(packaged)
    reloader = await _started(CatalogReloader(ref, served.url, interval_seconds=3600))
    try:
        acme = ref.current.get("acme-crm")
        assert acme is not None
        assert acme.display_name == "Acme CRM"
        assert "github" in ref.current  # laid over the packaged catalog, not instead of it
    finally:
        await asyncio.wait_for(reloader.stop(), timeout=10)


async def test_invalid_remote_file_keeps_the_previous_catalog(
    served: Served, packaged: ProviderCatalog, caplog: pytest.LogCaptureFixture
) -> None:
    ref = CatalogRef(packaged)
    reloader = await _started(CatalogReloader(ref, served.url, interval_seconds=3600))
    try:
        before = ref.current
        served.body = INVALID
        with caplog.at_level(logging.WARNING, logger="nango.providers.daemons"):
            assert await asyncio.wait_for(reloader.reload_once(), timeout=10) is False
        assert ref.current is before
        assert any("invalid" in r.getMessage() and "base_urll" in str(r.__dict__.get("error")) for r in caplog.records)

        for body, status in [("not: [valid", 200), (VALID_V2, 500)]:
            served.body, served.status = body, status
            assert await asyncio.wait_for(reloader.reload_once(), timeout=10) is False
            assert ref.current is before
    finally:
        await asyncio.wait_for(reloader.stop(), timeout=10)


async def test_loop_picks_up_a_changed_file_and_skips_an_unchanged_one(
    served: Served, packaged: ProviderCatalog
) -> None:
    ref = CatalogRef(packaged)
    reloader = await _started(CatalogReloader(ref, served.url, interval_seconds=0.05))
    try:
        first = ref.current
        await asyncio.sleep(0.3)
        assert ref.current is first  # same body: nothing reparsed, nothing swapped
        assert served.requests >= 2
        served.body = VALID_V2

        async def swapped() -> None:
            while (acme := ref.current.get("acme-crm")) is None or acme.display_name != "Acme CRM v2":
                await asyncio.sleep(0.02)

        await asyncio.wait_for(swapped(), timeout=10)
    finally:
        await asyncio.wait_for(reloader.stop(), timeout=10)


async def test_unreachable_url_keeps_the_catalog_and_does_not_raise(packaged: ProviderCatalog) -> None:
    async def closed_port() -> int:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = int(server.sockets[0].getsockname()[1])
        server.close()
        await server.wait_closed()
        return port

    ref = CatalogRef(packaged)
    url = f"http://127.0.0.1:{await closed_port()}/providers.yaml"
    reloader = await _started(CatalogReloader(ref, url, interval_seconds=3600, timeout_seconds=5))
    try:
        assert ref.current is packaged
    finally:
        await asyncio.wait_for(reloader.stop(), timeout=10)


async def test_oversized_file_is_refused(served: Served, packaged: ProviderCatalog) -> None:
    ref = CatalogRef(packaged)
    served.body = VALID + "#" * 4096
    reloader = await _started(CatalogReloader(ref, served.url, interval_seconds=3600, max_bytes=1024))
    try:
        assert ref.current is packaged
    finally:
        await asyncio.wait_for(reloader.stop(), timeout=10)


async def test_remote_file_is_laid_over_the_operator_file(
    served: Served, packaged: ProviderCatalog, tmp_path: Path
) -> None:
    operator = tmp_path / "providers.yaml"
    operator.write_text("internal-hn:\n  alias: hacker-news\n  display_name: Internal HN\n", encoding="utf-8")
    ref = CatalogRef(load_catalog(extra_file=operator))
    reloader = await _started(CatalogReloader(ref, served.url, interval_seconds=3600, extra_file=operator))
    try:
        assert "internal-hn" in ref.current
        assert "acme-crm" in ref.current
    finally:
        await asyncio.wait_for(reloader.stop(), timeout=10)


def test_from_settings_builds_a_reloader_only_when_a_url_is_set(
    monkeypatch: pytest.MonkeyPatch, packaged: ProviderCatalog
) -> None:
    ref = CatalogRef(packaged)
    monkeypatch.delenv("PROVIDERS_URL", raising=False)
    assert CatalogReloader.from_settings(ProvidersSettings(), ref) is None
    monkeypatch.setenv("PROVIDERS_URL", "https://config.example.com/providers.yaml")
    assert isinstance(CatalogReloader.from_settings(ProvidersSettings(), ref), CatalogReloader)
