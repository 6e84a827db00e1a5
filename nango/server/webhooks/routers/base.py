"""What a provider's webhook router receives and answers, and the checks routers share.

A router is a pure function of the request (headers, raw body, parsed body, the URL the provider
called), the integration's secrets and the current time: it verifies the provider's signature,
says which connection each event belongs to and what to answer the provider. It does no I/O, so
every router is tested with nothing running.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nango.errors import InvalidBody, InvalidHeaders, Unauthenticated


class InvalidSignature(Unauthenticated):
    """The webhook is not provably from the provider: missing, wrong or expired signature."""

    code = "invalid_signature"
    default_message = "The webhook signature is invalid"


@dataclass(frozen=True)
class IncomingRequest:
    method: str
    # the URL the provider called: NANGO_SERVER_URL + path + the query string as sent (signed by some providers)
    url: str
    # lower-case names
    headers: Mapping[str, str]
    body: bytes
    # the parsed body: JSON, or the fields of a form; None when the body is empty
    payload: Any
    # only the query parameters the provider's `webhook_allowed_query_params` lets through
    query: Mapping[str, str]
    # seconds since the epoch
    now: float

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return value.strip() if value is not None else None


@dataclass(frozen=True)
class IntegrationSecrets:
    # the secret the customer set for webhooks (`webhook_secret`, or `custom.webhookSecret`)
    webhook_secret: str | None
    # the OAuth app's client secret, which some providers (HubSpot, Intercom, Shopify apps) sign with
    client_secret: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return "IntegrationSecrets(...)"


@dataclass(frozen=True)
class ConnectionIdentifier:
    """`connectionId` (by id), `metadata.<key>` (by a metadata value) or a connection_config key."""

    prop: str
    value: str


@dataclass(frozen=True)
class RoutedEvent:
    # None: the event names no connection (it is forwarded unwrapped unless `all_connections`)
    identifier: ConnectionIdentifier | None
    event_type: str | None
    # what a sync's on_webhook handler receives
    payload: Any
    # the event concerns every connection of the integration
    all_connections: bool = False


@dataclass(frozen=True)
class RoutingResult:
    events: tuple[RoutedEvent, ...]
    # False when the integration has no secret to check the signature with (see each router)
    verified: bool
    status: int = 200
    # the JSON answer to the provider; None answers {"status": "success"}
    response: Any = None
    # forward to the customer's webhook URLs (only answers of 200 may)
    forward: bool = True


Router = Callable[[IncomingRequest, IntegrationSecrets], RoutingResult]

# for the timestamped schemes (Slack, HubSpot v3, Stripe): older or further in the future is refused
FIVE_MINUTES = 300.0


def hmac_digest(secret: str, message: bytes, algorithm: str = "sha256") -> bytes:
    return hmac.new(secret.encode(), message, getattr(hashlib, algorithm)).digest()


def same(expected: str, given: str | None) -> bool:
    """Constant-time comparison of two signatures as text."""
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


def hex_hmac(secret: str, message: bytes, algorithm: str = "sha256") -> str:
    return hmac_digest(secret, message, algorithm).hex()


def base64_hmac(secret: str, message: bytes, algorithm: str = "sha256") -> str:
    return base64.b64encode(hmac_digest(secret, message, algorithm)).decode()


def require_signature(request: IncomingRequest, name: str) -> str:
    value = request.header(name)
    if not value:
        raise InvalidSignature(f"the {name} header is missing")
    return value


def check_age(timestamp: str | float | int | None, now: float, *, tolerance: float, unit: float = 1.0) -> None:
    """Refuse a replayed (or forged future) webhook: its signed timestamp must be within `tolerance`
    seconds of now. `unit` converts the timestamp to seconds (0.001 for milliseconds)."""
    try:
        seconds = float(timestamp) * unit  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidSignature("the signature timestamp is missing or not a number") from None
    if abs(now - seconds) > tolerance:
        raise InvalidSignature(f"the signature timestamp is more than {int(tolerance)} s from now")


def dig(payload: Any, path: str) -> Any:
    """The value at a dotted path of a JSON object, or None."""
    current = payload
    for part in path.split("."):
        if not isinstance(current, Mapping):
            return None
        current = current.get(part)
    return current


def text(value: Any) -> str | None:
    """An identifier as the text stored in connection_config (numbers as digits); None when absent."""
    if value is None or isinstance(value, bool | Mapping | list):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    rendered = str(value).strip()
    return rendered or None


def by(prop: str, value: Any) -> ConnectionIdentifier | None:
    rendered = text(value)
    return ConnectionIdentifier(prop, rendered) if rendered is not None else None


def json_object(request: IncomingRequest) -> Mapping[str, Any]:
    if not isinstance(request.payload, Mapping):
        raise InvalidBody("the webhook body must be a JSON object")
    return request.payload


def one_event(
    request: IncomingRequest,
    identifier: ConnectionIdentifier | None,
    event_type: Any,
    *,
    verified: bool,
    all_connections: bool = False,
) -> RoutingResult:
    event = RoutedEvent(identifier, text(event_type), request.payload, all_connections=all_connections)
    return RoutingResult(events=(event,), verified=verified)


def required_header(request: IncomingRequest, name: str) -> str:
    value = request.header(name)
    if not value:
        raise InvalidHeaders(f"the {name} header is missing")
    return value


__all__ = [
    "FIVE_MINUTES",
    "ConnectionIdentifier",
    "IncomingRequest",
    "IntegrationSecrets",
    "InvalidSignature",
    "RoutedEvent",
    "Router",
    "RoutingResult",
    "base64_hmac",
    "by",
    "check_age",
    "dig",
    "hex_hmac",
    "json_object",
    "one_event",
    "require_signature",
    "required_header",
    "same",
    "text",
]
