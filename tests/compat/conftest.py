"""The official `@nangohq/node` SDK (pinned in package.json) against `nango up`.

`scripts/test.sh` installs the npm packages; the `platform` fixture starts the platform once for
the whole compat run, the `sdk` fixture one long-lived node process that calls SDK methods.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import free_port
from tests.support.platform import Up, start_up

HERE = Path(__file__).parent
# test_functions.py's upstream API listens here; its provider must be declared before `nango up` starts
FUNCTIONS_UPSTREAM_PORT = free_port()
FUNCTIONS_PROVIDER = "compat-crm"


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    if not (HERE / "node_modules" / "@nangohq" / "node").exists():
        pytest.fail("npm packages missing: run `npm ci --prefix tests/compat` (scripts/test.sh does)")
    # the suite makes more calls a minute than Nango's default limit of 200 allows one account
    # the proxy's upstream stubs listen on 127.0.0.1, which the default outbound policy refuses
    extra = {"DEFAULT_RATE_LIMIT_PER_MIN": "100000", "NANGO_OUTBOUND_URL_POLICY": '{"blockLoopback": false}'}
    tmp = tmp_path_factory.mktemp("compat")
    extra["NANGO_PROVIDERS_FILE"] = str(_functions_provider(tmp / "providers.yaml"))
    up = start_up(tmp, name="compat", extra_env=extra).wait_ready()
    yield up
    assert up.stop() == 0


def _functions_provider(path: Path) -> Path:
    paginate = {
        "type": "cursor",
        "cursor_name_in_request": "cursor",
        "cursor_path_in_response": "next_cursor",
        "response_path": "data",
        "limit_name_in_request": "limit",
    }
    provider = {
        "display_name": "Compat CRM",
        "categories": ["crm"],
        "docs": "https://example.com/docs",
        "auth_mode": "API_KEY",
        "proxy": {
            "base_url": f"http://127.0.0.1:{FUNCTIONS_UPSTREAM_PORT}",
            "headers": {"x-api-key": "${apiKey}"},
            "paginate": paginate,
        },
    }
    path.write_text(yaml.safe_dump({FUNCTIONS_PROVIDER: provider}))
    return path


@dataclass
class SdkError(Exception):
    status: int | None
    data: Any
    message: str

    @property
    def code(self) -> str | None:
        if isinstance(self.data, dict) and isinstance(self.data.get("error"), dict):
            return self.data["error"].get("code")
        return None


class Sdk:
    """Calls `new Nango({host, secretKey})[method](...args)` in the node driver."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self._ids = itertools.count()
        self._lock = asyncio.Lock()

    async def __call__(self, method: str, *args: Any, key: str | None = None) -> Any:
        async with self._lock:
            request = {"id": next(self._ids), "method": method, "args": list(args), "key": key}
            assert self.process.stdin is not None
            assert self.process.stdout is not None
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            await self.process.stdin.drain()
            line = await asyncio.wait_for(self.process.stdout.readline(), 60)
        answer = json.loads(line)
        if not answer["ok"]:
            raise SdkError(answer["status"], answer["data"], answer["message"])
        return answer["result"]


@pytest.fixture(scope="session")
async def sdk(platform: Up) -> AsyncIterator[Sdk]:
    node = shutil.which("node")
    assert node is not None, "node is needed for the compat tests"
    process = await asyncio.create_subprocess_exec(
        node,
        str(HERE / "driver.mjs"),
        platform.api,
        platform.dev_key,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=HERE,
        limit=64 * 1024 * 1024,
    )
    yield Sdk(process)
    assert process.stdin is not None
    process.stdin.close()
    await asyncio.wait_for(process.wait(), 10)
