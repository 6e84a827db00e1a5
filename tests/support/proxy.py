"""A server for the proxy's tests: providers pointing at local upstreams, and a client that makes
integrations, connections and `/proxy` calls the way a customer's backend does."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from multidict import CIMultiDictProxy

from tests.support.inprocess import InProcessServer, new_schema, server_env, start_server


def provider(auth_mode: str, **fields: Any) -> dict[str, Any]:
    base = {"display_name": "Test", "categories": ["dev-tools"], "docs": "https://example.com/docs"}
    return {**base, "auth_mode": auth_mode, **fields}


@dataclass
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str | None:
        try:
            return str(self.json()["error"]["code"])
        except (ValueError, KeyError, TypeError):
            return None


@dataclass
class ProxyClient:
    server: InProcessServer
    key: str
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.server.url

    async def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.key}"}
        async with self.http.request(method, self.url + path, json=body, headers=headers) as response:
            return response.status, await response.json()

    async def integration(self, provider_name: str, credentials: dict[str, Any] | None = None) -> str:
        unique_key = f"{provider_name}-{uuid.uuid4().hex[:8]}"
        body: dict[str, Any] = {"provider": provider_name, "unique_key": unique_key}
        if credentials:
            body["credentials"] = credentials
        status, answer = await self.api("POST", "/integrations", body)
        assert status == 200, answer
        return unique_key

    async def connection(self, integration: str, credentials: dict[str, Any], **extra: Any) -> str:
        connection_id = extra.pop("connection_id", None) or f"conn-{uuid.uuid4().hex[:8]}"
        body = {"provider_config_key": integration, "connection_id": connection_id, "credentials": credentials, **extra}
        status, answer = await self.api("POST", "/connections", body)
        assert status == 201, answer
        return connection_id

    async def proxy(
        self,
        method: str,
        endpoint: str,
        *,
        integration: str | None,
        connection: str | None,
        headers: dict[str, str] | None = None,
        data: Any = None,
        decompress: bool = False,
    ) -> Answer:
        sent = {"Authorization": f"Bearer {self.key}", **(headers or {})}
        if integration is not None:
            sent["Provider-Config-Key"] = integration
        if connection is not None:
            sent["Connection-Id"] = connection
        async with self.http.request(
            method, self.url + "/proxy" + endpoint, headers=sent, data=data, auto_decompress=decompress
        ) as response:
            return Answer(response.status, response.headers, await response.read())


@contextlib.asynccontextmanager
async def proxy_server(
    database_url: str, tmp: Path, providers: dict[str, Any], **env: str
) -> AsyncIterator[ProxyClient]:
    """A server in this event loop with `providers` laid over the catalog and `env` added."""
    providers_file = tmp / f"providers-{uuid.uuid4().hex[:6]}.yaml"
    providers_file.write_text(yaml.safe_dump(providers))
    key = str(uuid.uuid4())
    settings = server_env(
        database_url,
        new_schema("nango_proxy"),
        tmp,
        NANGO_SECRET_KEY_DEV=key,
        NANGO_PROVIDERS_FILE=str(providers_file),
        LOG_LEVEL="warning",
        **env,
    )
    server = await start_server(settings)
    try:
        async with aiohttp.ClientSession() as http:
            yield ProxyClient(server, key, http)
    finally:
        await server.stop()


__all__ = ["Answer", "ProxyClient", "provider", "proxy_server"]
