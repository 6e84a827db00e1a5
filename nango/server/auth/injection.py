"""Putting a connection's credentials on an outgoing provider request, as the proxy does (reference §3.4).

`provider_parts` renders the provider's `proxy.headers` / `proxy.query` templates (how API_KEY
credentials travel); `credential_headers` adds what the auth mode itself puts on the request.
Header names come back lower-cased so that later layers override earlier ones case-insensitively.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from yarl import URL

from nango.providers import Provider
from nango.providers.interpolate import Values, interpolate_headers
from nango.server.auth.errors import InvalidConnectionConfig
from nango.server.errors import ConnectionTestFailed
from nango.server.integrations import Integration

# auth mode -> the credential field sent as `Authorization: Bearer <value>`
_BEARER_FIELD = {"OAUTH2": "access_token", "APP": "access_token", "OAUTH2_CC": "token", "JWT": "token"}


def lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def provider_parts(provider: Provider, values: Values) -> tuple[dict[str, str], dict[str, str]]:
    """The provider's rendered proxy headers and query parameters; a template that does not fully
    resolve is left out rather than sent half-filled."""
    proxy = provider.proxy
    if proxy is None:
        return {}, {}
    return lower_keys(interpolate_headers(proxy.headers or {}, values)), interpolate_headers(proxy.query or {}, values)


def credential_headers(
    method: str,
    url: URL,
    credentials: Mapping[str, Any],
    integration: Integration,
    connection_config: Mapping[str, Any],
) -> dict[str, str]:
    """The headers the auth mode adds; `url` must be final (TBA signs its query)."""
    mode = str(credentials.get("type"))
    if mode == "BASIC":
        pair = f"{credentials.get('username') or ''}:{credentials.get('password') or ''}"
        return {"authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
    if mode == "TBA":
        return {"authorization": tba_authorization(method, url, credentials, integration, connection_config)}
    token = credentials.get(_BEARER_FIELD.get(mode, ""))
    if isinstance(token, str) and token:
        return {"authorization": f"Bearer {token}"}
    return {}


def _percent(value: str) -> str:
    # RFC 5849 §3.6: everything but the RFC 3986 unreserved characters is encoded
    return quote(value, safe="~-._")


def tba_authorization(
    method: str,
    url: URL,
    credentials: Mapping[str, Any],
    integration: Integration,
    connection_config: Mapping[str, Any],
) -> str:
    """NetSuite token-based authentication: an OAuth 1.0a header signed with HMAC-SHA256, the
    consumer being the integration (or the connection's override) and the token the end user's."""
    override = credentials.get("config_override") or {}
    consumer_key = override.get("client_id") or integration.client_id
    consumer_secret = override.get("client_secret") or integration.client_secret
    if not consumer_key or not consumer_secret:
        raise ConnectionTestFailed("The integration has no client id and secret to sign TBA requests with")
    account_id = connection_config.get("accountId")
    if not isinstance(account_id, str) or not account_id:
        raise InvalidConnectionConfig.missing(["accountId"], "TBA signature")
    oauth = {
        "oauth_consumer_key": str(consumer_key),
        "oauth_nonce": secrets.token_hex(16),
        "oauth_signature_method": "HMAC-SHA256",
        "oauth_timestamp": str(int(time.time())),
        "oauth_token": str(credentials.get("token_id") or ""),
        "oauth_version": "1.0",
    }
    pairs = sorted((_percent(k), _percent(v)) for k, v in [*url.query.items(), *oauth.items()])
    normalized = "&".join(f"{k}={v}" for k, v in pairs)
    base_uri = str(url.with_query(None).with_fragment(None))
    base_string = "&".join((method.upper(), _percent(base_uri), _percent(normalized)))
    key = f"{_percent(str(consumer_secret))}&{_percent(str(credentials.get('token_secret') or ''))}"
    signature = base64.b64encode(hmac.new(key.encode(), base_string.encode(), hashlib.sha256).digest()).decode()
    realm = account_id.replace("-", "_").upper()
    fields = ", ".join(f'{k}="{_percent(v)}"' for k, v in {**oauth, "oauth_signature": signature}.items())
    return f'OAuth realm="{realm}", {fields}'
