"""GitHub App installations: installation access tokens obtained with the app's own JWT (reference §4.6 APP).

The app JWT is RS256 `{iat: now-60, exp: now+540, iss: app_id}` (back-dated for clock drift, under
GitHub's 10-minute limit), signed with the integration's private key: `client_id` is the app id and
`client_secret` the PEM for APP integrations, `custom.app_id` / `custom.private_key` for CUSTOM ones.
It is POSTed to the provider's `token_url` rendered with `connectionConfig.installation_id`.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import aiohttp
import jwt

from nango.providers import Provider
from nango.server.auth import credentials as creds
from nango.server.auth.jwt_tokens import pem
from nango.server.auth.oauth2 import MAX_TOKEN_RESPONSE_BYTES, TokenRequestFailed, token_url
from nango.server.integrations import Integration
from nango.server.refresh import Refreshed

APP_JWT_BACKDATE_SECONDS = 60
APP_JWT_LIFETIME_SECONDS = 540
# GitHub's installation tokens live one hour; used only when the answer has no expires_at
DEFAULT_TOKEN_LIFETIME = timedelta(hours=1)


def _private_key(text: str) -> str:
    """The PEM, also from the base64-encoded form Nango stores."""
    if "-----BEGIN" not in text:
        try:
            decoded = base64.b64decode(text, validate=False).decode()
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        if "-----BEGIN" in decoded:
            text = decoded
    return pem(text, "RSA PRIVATE KEY")


class GithubAppMinter:
    """Mints installation tokens for APP connections, at creation and when they are due (a `TokenMinter`)."""

    def __init__(self, http: aiohttp.ClientSession, *, timeout: float = 30.0) -> None:
        self.http = http
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    def app_jwt(self, integration: Integration, connection_config: Mapping[str, Any]) -> str:
        custom = integration.custom or {}
        key_text = custom.get("private_key") or integration.client_secret
        app_id = custom.get("app_id") or integration.client_id or connection_config.get("app_id")
        if not key_text or not app_id:
            raise TokenRequestFailed("missing_app_credentials", "the integration has no GitHub App id and private key")
        now = int(time.time())
        claims = {"iat": now - APP_JWT_BACKDATE_SECONDS, "exp": now + APP_JWT_LIFETIME_SECONDS, "iss": str(app_id)}
        try:
            return jwt.encode(claims, _private_key(key_text), algorithm="RS256")
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            # the exception text may quote key material: only its kind is reported
            raise TokenRequestFailed(
                "invalid_app_credentials", f"the GitHub App private key cannot sign ({type(exc).__name__})"
            ) from None

    async def install(
        self, provider: Provider, integration: Integration, connection_config: Mapping[str, Any]
    ) -> dict[str, Any]:
        """APP credentials for the installation named by `connection_config['installation_id']`."""
        if not connection_config.get("installation_id"):
            raise TokenRequestFailed("missing_installation_id", "the connection config has no installation_id")
        app_token = self.app_jwt(integration, connection_config)
        url = token_url(provider, connection_config, "APP")
        headers = {
            "Authorization": f"Bearer {app_token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
        try:
            async with self.http.post(url, headers=headers, timeout=self.timeout) as response:
                status = response.status
                body = await response.content.read(MAX_TOKEN_RESPONSE_BYTES)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TokenRequestFailed(
                "token_endpoint_unreachable", f"{type(exc).__name__} calling the installation token endpoint"
            ) from None
        try:
            raw = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raw = None
        if not isinstance(raw, dict):
            raise TokenRequestFailed("invalid_token_response", f"HTTP {status} with a body that is not a JSON object")
        if status >= 400:
            raise TokenRequestFailed(f"http_{status}", str(raw.get("message") or f"HTTP {status}"), status)
        token = raw.get("token")
        if not isinstance(token, str) or not token:
            raise TokenRequestFailed("invalid_token_response", "the installation token response has no token")
        expires_at = creds.parse_datetime(raw.get("expires_at")) or creds.now() + DEFAULT_TOKEN_LIFETIME
        return {
            "type": "APP",
            "access_token": token,
            "expires_at": creds.iso(expires_at),
            "raw": raw,
            "jwtToken": app_token,
        }

    async def mint(
        self,
        provider: Provider,
        integration: Integration,
        credentials: dict[str, Any],
        connection_config: dict[str, Any],
    ) -> Refreshed:
        fresh = await self.install(provider, integration, connection_config)
        return Refreshed(fresh, creds.expires_at(fresh))
