"""Requests to a provider's token endpoint: code exchange, refresh, client credentials (§4.2, §4.7).

Errors carry the provider's `error` / `error_description` (never our secrets) so they can be shown
to the end user and recorded as the connection's auth error.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp

from nango.providers import Provider
from nango.providers.interpolate import interpolate, interpolate_url, template_values

log = logging.getLogger(__name__)

MAX_TOKEN_RESPONSE_BYTES = 1024 * 1024


class TokenRequestFailed(Exception):
    """The token endpoint refused or could not be reached. `error_type` is a short code."""

    def __init__(self, error_type: str, description: str, status: int | None = None) -> None:
        super().__init__(f"{error_type}: {description}")
        self.error_type = error_type
        self.description = description
        self.status = status


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str
    client_secret: str


def token_url(provider: Provider, connection_config: Mapping[str, Any], auth_mode: str = "OAUTH2") -> str:
    template = provider.token_url
    if isinstance(template, dict):
        template = template.get(auth_mode) or template.get("OAUTH2")
    if not template:
        raise TokenRequestFailed("invalid_provider_config", "the provider has no token_url")
    values = template_values(connection_config=connection_config)
    return interpolate_url(template, values, skip_encode=provider.token_url_skip_encode or ())


def _params(template: Mapping[str, str] | None, connection_config: Mapping[str, Any]) -> dict[str, str]:
    values = template_values(connection_config=connection_config)
    return {key: interpolate(value, values) for key, value in (template or {}).items()}


def _parse(body: bytes, content_type: str) -> dict[str, Any]:
    text = body.decode("utf-8", errors="replace")
    if "json" in content_type or text.lstrip().startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            raise TokenRequestFailed("invalid_token_response", "the token endpoint answered invalid JSON") from None
        if not isinstance(parsed, dict):
            raise TokenRequestFailed("invalid_token_response", "the token endpoint answered a non-object")
        return parsed
    return dict(parse_qsl(text, keep_blank_values=True))


class OAuth2Client:
    def __init__(self, http: aiohttp.ClientSession, *, timeout: float = 30.0) -> None:
        self.http = http
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def _request(
        self,
        provider: Provider,
        url: str,
        params: dict[str, str],
        client: ClientCredentials,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        basic = provider.token_request_auth_method == "basic"  # noqa: S105 - a setting's value, not a secret
        use_basic = basic or provider.authorization_method == "header"
        if use_basic:
            pair = f"{client.client_id}:{client.client_secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        else:
            params = {**params, "client_id": client.client_id, "client_secret": client.client_secret}
        body_format = provider.body_format or "form"
        data: bytes | None = None
        if body_format == "json":
            headers["Content-Type"] = "application/json"
            data = json.dumps(params).encode()
        elif body_format == "query":
            parts = urlsplit(url)
            query = urlencode([*parse_qsl(parts.query), *params.items()])
            url = urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
        else:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            data = urlencode(params).encode()
        try:
            async with self.http.post(url, data=data, headers=headers, timeout=self.timeout) as response:
                body = await response.content.read(MAX_TOKEN_RESPONSE_BYTES)
                content_type = response.headers.get("Content-Type", "")
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TokenRequestFailed(
                "token_endpoint_unreachable", f"{type(exc).__name__} calling the token endpoint"
            ) from None
        parsed: dict[str, Any] = {}
        try:
            parsed = _parse(body, content_type)
        except TokenRequestFailed:
            if 200 <= status < 300:
                raise
        if status >= 400 or "error" in parsed:
            error = str(parsed.get("error") or f"http_{status}")
            description = str(parsed.get("error_description") or parsed.get("error_message") or f"HTTP {status}")
            raise TokenRequestFailed(error, description, status)
        return parsed

    async def exchange_code(
        self,
        provider: Provider,
        client: ClientCredentials,
        *,
        code: str,
        redirect_uri: str,
        code_verifier: str | None,
        connection_config: Mapping[str, Any],
        auth_mode: str = "OAUTH2",
    ) -> dict[str, Any]:
        params = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        params.update(_params(provider.token_params, connection_config))
        params["grant_type"] = "authorization_code"
        if code_verifier:
            params["code_verifier"] = code_verifier
        return await self._request(provider, token_url(provider, connection_config, auth_mode), params, client)

    async def refresh(
        self,
        provider: Provider,
        client: ClientCredentials,
        *,
        refresh_token: str,
        connection_config: Mapping[str, Any],
    ) -> dict[str, Any]:
        params = {"grant_type": "refresh_token", **_params(provider.refresh_params, connection_config)}
        params["refresh_token"] = refresh_token
        url = provider.refresh_url
        target = (
            interpolate_url(url, template_values(connection_config=connection_config))
            if url
            else token_url(provider, connection_config)
        )
        return await self._request(provider, target, params, client)

    async def client_credentials(
        self,
        provider: Provider,
        client: ClientCredentials,
        *,
        scopes: list[str],
        connection_config: Mapping[str, Any],
    ) -> dict[str, Any]:
        params = {**_params(provider.token_params, connection_config), "grant_type": "client_credentials"}
        if scopes:
            params["scope"] = (provider.scope_separator or " ").join(scopes)
        return await self._request(provider, token_url(provider, connection_config, "OAUTH2_CC"), params, client)
