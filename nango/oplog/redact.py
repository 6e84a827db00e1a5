"""Redaction applied to every operation and message before a store writes it.

Values under a sensitive key (a credential header, or any key naming a token, secret, password…)
become "[REDACTED]" whatever their shape; every other string has sensitive URL query parameters
masked and then passes through `nango.telemetry.redact_text` (bearer tokens, `client_secret=`…).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, TypeVar
from urllib.parse import unquote_plus

from nango.oplog.models import Message, Operation, OperationUpdate
from nango.telemetry import redact_text

MASK = "[REDACTED]"

# Compared with "-" and "_" removed, so X-Api-Key, api_key, apiKey and privateKey all match.
SENSITIVE_HEADERS = frozenset({"authorization", "proxyauthorization", "cookie", "setcookie"})
SENSITIVE_FRAGMENTS = ("token", "secret", "password", "apikey", "privatekey", "signature", "codeverifier")

_QUERY_PARAM = re.compile(r"([?&;])([^=&#\s?;\"'<>]+)=([^&#\s;\"'<>]*)")


@functools.lru_cache(maxsize=4096)
def is_sensitive_key(key: str) -> bool:
    """True for credential header names and keys naming a secret ("X-Api-Key", "refresh_token"…)."""
    normalized = key.strip().lower().replace("-", "").replace("_", "")
    return normalized in SENSITIVE_HEADERS or any(fragment in normalized for fragment in SENSITIVE_FRAGMENTS)


def redact_url_query(text: str) -> str:
    """Mask the values of sensitive query parameters wherever a `?name=value` appears in `text`."""
    if "=" not in text:
        return text

    def mask(match: re.Match[str]) -> str:
        if is_sensitive_key(unquote_plus(match.group(2))):
            return f"{match.group(1)}{match.group(2)}={MASK}"
        return match.group(0)

    return _QUERY_PARAM.sub(mask, text)


def redact_string(text: str) -> str:
    return redact_text(redact_url_query(text))


def redact_value(value: Any) -> Any:
    """A copy of a JSON-like value with every secret it holds masked."""
    kind = type(value)
    # numbers, booleans and None are the most common leaves and hold nothing to mask
    if kind is int or kind is bool or kind is float or value is None:
        return value
    if isinstance(value, str):
        return redact_string(value)
    if isinstance(value, dict):
        return {key: MASK if is_sensitive_key(str(key)) else redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(item) for item in value]
    return value


def redact_dict(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """`redact_value` of an optional payload (what a store applies to each JSON column)."""
    return None if value is None else redact_value(value)


T = TypeVar("T", Operation, OperationUpdate, Message)


def redact(item: T) -> T:
    """The same operation, update or message with its payloads and free text redacted."""
    changes: dict[str, Any] = {
        name: redact_dict(getattr(item, name))
        for name in ("error", "request", "response", "meta", "retry")
        if hasattr(item, name)
    }
    if isinstance(item, Message):
        changes["message"] = redact_string(item.message)
    return dataclasses.replace(item, **changes)


__all__ = ["MASK", "is_sensitive_key", "redact", "redact_dict", "redact_string", "redact_url_query", "redact_value"]
