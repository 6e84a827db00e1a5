"""JWT auth mode: tokens the platform signs itself with the end user's key (reference §4.6, §5.1).

The provider's `token` settings are templates over the submitted fields (`${credentials.issuerId}`
or `${issuerId}`); `signature.protocol` says how `signing_key` is read: RSA and EC keys as PEM,
HMAC secrets as text, or hex/base64 bytes per `hmac_secret_encoding`. The stored credentials are
the submitted fields plus `token` and `expires_at`, so a refresh signs again from the same fields.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import jwt

from nango.providers import Provider, Signature
from nango.providers.interpolate import Values, render, template_values
from nango.server.auth import credentials as creds
from nango.server.auth.oauth2 import TokenRequestFailed
from nango.server.integrations import Integration
from nango.server.refresh import Refreshed

DEFAULT_LIFETIME = timedelta(hours=1)
# fields the stored credentials add to the submitted ones
RESERVED_FIELDS = frozenset({"type", "token", "expires_at"})
_DEFAULT_ALGORITHM = {"RSA": "RS256", "EC": "ES256", "HMAC": "HS256"}
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)


class JwtSigningError(Exception):
    """The token could not be built: fields its templates need are `missing`, or the key is unusable."""

    def __init__(self, description: str, missing: Sequence[str] = ()) -> None:
        super().__init__(description)
        self.description = description
        self.missing = list(missing)


def pem(text: str, label: str = "PRIVATE KEY") -> str:
    """A PEM block with 64-character lines, from a key pasted on one line, with literal `\\n`, or as
    a bare base64 body (which gets `label`)."""
    text = text.strip().replace("\\n", "\n")
    match = _PEM_BLOCK.search(text)
    body = text
    if match:
        label, body = match.group(1), match.group(2)
    body = "".join(body.split())
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN {label}-----\n{lines}\n-----END {label}-----\n"


def _signing_key(signature: Signature, text: str) -> str | bytes:
    if signature.protocol != "HMAC":
        return pem(text)
    encoding = (signature.hmac_secret_encoding or "").lower()
    if encoding == "hex":
        return bytes.fromhex(text)
    if encoding == "base64":
        return base64.b64decode(text, validate=True)
    return text.encode()


class _Renderer:
    """Renders template values, collecting the fields that are missing."""

    def __init__(self, values: Values) -> None:
        self.values = values
        self.missing: list[str] = []

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            result = render(value, self.values)
            for raw in result.unresolved:
                self.missing.append(raw.removeprefix("${").removesuffix("}").strip().removeprefix("credentials."))
            return result.text
        if isinstance(value, dict):
            return {key: self(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self(item) for item in value]
        return value


def sign(provider: Provider, fields: Mapping[str, Any], *, now: datetime) -> dict[str, Any]:
    """JWT credentials for the submitted `fields`: the fields, `token` and `expires_at`."""
    if provider.signature is None or provider.token is None or not provider.token.signing_key:
        raise JwtSigningError("The provider declares no JWT signature and signing key")
    settings = provider.token
    rendered = _Renderer(template_values(credentials=fields))
    header = {key: rendered(value) for key, value in (settings.header or {}).items()}
    payload = {key: rendered(value) for key, value in (settings.payload or {}).items()}
    key_text = rendered(settings.signing_key)
    if rendered.missing:
        missing = list(dict.fromkeys(rendered.missing))
        raise JwtSigningError(f"The provider's token needs {', '.join(missing)}", missing)
    algorithm = str(header.pop("alg", None) or _DEFAULT_ALGORITHM.get(provider.signature.protocol, "RS256"))
    lifetime = timedelta(milliseconds=settings.expires_in_ms) if settings.expires_in_ms else DEFAULT_LIFETIME
    expires_at = now + lifetime
    payload["iat"] = int(now.timestamp())
    payload["exp"] = int(expires_at.timestamp())
    try:
        token = jwt.encode(payload, _signing_key(provider.signature, key_text), algorithm=algorithm, headers=header)
    except (jwt.PyJWTError, ValueError, TypeError, NotImplementedError) as exc:
        # the exception text may quote key material: only its kind leaves this function
        raise JwtSigningError(f"The key could not sign an {algorithm} token ({type(exc).__name__})") from None
    return {"type": "JWT", **fields, "token": token, "expires_at": creds.iso(expires_at)}


def submitted_fields(credentials: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in credentials.items() if key not in RESERVED_FIELDS}


class JwtMinter:
    """Signs a fresh token from the stored fields when the old one is due (a `TokenMinter`)."""

    async def mint(
        self,
        provider: Provider,
        integration: Integration,
        credentials: dict[str, Any],
        connection_config: dict[str, Any],
    ) -> Refreshed:
        try:
            fresh = sign(provider, submitted_fields(credentials), now=creds.now())
        except JwtSigningError as exc:
            raise TokenRequestFailed("invalid_credentials", exc.description) from None
        return Refreshed(fresh, creds.expires_at(fresh))
