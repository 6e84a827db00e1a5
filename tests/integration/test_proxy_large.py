"""A 1 GiB download and a 200 MiB upload through `/proxy`: the bytes arrive identical (SHA-256) and
the server process (started on its own so its memory can be measured) grows by less than 50 MB."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import aiohttp
import psutil
import pytest
import yaml
from aiohttp import web

from tests.conftest import free_port
from tests.support.inprocess import new_schema, server_env
from tests.support.proxy import provider

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

GIB = 1024**3
MIB = 1024**2
DOWNLOAD = GIB
UPLOAD = 200 * MIB
RSS_GROWTH_LIMIT = 50 * 1000**2
_BLOCK = random.Random(7).randbytes(MIB)


def _chunk(index: int) -> bytes:
    """The index-th MiB of the generated content: never the same twice, nothing to compress."""
    return index.to_bytes(8, "big") + _BLOCK[8:]


@dataclass
class Files:
    url: str = ""
    sent: dict[str, str] = field(default_factory=dict)
    received: dict[str, tuple[int, str]] = field(default_factory=dict)


def _files_app(files: Files) -> web.Application:
    async def download(request: web.Request) -> web.StreamResponse:
        size = int(request.query["size"])
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        response.headers["Content-Disposition"] = 'attachment; filename="big.bin"'
        await response.prepare(request)
        digest, index, left = hashlib.sha256(), 0, size
        while left > 0:
            chunk = _chunk(index)[: min(MIB, left)]
            digest.update(chunk)
            await response.write(chunk)
            left -= len(chunk)
            index += 1
        await response.write_eof()
        files.sent[request.query["key"]] = digest.hexdigest()
        return response

    async def upload(request: web.Request) -> web.Response:
        digest, size = hashlib.sha256(), 0
        async for chunk in request.content.iter_chunked(MIB):
            digest.update(chunk)
            size += len(chunk)
        files.received[request.query["key"]] = (size, digest.hexdigest())
        return web.json_response({"size": size})

    app = web.Application(client_max_size=2 * GIB)
    app.router.add_get("/download", download)
    app.router.add_post("/upload", upload)
    return app


@pytest.fixture(scope="module")
async def files() -> AsyncIterator[Files]:
    state = Files()
    port = free_port()
    runner = web.AppRunner(_files_app(state))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    state.url = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()


@dataclass
class Server:
    url: str
    key: str
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def server(files: Files, database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("proxy-large")
    providers = tmp / "providers.yaml"
    providers.write_text(yaml.safe_dump({"big-files": provider("NONE", proxy={"base_url": files.url})}))
    key = str(uuid.uuid4())
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NANGO_")},
        **server_env(database_url, new_schema("nango_large"), tmp),
        "NANGO_SECRET_KEY_DEV": key,
        "NANGO_PROVIDERS_FILE": str(providers),
        "NANGO_OUTBOUND_URL_POLICY": '{"blockLoopback": false}',
        "NANGO_SERVER_PUBLIC_BODY_LIMIT": "1gb",
        "LOG_LEVEL": "warning",
    }
    process = subprocess.Popen([sys.executable, "-m", "nango.server"], env=env)
    try:
        yield Server(f"http://127.0.0.1:{env['SERVER_PORT']}", key, process)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


class PeakRss:
    """The highest resident set size of a process while the block runs, sampled every 0.1 s."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[PeakRss]:
        async def sample() -> None:
            while True:
                self.peak = max(self.peak, self.process.memory_info().rss)
                await asyncio.sleep(0.1)

        task = asyncio.create_task(sample())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.peak = max(self.peak, self.process.memory_info().rss)


async def _ready(server: Server) -> tuple[str, str, dict[str, str]]:
    auth = {"Authorization": f"Bearer {server.key}"}
    async with aiohttp.ClientSession(headers=auth) as http:
        async with asyncio.timeout(60):
            while True:
                assert server.process.poll() is None, "the server exited"
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(server.url + "/health") as r:
                        if r.status == 200:
                            break
                await asyncio.sleep(0.1)
        async with http.post(server.url + "/integrations", json={"provider": "big-files", "unique_key": "big"}) as r:
            assert r.status == 200, await r.text()
        body = {"provider_config_key": "big", "connection_id": "big-1", "credentials": {"type": "NONE"}}
        async with http.post(server.url + "/connections", json=body) as r:
            assert r.status == 201, await r.text()
    return "big", "big-1", {**auth, "Provider-Config-Key": "big", "Connection-Id": "big-1"}


async def _baseline(server: Server, headers: dict[str, str]) -> int:
    """RSS after a few small calls (pools, caches and the first log batch are in place)."""
    async with aiohttp.ClientSession(headers=headers) as http:
        for index in range(20):
            async with http.get(f"{server.url}/proxy/download?size={MIB}&key=warm{index}") as r:
                await r.read()
    await asyncio.sleep(0.5)
    return int(psutil.Process(server.process.pid).memory_info().rss)


async def test_one_gib_download_and_200_mib_upload(server: Server, files: Files) -> None:
    _, _, headers = await _ready(server)
    baseline = await _baseline(server, headers)
    rss = PeakRss(server.process.pid)
    started = time.monotonic()
    async with rss.watching(), aiohttp.ClientSession(headers=headers) as http:
        digest, size = hashlib.sha256(), 0
        async with http.get(f"{server.url}/proxy/download?size={DOWNLOAD}&key=down") as response:
            assert response.status == 200
            assert response.headers["Content-Length"] == str(DOWNLOAD)
            assert response.headers["Content-Disposition"] == 'attachment; filename="big.bin"'
            async for chunk in response.content.iter_chunked(MIB):
                digest.update(chunk)
                size += len(chunk)
        downloaded = time.monotonic() - started
        assert size == DOWNLOAD
        assert digest.hexdigest() == files.sent["down"]

        sent = hashlib.sha256()

        async def body() -> AsyncIterator[bytes]:
            for index in range(UPLOAD // MIB):
                chunk = _chunk(index + 5000)
                sent.update(chunk)
                yield chunk

        upload_headers = {"Content-Type": "application/octet-stream", "Content-Length": str(UPLOAD)}
        async with http.post(f"{server.url}/proxy/upload?key=up", data=body(), headers=upload_headers) as response:
            assert response.status == 200, await response.text()
            assert await response.json() == {"size": UPLOAD}
        assert files.received["up"] == (UPLOAD, sent.hexdigest())
    growth = rss.peak - baseline
    elapsed = time.monotonic() - started
    print(
        f"\n1 GiB down in {downloaded:.1f} s, 200 MiB up in {elapsed - downloaded:.1f} s; "
        f"server RSS {baseline / MIB:.0f} MiB -> peak {rss.peak / MIB:.0f} MiB (+{growth / MIB:.1f} MiB)"
    )
    assert growth < RSS_GROWTH_LIMIT, f"the server grew by {growth / MIB:.1f} MiB"
