"""`POST /webhook/{environmentUuid}/{providerConfigKey}`: incoming provider webhooks (reference §7.1).

No authentication: the provider's signature, checked by its router, is what proves a webhook.
Answers, in the order they are checked:

- 404 `unknown_environment` / `unknown_provider_config`;
- 429 `too_many_request` over `NANGO_WEBHOOK_INGRESS_RATE_LIMIT_PER_MIN` per environment and minute,
  when `NANGO_WEBHOOK_INGRESS_RATE_LIMIT_ENFORCE=true`;
- 204 when the provider has no router (nothing runs, nothing is forwarded, the body is not read);
- 413 `payload_too_large` over `NANGO_WEBHOOK_MAX_BODY_BYTES` (refused from Content-Length before
  reading, or as soon as a streamed body passes the limit);
- 204 when the body is empty and the request has no header of a provider's own (only transport and
  generic client headers such as Accept or X-Forwarded-For);
- 415 `invalid_content_type` for a body that is neither JSON (`application/json`, `*+json`,
  `text/plain`, or no type) nor a form (`application/x-www-form-urlencoded`); 400 `invalid_json`
  for malformed JSON;
- the router's answer: 401 `invalid_signature` (nothing runs or is forwarded), 400 for a body the
  provider could not have sent, or 200 (`{"status": "success"}`, or e.g. Slack's challenge) once the
  work it causes is stored; 503 when it could not be stored (the provider retries).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, NoReturn
from urllib.parse import parse_qsl

from aiohttp import web

from nango.errors import InvalidBody, InvalidContentType, InvalidJson, NangoError, RequestTooLarge, TooManyRequests
from nango.server.gateway.context import GATEWAY
from nango.server.gateway.http import Auth, auth, json_response
from nango.server.webhooks.incoming import forwardable_headers
from nango.server.webhooks.routers import IncomingRequest

routes = web.RouteTableDef()

WINDOW_SECONDS = 60
_FORM = "application/x-www-form-urlencoded"
_JSON_TYPES = frozenset({"application/json", "text/plain", "", "application/octet-stream"})
# what any HTTP client or proxy adds: a request with only these (and no body) carries nothing from a provider
_GENERIC_HEADERS = frozenset(
    {"accept", "accept-encoding", "accept-language", "cache-control", "pragma", "via", "forwarded"}
)
_GENERIC_PREFIXES = ("x-forwarded-", "x-real-ip", "cdn-", "cf-")


def _too_large(limit: int) -> NoReturn:
    raise RequestTooLarge(f"the webhook body is larger than the {limit} bytes allowed", code="payload_too_large")


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The body, refused as soon as it is known to pass `limit` (never read whole)."""
    length = request.content_length
    if length is not None and length > limit:
        _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(65_536):
        size += len(chunk)
        if size > limit:
            _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    # 1e400 parses as infinity, which no JSON can carry on to the customer
    value = float(text)
    if math.isinf(value):
        raise ValueError("number out of range")
    return value


def _parse(content_type: str, body: bytes) -> Any:
    if not body:
        return None
    if content_type == _FORM:
        try:
            return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
        except UnicodeDecodeError:
            raise InvalidBody("the form body is not UTF-8") from None
    if content_type in _JSON_TYPES or content_type.endswith("+json"):
        try:
            payload = json.loads(body, parse_constant=_reject_constant, parse_float=_finite)
        except (ValueError, RecursionError):
            raise InvalidJson() from None
        # a lone UTF-16 surrogate (`"\ud800"`) parses but cannot be stored as text
        if b"\\ud" in body.lower():
            try:
                json.dumps(payload, ensure_ascii=False).encode()
            except UnicodeEncodeError:
                raise InvalidJson("the JSON body holds an unpaired surrogate") from None
        return payload
    raise InvalidContentType(f"expected a JSON or form body, got Content-Type {content_type[:100]}")


def _from_provider(headers: dict[str, str]) -> bool:
    return any(name not in _GENERIC_HEADERS and not name.startswith(_GENERIC_PREFIXES) for name in headers)


async def _over_ingress_limit(request: web.Request, environment_id: int) -> web.Response | None:
    """A 429 (with Retry-After) when the environment is over its per-minute webhook limit."""
    gw = request.app[GATEWAY]
    limit = gw.webhook_ingress_rate_limit_per_minute
    if limit <= 0:
        return None
    window = int(time.time() // WINDOW_SECONDS)
    try:
        used = await gw.kv.incr(f"webhook-ingress:{environment_id}:{window}", ttl=WINDOW_SECONDS + 5)
    except NangoError:
        # the limiter protects the platform; it must not take webhooks down with the kv store
        return None
    if used <= limit:
        return None
    retry_after = max(math.ceil((window + 1) * WINDOW_SECONDS - time.time()), 1)
    error = TooManyRequests(f"Too many webhooks for this environment, retry in {retry_after} seconds")
    return json_response(error.to_envelope(), status=error.status, headers={"Retry-After": str(retry_after)})


@routes.post("/webhook/{environment_uuid}/{provider_config_key}")
@auth(Auth.NONE)
async def incoming_webhook(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    webhooks = gw.incoming_webhooks
    environment = await webhooks.environment(request.match_info["environment_uuid"])
    limited = await _over_ingress_limit(request, environment.id)
    if limited is not None:
        return limited
    target = await webhooks.target(environment, request.match_info["provider_config_key"])
    if target.router is None:
        # nothing would read it: the body is not even received
        return web.Response(status=204)
    body = await _read_body(request, gw.webhook_max_body_bytes)
    headers = {name.lower(): value for name, value in request.headers.items()}
    provider_headers = forwardable_headers(headers)
    if not body and not _from_provider(provider_headers):
        return web.Response(status=204)
    incoming = IncomingRequest(
        method=request.method,
        url=gw.server_url.rstrip("/") + request.raw_path,
        headers=headers,
        body=body,
        payload=_parse(request.content_type if request.body_exists else "", body),
        query={k: v for k, v in request.query.items() if k in target.allowed_query_params},
        now=time.time(),
    )
    reply = await webhooks.accept(target, incoming, provider_headers)
    if reply.status == 204 or reply.body is None:
        return web.Response(status=reply.status)
    return json_response(reply.body, status=reply.status)
