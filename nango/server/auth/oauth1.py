"""Requests to an OAuth 1.0a provider's token endpoints (RFC 5849 §2.1, §2.3): the temporary (request) token and
the token credentials, each signed with the integration's consumer key and secret.

Errors are `TokenRequestFailed` carrying the provider's `oauth_problem` (or `error`) and never our secrets.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
from yarl import URL

from nango.providers import Provider
from nango.providers.interpolate import interpolate, interpolate_url, template_values
from nango.server.auth.injection import oauth1_header
from nango.server.auth.oauth2 import MAX_TOKEN_RESPONSE_BYTES, TokenRequestFailed, token_url

DEFAULT_SIGNATURE_METHOD = "HMAC-SHA1"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_PROBLEM = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_MAX_DESCRIPTION = 300


@dataclass(frozen=True)
class Consumer:
    key: str
    secret: str


@dataclass(frozen=True)
class TokenPair:
    """`oauth_token` / `oauth_token_secret` and the provider's whole answer (Twitter adds user_id, screen_name)."""

    token: str
    secret: str
    raw: dict[str, Any]


def _parse(body: bytes, content_type: str) -> dict[str, Any]:
    text = body.decode("utf-8", errors="replace")
    if "json" in content_type or text.lstrip().startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return dict(parse_qsl(text.strip(), keep_blank_values=True))


def _refusal(status: int, answer: Mapping[str, Any]) -> TokenRequestFailed:
    problem = answer.get("oauth_problem") or answer.get("error")
    error_type = str(problem) if isinstance(problem, str) and _PROBLEM.match(problem) else f"http_{status}"
    description = answer.get("oauth_problem_advice") or answer.get("error_description") or answer.get("message")
    text = str(description) if isinstance(description, str) and description else f"HTTP {status}"
    return TokenRequestFailed(error_type, text[:_MAX_DESCRIPTION], status)


class OAuth1Client:
    def __init__(self, http: aiohttp.ClientSession, *, timeout: float = 30.0) -> None:
        self.http = http
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def request_token(
        self, provider: Provider, consumer: Consumer, *, callback: str, connection_config: Mapping[str, Any]
    ) -> TokenPair:
        """A temporary token for `callback` (sent as `oauth_callback`), with the provider's `request_params`."""
        if not provider.request_url:
            raise TokenRequestFailed("invalid_provider_config", "the provider has no request_url")
        values = template_values(connection_config=connection_config)
        params = {key: interpolate(value, values) for key, value in (provider.request_params or {}).items()}
        return await self._call(
            provider,
            provider.request_http_method or "POST",
            interpolate_url(provider.request_url, values),
            consumer,
            protocol={"oauth_callback": callback},
            params=params,
        )

    async def access_token(
        self,
        provider: Provider,
        consumer: Consumer,
        *,
        request_token: TokenPair,
        verifier: str,
        connection_config: Mapping[str, Any],
    ) -> TokenPair:
        """The token credentials for an authorized request token and the verifier the callback carried."""
        return await self._call(
            provider,
            provider.token_http_method or "POST",
            token_url(provider, connection_config, "OAUTH1"),
            consumer,
            protocol={"oauth_verifier": verifier},
            token=request_token,
        )

    async def _call(
        self,
        provider: Provider,
        method: str,
        target: str,
        consumer: Consumer,
        *,
        protocol: Mapping[str, str],
        params: Mapping[str, str] | None = None,
        token: TokenPair | None = None,
    ) -> TokenPair:
        method = method.upper()
        url = URL(target)
        in_body = method in _BODY_METHODS
        form = list((params or {}).items()) if in_body else []
        if params and not in_body:
            url = url.update_query(dict(params))
        header = oauth1_header(
            method,
            url,
            consumer_key=consumer.key,
            consumer_secret=consumer.secret,
            signature_method=provider.signature_method or DEFAULT_SIGNATURE_METHOD,
            token=token.token if token else "",
            token_secret=token.secret if token else "",
            protocol=protocol,
            form=form,
        )
        headers = {"Authorization": header}
        data: bytes | None = None
        if in_body:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            data = urlencode(form).encode()
        try:
            async with self.http.request(method, url, data=data, headers=headers, timeout=self.timeout) as response:
                status = response.status
                content_type = response.headers.get("Content-Type", "")
                body = await response.content.read(MAX_TOKEN_RESPONSE_BYTES)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TokenRequestFailed(
                "token_endpoint_unreachable", f"{type(exc).__name__} calling the OAuth 1.0a token endpoint"
            ) from None
        answer = _parse(body, content_type)
        if status >= 400 or "oauth_problem" in answer:
            raise _refusal(status, answer)
        oauth_token, secret = answer.get("oauth_token"), answer.get("oauth_token_secret")
        if not isinstance(oauth_token, str) or not oauth_token or not isinstance(secret, str):
            raise TokenRequestFailed(
                "invalid_token_response", "the answer has no oauth_token and oauth_token_secret", status
            )
        return TokenPair(oauth_token, secret, answer)
