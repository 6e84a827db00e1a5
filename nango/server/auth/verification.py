"""Testing submitted credentials with the provider's `proxy.verification` call before storing them.

The check is built like a proxy request: base URL (`base_url_override`, else `proxy.base_url`)
rendered with the connection config and the credentials, the provider's proxy headers and query,
the auth mode's own header, then the check's headers. Endpoints are tried in order until one answers
2xx. Redirects are not followed, so credentials never travel to a location the provider did not name.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from nango.providers import Provider, Verification
from nango.providers.interpolate import Values, interpolate_headers, render, template_values
from nango.server.auth.errors import InvalidConnectionConfig
from nango.server.auth.injection import credential_headers, lower_keys, provider_parts
from nango.server.errors import ConnectionTestFailed
from nango.server.integrations import Integration

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 15.0
_PREFIXES = ("connectionConfig.", "credentials.")


def _placeholder_names(unresolved: Sequence[str]) -> list[str]:
    names = []
    for raw in unresolved:
        name = raw.removeprefix("${").removesuffix("}").strip()
        for prefix in _PREFIXES:
            name = name.removeprefix(prefix)
        names.append(name)
    return list(dict.fromkeys(names))


def _rendered(template: str, values: Values, where: str) -> str:
    result = render(template, values)
    if result.unresolved:
        raise InvalidConnectionConfig.missing(_placeholder_names(result.unresolved), where)
    return result.text


@dataclass(frozen=True)
class _Check:
    """One verification: what is tested, with which values, against which base URL."""

    spec: Verification
    provider: Provider
    integration: Integration
    credentials: Mapping[str, Any]
    connection_config: Mapping[str, Any]
    values: Values
    base_url: str | None

    def url(self, endpoint: str) -> URL:
        path = _rendered(endpoint, self.values, "verification endpoint")
        if path.startswith(("http://", "https://")):
            return URL(path)
        if self.base_url is None:
            raise ConnectionTestFailed("The provider has no base URL to test the credentials against")
        return URL(self.base_url.rstrip("/") + "/" + path.lstrip("/"))

    def body(self) -> str | None:
        data = self.spec.data
        if data is None:
            return None
        return data if isinstance(data, str) else json.dumps(data)

    def headers(self, url: URL, provider_headers: Mapping[str, str]) -> dict[str, str]:
        """The auth mode's header, then the provider's proxy headers, then the check's own (or JSON)."""
        spec_headers = lower_keys(interpolate_headers(self.spec.headers, self.values)) if self.spec.headers else None
        return {
            **credential_headers(self.spec.method, url, self.credentials, self.integration, self.connection_config),
            **provider_headers,
            **(spec_headers or {"content-type": "application/json"}),
        }


class CredentialVerifier:
    def __init__(self, http: aiohttp.ClientSession, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.http = http
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def verify(
        self,
        provider: Provider,
        integration: Integration,
        credentials: Mapping[str, Any],
        connection_config: Mapping[str, Any],
    ) -> bool:
        """True when the provider accepted the credentials, False when it declares no check.
        Raises `ConnectionTestFailed` when every endpoint refused or could not be reached."""
        spec = provider.proxy.verification if provider.proxy else None
        if spec is None:
            return False
        values = template_values(
            connection_config=connection_config,
            credentials=credentials,
            client_id=integration.client_id,
            client_secret=integration.client_secret,
        )
        base_template = spec.base_url_override or (provider.proxy.base_url if provider.proxy else None)
        base_url = _rendered(base_template, values, "base URL") if base_template else None
        check = _Check(spec, provider, integration, credentials, connection_config, values, base_url)
        attempts: list[dict[str, Any]] = []
        for endpoint in spec.endpoints:
            outcome = await self._attempt(check, endpoint)
            if outcome is None:
                return True
            attempts.append(outcome)
        raise self._failure(check, attempts)

    async def _attempt(self, check: _Check, endpoint: str) -> dict[str, Any] | None:
        """None when the endpoint answered 2xx, else what went wrong (its status or the error's kind)."""
        provider_headers, query = provider_parts(check.provider, check.values)
        try:
            url = check.url(endpoint)
            url = url.update_query(query) if query else url
        except ValueError:
            return {"endpoint": endpoint, "error": "invalid_url"}
        if not url.absolute:
            return {"endpoint": endpoint, "error": "invalid_url"}
        try:
            async with self.http.request(
                check.spec.method,
                url,
                headers=check.headers(url, provider_headers),
                data=check.body(),
                timeout=self.timeout,
                allow_redirects=False,
            ) as response:
                status = response.status
        except TimeoutError:
            return {"endpoint": endpoint, "error": "timeout"}
        except aiohttp.ClientError as exc:
            return {"endpoint": endpoint, "error": type(exc).__name__}
        return None if 200 <= status < 300 else {"endpoint": endpoint, "status": status}

    @staticmethod
    def _failure(check: _Check, attempts: list[dict[str, Any]]) -> ConnectionTestFailed:
        log.info(
            "credential check failed",
            extra={
                "provider": check.integration.provider,
                "integration": check.integration.unique_key,
                "attempts": attempts,
            },
        )
        answered = [a for a in attempts if "status" in a]
        if not answered:
            reason = attempts[-1]["error"]
            return ConnectionTestFailed(
                f"The provider could not be reached to test the credentials ({reason})",
                payload={"status": None, "attempts": attempts},
            )
        last = answered[-1]
        return ConnectionTestFailed(
            f"The provider refused the credentials: {check.spec.method} {last['endpoint']} answered {last['status']}",
            payload={"status": last["status"], "attempts": attempts},
        )
