"""Small helpers every route uses: how a route declares its authentication, JSON in and out."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any

from aiohttp import web

from nango.errors import InvalidContentType, InvalidJson, RequestTooLarge
from nango.jsontext import json_encoder

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Auth(Enum):
    """How a route authenticates its caller (reference §2.1)."""

    SECRET_KEY = "secret_key"  # noqa: S105 - an enum label
    # Bearer connect-session token (Connect UI's own calls)
    CONNECT_SESSION = "connect_session"
    # either of the above (routes Connect UI and the backend share)
    SECRET_KEY_OR_CONNECT_SESSION = "secret_key_or_connect_session"  # noqa: S105 - an enum label
    # `?connect_session_token=` (or the deprecated `?public_key=`) on browser auth flows
    FLOW = "flow"
    NONE = "none"


_AUTH_ATTR = "__nango_auth__"


def auth(mode: Auth) -> Callable[[Handler], Handler]:
    """Declare a route's authentication; routes without a declaration need the secret key."""

    def mark(handler: Handler) -> Handler:
        setattr(handler, _AUTH_ATTR, mode)
        return handler

    return mark


def auth_of(handler: Any) -> Auth:
    return getattr(handler, _AUTH_ATTR, Auth.SECRET_KEY)


# `json.dumps(data, separators=(",", ":"), default=str)`, built once: it runs on every response
compact_json = json_encoder(ensure_ascii=True, separators=(",", ":"))


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=compact_json(data).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


async def json_body(request: web.Request) -> Any:
    """The request's JSON body: 415 invalid_content_type, 400 invalid_json, 413 request_too_large."""
    content_type = request.content_type
    if request.can_read_body and content_type not in ("application/json", "") and not content_type.endswith("+json"):
        raise InvalidContentType(f"expected Content-Type: application/json, got {request.content_type}")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise RequestTooLarge(f"the body is larger than the {request.app._client_max_size} bytes allowed") from None
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidJson() from None
