"""What goes on the wire: the stable-stringified body and the headers that sign it (reference §7.2)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

# the outbound client's own, on every request it sends
from nango.outbound import USER_AGENT

DELIVERY_ID_HEADER = "X-Nango-Delivery-Id"
HMAC_HEADER = "X-Nango-Hmac-Sha256"
LEGACY_SIGNATURE_HEADER = "X-Nango-Signature"
# never taken from forwarded provider headers: ours, or computed by the HTTP client
_RESERVED = frozenset(
    {
        "content-type",
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "user-agent",
        "host",
        "connection",
        "keep-alive",
    }
)


def stable_json(payload: Any) -> str:
    """Keys sorted, no spaces, non-ASCII kept: the text Nango's stable stringify produces for JSON data.
    Raises ValueError for what JSON cannot carry (NaN, infinities)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        text.encode()
    except UnicodeEncodeError:
        # a lone surrogate: send its escape, as JSON.stringify does
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return text


def hmac_signature(signing_key: str, body: bytes) -> str:
    """X-Nango-Hmac-Sha256: what `verifyIncomingWebhookRequest` checks."""
    return hmac.new(signing_key.encode(), body, hashlib.sha256).hexdigest()


def legacy_signature(signing_key: str, body: bytes) -> str:
    """X-Nango-Signature: sha256(key + body), what the deprecated `verifyWebhookSignature` checks."""
    return hashlib.sha256(signing_key.encode() + body).hexdigest()


def request_headers(
    signing_key: str, body: bytes, delivery_id: str, forwarded: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Every header of one attempt: forwarded provider headers first, ours over them."""
    headers = {
        name: value
        for name, value in (forwarded or {}).items()
        if name.lower() not in _RESERVED and not name.lower().startswith("x-nango-")
    }
    headers.update(
        {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            DELIVERY_ID_HEADER: delivery_id,
            HMAC_HEADER: hmac_signature(signing_key, body),
            LEGACY_SIGNATURE_HEADER: legacy_signature(signing_key, body),
        }
    )
    return headers


__all__ = [
    "DELIVERY_ID_HEADER",
    "HMAC_HEADER",
    "LEGACY_SIGNATURE_HEADER",
    "USER_AGENT",
    "hmac_signature",
    "legacy_signature",
    "request_headers",
    "stable_json",
]
