"""Putting a connection's credentials on an outgoing provider request, as the proxy does (reference §3.4).

`provider_parts` renders the provider's `proxy.headers` / `proxy.query` templates (how API_KEY
credentials travel); `credential_headers` adds what the auth mode itself puts on the request.
Header names come back lower-cased so that later layers override earlier ones case-insensitively.
`oauth1_header` signs OAuth 1.0a requests: TBA's, and the OAUTH1 flow's token requests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
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


class OAuth1SigningError(ValueError):
    """The consumer secret cannot sign with the chosen method; the message never quotes the secret."""


def _base_uri(url: URL) -> str:
    """RFC 5849 §3.4.1.2: lower-case scheme and host, the port only when not the scheme's default, no query."""
    scheme, host = (url.scheme or "").lower(), (url.raw_host or "").lower()
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(scheme)
    port = f":{url.explicit_port}" if url.explicit_port is not None and url.explicit_port != default else ""
    return f"{scheme}://{host}{port}{url.raw_path}"


def _oauth1_signature(signature_method: str, base_string: str, consumer_secret: str, token_secret: str) -> str:
    key = f"{_percent(consumer_secret)}&{_percent(token_secret)}"
    if signature_method == "PLAINTEXT":
        return key
    if signature_method in ("HMAC-SHA1", "HMAC-SHA256"):
        digest = hashlib.sha1 if signature_method == "HMAC-SHA1" else hashlib.sha256
        return base64.b64encode(hmac.new(key.encode(), base_string.encode(), digest).digest()).decode()
    if signature_method == "RSA-SHA1":
        # as node-oauth (Nango) does: for RSA-SHA1 the consumer secret is the PEM private key
        try:
            private_key = serialization.load_pem_private_key(consumer_secret.encode(), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise OAuth1SigningError("RSA-SHA1 needs a PEM RSA private key as the client secret") from None
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise OAuth1SigningError("RSA-SHA1 needs a PEM RSA private key as the client secret")
        signed = private_key.sign(base_string.encode(), padding.PKCS1v15(), hashes.SHA1())  # noqa: S303 - RFC 5849
        return base64.b64encode(signed).decode()
    raise OAuth1SigningError(f"Unknown OAuth 1.0a signature method {signature_method}")


def oauth1_header(
    method: str,
    url: URL,
    *,
    consumer_key: str,
    consumer_secret: str,
    signature_method: str,
    token: str = "",
    token_secret: str = "",
    protocol: Mapping[str, str] | None = None,
    form: Iterable[tuple[str, str]] = (),
    realm: str | None = None,
) -> str:
    """An OAuth 1.0a `Authorization` header (RFC 5849 §3) signing the method, `url` (query included) and the
    form body; `protocol` adds step parameters such as `oauth_callback` or `oauth_verifier`."""
    oauth = {
        "oauth_consumer_key": consumer_key,
        "oauth_nonce": secrets.token_hex(16),
        "oauth_signature_method": signature_method,
        "oauth_timestamp": str(int(time.time())),
        "oauth_version": "1.0",
        **({"oauth_token": token} if token else {}),
        **(protocol or {}),
    }
    pairs = sorted((_percent(k), _percent(v)) for k, v in [*url.query.items(), *form, *oauth.items()])
    normalized = "&".join(f"{k}={v}" for k, v in pairs)
    base_string = "&".join((method.upper(), _percent(_base_uri(url)), _percent(normalized)))
    signature = _oauth1_signature(signature_method, base_string, consumer_secret, token_secret)
    fields = [f'realm="{realm}"'] if realm is not None else []
    fields += [f'{k}="{_percent(v)}"' for k, v in {**oauth, "oauth_signature": signature}.items()]
    return "OAuth " + ", ".join(fields)


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
    return oauth1_header(
        method,
        url,
        consumer_key=str(consumer_key),
        consumer_secret=str(consumer_secret),
        signature_method="HMAC-SHA256",
        token=str(credentials.get("token_id") or ""),
        token_secret=str(credentials.get("token_secret") or ""),
        realm=account_id.replace("-", "_").upper(),
    )
