"""What each auth mode puts on a request (reference §3.4), and OAuth 1.0a signatures (RFC 5849).

Bearer and Basic headers depend only on the credentials; OAuth 1.0a and NetSuite TBA sign the
final method and URL, so they are computed per request.
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

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from yarl import URL

from nango.proxycore.errors import UnsupportedAuth
from nango.proxycore.spec import ConnectionView

# auth mode -> the credential field sent as `Authorization: Bearer <value>`
BEARER_FIELD = {
    "OAUTH2": "access_token",
    "APP": "access_token",
    "MCP_OAUTH2": "access_token",
    "MCP_OAUTH2_GENERIC": "access_token",
    "OAUTH2_CC": "token",
    "JWT": "token",
    "SIGNATURE": "token",
    "TWO_STEP": "token",
}
BASIC_MODES = frozenset({"BASIC", "INSTALL_PLUGIN"})
SIGNED_MODES = frozenset({"OAUTH1", "TBA"})
# these modes travel in the provider's proxy headers or query templates, or not at all
TEMPLATE_MODES = frozenset({"API_KEY", "BILL", "CUSTOM", "NONE"})


def auth_mode(view: ConnectionView) -> str:
    return str(view.credentials.get("type") or "NONE")


def static_headers(view: ConnectionView, provider_headers: Iterable[str]) -> dict[str, str]:
    """The auth mode's own headers when they do not depend on the request; raises UnsupportedAuth
    for a mode the proxy cannot sign. `provider_headers` are the provider's header templates."""
    mode = auth_mode(view)
    creds = view.credentials
    if mode in BASIC_MODES:
        pair = f"{creds.get('username') or ''}:{creds.get('password') or ''}"
        return {"authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
    if mode in BEARER_FIELD:
        if mode == "TWO_STEP" and any(
            "${accessToken}" in value or "${credentials._cookies}" in value for value in provider_headers
        ):
            return {}
        token = creds.get(BEARER_FIELD[mode])
        return {"authorization": f"Bearer {token}"} if isinstance(token, str) and token else {}
    if mode in TEMPLATE_MODES or mode in SIGNED_MODES:
        return {}
    raise UnsupportedAuth(f'The proxy does not support auth mode "{mode}"')


def signed_header(view: ConnectionView, method: str, url: URL, form: Iterable[tuple[str, str]] = ()) -> str | None:
    """The OAuth 1.0a (or TBA) Authorization header of one request; None for other modes."""
    mode = auth_mode(view)
    creds = view.credentials
    if mode == "OAUTH1":
        if not view.client_id or not view.client_secret:
            raise UnsupportedAuth("OAuth 1.0a requests need the integration's client id and secret")
        return oauth1_authorization(
            method,
            url,
            consumer_key=view.client_id,
            consumer_secret=view.client_secret,
            token=str(creds.get("oauth_token") or ""),
            token_secret=str(creds.get("oauth_token_secret") or ""),
            signature_method=view.provider.signature_method or "HMAC-SHA1",
            form=form,
        )
    if mode == "TBA":
        override: Mapping[str, Any] = creds.get("config_override") or {}
        config = view.connection_config
        consumer_key = override.get("client_id") or config.get("oauth_client_id") or view.client_id
        consumer_secret = override.get("client_secret") or config.get("oauth_client_secret") or view.client_secret
        account_id = config.get("accountId")
        if not consumer_key or not consumer_secret:
            raise UnsupportedAuth("TBA requests need a client id and secret (integration or connection override)")
        if not isinstance(account_id, str) or not account_id:
            raise UnsupportedAuth("TBA requests need connection config accountId")
        return oauth1_authorization(
            method,
            url,
            consumer_key=str(consumer_key),
            consumer_secret=str(consumer_secret),
            token=str(creds.get("token_id") or ""),
            token_secret=str(creds.get("token_secret") or ""),
            signature_method="HMAC-SHA256",
            realm=account_id.replace("-", "_").upper(),
            form=form,
        )
    return None


def percent(value: str) -> str:
    """RFC 5849 §3.6: everything but the RFC 3986 unreserved characters is encoded."""
    return quote(value, safe="~-._")


def _base_uri(url: URL) -> str:
    scheme, host = (url.scheme or "").lower(), (url.raw_host or "").lower()
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(scheme)
    port = f":{url.explicit_port}" if url.explicit_port is not None and url.explicit_port != default else ""
    return f"{scheme}://{host}{port}{url.raw_path}"


def oauth1_authorization(
    method: str,
    url: URL,
    *,
    consumer_key: str,
    consumer_secret: str,
    token: str,
    token_secret: str,
    signature_method: str,
    realm: str | None = None,
    form: Iterable[tuple[str, str]] = (),
    nonce: str | None = None,
    timestamp: int | None = None,
) -> str:
    """An `OAuth ...` header signing the method, the URL (query included) and form body parameters."""
    oauth = {
        "oauth_consumer_key": consumer_key,
        "oauth_nonce": nonce or secrets.token_hex(16),
        "oauth_signature_method": signature_method,
        "oauth_timestamp": str(timestamp if timestamp is not None else int(time.time())),
        "oauth_version": "1.0",
    }
    if token:
        oauth["oauth_token"] = token
    pairs = sorted((percent(k), percent(v)) for k, v in [*url.query.items(), *form, *oauth.items()])
    normalized = "&".join(f"{k}={v}" for k, v in pairs)
    base_string = "&".join((method.upper(), percent(_base_uri(url)), percent(normalized)))
    key = f"{percent(consumer_secret)}&{percent(token_secret)}"
    if signature_method == "HMAC-SHA1":
        signature = base64.b64encode(hmac.new(key.encode(), base_string.encode(), hashlib.sha1).digest()).decode()
    elif signature_method == "HMAC-SHA256":
        signature = base64.b64encode(hmac.new(key.encode(), base_string.encode(), hashlib.sha256).digest()).decode()
    elif signature_method == "PLAINTEXT":
        signature = key
    elif signature_method == "RSA-SHA1":
        private_key = serialization.load_pem_private_key(consumer_secret.encode(), password=None)
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise UnsupportedAuth("RSA-SHA1 needs an RSA private key as the integration's client secret")
        raw = private_key.sign(base_string.encode(), padding.PKCS1v15(), hashes.SHA1())  # noqa: S303 - RFC 5849
        signature = base64.b64encode(raw).decode()
    else:
        raise UnsupportedAuth(f"Unknown OAuth 1.0a signature method {signature_method}")
    fields = [f'realm="{realm}"'] if realm is not None else []
    fields += [f'{k}="{percent(v)}"' for k, v in {**oauth, "oauth_signature": signature}.items()]
    return "OAuth " + ", ".join(fields)


__all__ = [
    "BASIC_MODES",
    "BEARER_FIELD",
    "SIGNED_MODES",
    "TEMPLATE_MODES",
    "auth_mode",
    "oauth1_authorization",
    "percent",
    "signed_header",
    "static_headers",
]
