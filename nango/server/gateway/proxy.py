"""`ALL /proxy/{endpoint…}` (reference §3.4): the caller's request, streamed to the provider with the
connection's credentials, and the provider's answer streamed back with its status and raw body.

Both bodies stream: a request body up to RETRY_BODY_LIMIT is held so that it can be sent again on a
retry; a larger one is passed through as it arrives and is not retried. Response headers follow an
allow-list (RESPONSE_HEADERS, RESPONSE_HEADER_PATTERN and the provider's rate-limit headers); hop-by-hop
headers and cookies never pass. Errors of ours use the `{error: {code, message}}` envelope.
"""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

import aiohttp
from aiohttp import web
from pydantic import Field, field_validator

from nango.errors import NangoError, RequestTooLarge
from nango.oplog.models import OperationState
from nango.outbound import Body, UpstreamTimeout, UpstreamUnreachable
from nango.providers import Provider
from nango.proxycore import CallerGone, InvalidBaseUrl, ProxySpec, UpstreamAnswer
from nango.proxycore.target import check_base_url
from nango.server.gateway.context import GATEWAY
from nango.server.gateway.middleware import CORS_HEADERS, ENVIRONMENT
from nango.server.gateway.validation import parse_headers
from nango.server.inputs import CONNECTION_ID, PROVIDER_CONFIG_KEY, ConnectionId, ProviderConfigKey, Strict
from nango.server.proxy import ProxyService, activity_log_id

routes = web.RouteTableDef()

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "PROPFIND", "REPORT")
FORWARD_PREFIX = "nango-proxy-"
# a request body this small is held in memory so that a retry can send it again
RETRY_BODY_LIMIT = 1024 * 1024
# an answer this small (with a known length) is read whole and sent in one write
SMALL_ANSWER = 256 * 1024
CHUNK = 256 * 1024

RESPONSE_HEADERS = frozenset(
    {
        "content-type",
        "content-disposition",
        "content-encoding",
        "content-language",
        "content-range",
        "accept-ranges",
        "etag",
        "last-modified",
        "cache-control",
        "expires",
        "location",
        "link",
        "retry-after",
        "www-authenticate",
        "mcp-session-id",
        "x-total-count",
    }
)
# rate-limit headers (x-ratelimit-*, ratelimit-*, x-hubspot-ratelimit-*) and request ids (x-request-id…)
RESPONSE_HEADER_PATTERN = re.compile(r"rate-?limit|(?:request|correlation|trace)-?id$")
# never forwarded upstream from the caller's Nango-Proxy-* headers: they describe our hop, not theirs
_HOP_BY_HOP = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
_SKIPPED_WHEN_DECOMPRESSED = frozenset({"content-encoding"})
StringBool = Literal["true", "false"]


class ProxyHeaders(Strict):
    provider_config_key: ProviderConfigKey = Field(alias="provider-config-key")
    connection_id: ConnectionId = Field(alias="connection-id")
    retries: int = Field(0, ge=0, le=20)
    base_url_override: str | None = Field(None, alias="base-url-override", max_length=2048)
    decompress: StringBool | None = None
    retry_on: str | None = Field(None, alias="retry-on", pattern=r"^\d{3}(,\d{3})*$", max_length=200)
    forward_headers_on_redirect: StringBool = Field("true", alias="forward-headers-on-redirect")
    nango_activity_log_id: str | None = Field(None, alias="nango-activity-log-id", max_length=255)
    nango_is_sync: StringBool | None = Field(None, alias="nango-is-sync")
    nango_is_dry_run: StringBool | None = Field(None, alias="nango-is-dry-run")

    @field_validator("base_url_override")
    @classmethod
    def _url_or_empty(cls, value: str | None) -> str | None:
        if value:
            try:
                check_base_url(value)
            except InvalidBaseUrl as exc:
                raise ValueError(exc.message) from None
        return value or None


_HEADER_NAMES = frozenset(
    {
        "provider-config-key",
        "connection-id",
        "retries",
        "base-url-override",
        "decompress",
        "retry-on",
        "forward-headers-on-redirect",
        "nango-activity-log-id",
        "nango-is-sync",
        "nango-is-dry-run",
    }
)


_PLAIN = frozenset({"provider-config-key", "connection-id", "retries", "nango-is-sync", "nango-is-dry-run"})
# the SDK always sends these, empty unless set
_PLAIN_WHEN_EMPTY = frozenset({"base-url-override", "nango-activity-log-id"})
_PCK = re.compile(PROVIDER_CONFIG_KEY)
_CID = re.compile(CONNECTION_ID)
_FLAG = ("true", "false")
_NO_CODES: frozenset[int] = frozenset()


class Parsed(NamedTuple):
    provider_config_key: str
    connection_id: str
    retries: int
    base_url_override: str | None
    decompress: bool
    retry_on: frozenset[int]
    forward_headers_on_redirect: bool
    activity_log_id: str | None

    @classmethod
    def of(cls, headers: ProxyHeaders) -> Parsed:
        return cls(
            headers.provider_config_key,
            headers.connection_id,
            headers.retries,
            headers.base_url_override,
            headers.decompress == "true",
            frozenset(int(code) for code in headers.retry_on.split(",")) if headers.retry_on else frozenset(),
            headers.forward_headers_on_redirect == "true",
            headers.nango_activity_log_id,
        )


def _plain_headers(known: dict[str, str]) -> Parsed | None:
    """The common case (ids, Retries, the SDK's flags) accepted without running the validator; any
    other input goes through ProxyHeaders, which also words the errors. Accepts nothing it rejects."""
    pck, cid = known.get("provider-config-key"), known.get("connection-id")
    if pck is None or cid is None or len(pck) > 255 or len(cid) > 255:
        return None
    if not _PCK.fullmatch(pck) or not _CID.fullmatch(cid):
        return None
    if len(known) == 2:
        return Parsed(pck, cid, 0, None, False, _NO_CODES, True, None)
    for name, value in known.items():
        if name not in _PLAIN and not (name in _PLAIN_WHEN_EMPTY and not value):
            return None
    retries = known.get("retries", "0")
    if not (retries.isascii() and retries.isdigit() and int(retries) <= 20):
        return None
    if known.get("nango-is-sync", "false") not in _FLAG or known.get("nango-is-dry-run", "false") not in _FLAG:
        return None
    return Parsed(pck, cid, int(retries), None, False, _NO_CODES, True, None)


def _spec(request: web.Request) -> tuple[ProxySpec, Parsed]:
    known: dict[str, str] = {}
    forwarded: dict[str, tuple[str, str]] = {}
    for name, value in request.headers.items():
        lower = name.lower()
        if lower.startswith(FORWARD_PREFIX):
            stripped = name[len(FORWARD_PREFIX) :]
            if stripped and stripped.lower() not in _HOP_BY_HOP:
                forwarded[stripped.lower()] = (stripped, value)
        elif lower in _HEADER_NAMES:
            known[lower] = value
        elif lower in ("content-type", "accept-encoding"):
            forwarded.setdefault(lower, (name, value))
    parsed = _plain_headers(known) or Parsed.of(parse_headers(known, ProxyHeaders))
    spec = ProxySpec(
        method=request.method,
        endpoint=request.raw_path[len("/proxy") :],
        headers=tuple(forwarded.values()),
        retries=parsed.retries,
        retry_on=parsed.retry_on,
        base_url_override=parsed.base_url_override,
        decompress=parsed.decompress,
        forward_headers_on_redirect=parsed.forward_headers_on_redirect,
    )
    return spec, parsed


class RequestStream:
    """The caller's body as it arrives, held to the public body limit; remembers why it stopped."""

    def __init__(self, request: web.Request, limit: int) -> None:
        self.request = request
        self.limit = limit
        self.too_large = False
        self.caller_gone = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        size = 0
        try:
            async for chunk in self.request.content.iter_chunked(CHUNK):
                size += len(chunk)
                if size > self.limit:
                    self.too_large = True
                    raise RequestTooLarge(f"the body is larger than the {self.limit} bytes allowed")
                yield chunk
        except (ConnectionError, aiohttp.ClientError):
            self.caller_gone = True
            raise


async def _body(request: web.Request, service: ProxyService) -> tuple[Body, RequestStream | None]:
    if not request.body_exists:
        return None, None
    length = request.content_length
    if length is not None and length > service.max_body:
        raise RequestTooLarge(f"the body is larger than the {service.max_body} bytes allowed")
    if length is not None and length <= RETRY_BODY_LIMIT:
        return await request.read(), None
    stream = RequestStream(request, service.max_body)
    return stream, stream


def _caller_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


@functools.lru_cache(maxsize=1024)
def _allowed_header(lower: str) -> bool:
    return lower in RESPONSE_HEADERS or RESPONSE_HEADER_PATTERN.search(lower) is not None


def response_headers(answer: UpstreamAnswer, provider: Provider | None) -> dict[str, str]:
    """The upstream headers the caller gets (see the module docstring)."""
    extra: set[str] = set()
    rules = provider.proxy.retry if provider is not None and provider.proxy is not None else None
    if rules is not None:
        extra.update(name.lower() for name in [*(rules.at or ()), *(rules.after or ())])
        if rules.remaining:
            extra.add(rules.remaining.lower())
    out: dict[str, str] = {}
    for name, value in answer.response.headers.items():
        lower = name.lower()
        if answer.decompressed and lower in _SKIPPED_WHEN_DECOMPRESSED:
            continue
        if _allowed_header(lower) or lower in extra:
            out[name] = value
    return out


async def _small_body(answer: UpstreamAnswer) -> bytes:
    """A short answer read whole, before anything is sent: its failure is still ours to report."""
    if answer.response.status in (204, 304):
        return b""
    try:
        return await answer.response.read()
    except TimeoutError:
        raise UpstreamTimeout() from None
    except aiohttp.ClientError as exc:
        raise UpstreamUnreachable(f"The upstream API broke off its answer ({type(exc).__name__})") from None


async def _forward(
    request: web.Request, answer: UpstreamAnswer, headers: dict[str, str]
) -> tuple[web.StreamResponse, int, bool]:
    """Send the answer to the caller: a short one in one write, a long one streamed. Returns (the
    response, bytes sent, whether it completed)."""
    upstream = answer.response
    status, reason = upstream.status, upstream.reason
    length = None if answer.decompressed else upstream.content_length
    if status in (204, 304) or (length is not None and length <= SMALL_ANSWER):
        body = await _small_body(answer)
        response = web.Response(status=status, reason=reason, headers=headers, body=body or None)
        response.headers.update(CORS_HEADERS)
        try:
            await response.prepare(request)
            await response.write_eof()
        except (ConnectionError, aiohttp.ClientError):
            return response, 0, False
        return response, len(body), True
    stream = web.StreamResponse(status=status, reason=reason, headers=headers)
    stream.headers.update(CORS_HEADERS)
    if length is not None:
        stream.content_length = length
    sent = 0
    try:
        await stream.prepare(request)
        async for chunk in upstream.content.iter_chunked(CHUNK):
            await stream.write(chunk)
            sent += len(chunk)
        await stream.write_eof()
    except (ConnectionError, aiohttp.ClientError, TimeoutError):
        # the caller left, or the upstream broke off: drop both ends so the caller sees a cut answer
        upstream.close()
        if request.transport is not None:
            request.transport.close()
        return stream, sent, False
    return stream, sent, True


async def proxy(request: web.Request) -> web.StreamResponse:
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    service = gw.proxy
    # a request with invalid headers is refused before it is a call: it is not logged (as in Nango)
    spec, parsed = _spec(request)
    started = datetime.now(UTC)
    source = service.source(environment.id, parsed.provider_config_key, parsed.connection_id)
    call = service.engine.call(spec, source, None, aborted=lambda: _caller_gone(request))
    log_id = activity_log_id(parsed.activity_log_id)

    def log(state: OperationState, **fields: Any) -> None:
        service.log(call, source, started, state, activity_log_id=log_id, **fields)

    stream: RequestStream | None = None
    try:
        call.body, stream = await _body(request, service)
        answer = await call.send()
    except CallerGone:
        log("cancelled")
        return web.Response(status=499, reason="Client Closed Request")
    except NangoError as exc:
        error = exc
        if isinstance(exc, UpstreamUnreachable) and stream is not None and stream.too_large:
            error = RequestTooLarge(f"the body is larger than the {service.max_body} bytes allowed")
        elif isinstance(exc, UpstreamUnreachable) and stream is not None and stream.caller_gone:
            log("cancelled")
            return web.Response(status=499, reason="Client Closed Request")
        log("failed", error=error)
        raise error from None
    headers = response_headers(answer, source.view.provider if source.view is not None else None)
    status = answer.response.status
    try:
        response, sent, completed = await _forward(request, answer, headers)
    except NangoError as exc:
        log("failed", status=status, error=exc)
        raise
    finally:
        answer.response.release()
    state: OperationState = "cancelled" if not completed else ("success" if status < 400 else "failed")
    log(state, status=status, response_headers=headers, bytes_sent=sent)
    return response


# indexed under /proxy, so the router finds it without trying the other routes
for _method in METHODS:
    routes.route(_method, "/proxy/{endpoint:.*}")(proxy)
