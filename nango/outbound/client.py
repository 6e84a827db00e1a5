"""The process's one outbound HTTP client: pooled keep-alive connections per upstream host.

Each policy gets its own connection pool, because a pooled connection carries the policy it was
opened under: one opened for a token endpoint (private addresses allowed) must never serve a proxy
call (private addresses refused). Redirects are followed here, each hop checked against the policy.

`send()` checks each URL itself, so it goes through sessions without aiohttp tracing (a trace costs
several awaited signals per request); `session()` is for code written against plain aiohttp, which
the policy polices through a trace on every request and redirect. All of a policy's sessions share
its one pool.

`send()` makes each hop of a request whose body is in memory on the policy's lean HTTP/1.1 pool
(`nango.outbound.wire`: some 65 µs of CPU cheaper than aiohttp's client, and every proxy call pays
it); streamed bodies, decompressed answers, HEAD and URLs carrying credentials take aiohttp's client
on the policy's other pool. Both pools resolve names through the policy's pinning resolver.

No session keeps cookies: the client serves every connection of every customer, and a cookie one
upstream set must never ride along on another's call (Nango's proxy keeps none either).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

import aiohttp
from aiohttp.abc import AbstractResolver
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from nango.outbound.errors import OutboundDenied, TooManyRedirects
from nango.outbound.policy import OutboundPolicy
from nango.outbound.resolver import PinningResolver
from nango.outbound.wire import WirePool, wire_eligible

Body = bytes | AsyncIterable[bytes] | None

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# dropped when a redirect leaves the origin, unless the caller asked to keep every header
_ORIGIN_BOUND = ("authorization", "cookie", "proxy-authorization")


class BodyReader(Protocol):
    def read(self, n: int = -1, /) -> Awaitable[bytes]: ...

    def iter_chunked(self, n: int, /) -> AsyncIterator[bytes]: ...


class Response(Protocol):
    """What `send()` answers: aiohttp's ClientResponse, or the lean pool's WireResponse."""

    @property
    def status(self) -> int: ...

    @property
    def reason(self) -> str | None: ...

    @property
    def headers(self) -> CIMultiDictProxy[str]: ...

    @property
    def url(self) -> URL: ...

    @property
    def content_length(self) -> int | None: ...

    @property
    def content(self) -> BodyReader: ...

    def read(self) -> Awaitable[bytes]: ...

    def release(self) -> object: ...

    def close(self) -> None: ...


class PolicyRefused(aiohttp.ClientConnectionError):
    """A request made through `session()` that the policy refused before connecting: an aiohttp
    error, so code written against plain aiohttp handles it like an unreachable host."""

    def __init__(self, denied: OutboundDenied) -> None:
        super().__init__(f"refused by the outbound URL policy: {denied.message}")
        self.denied = denied


def _policing(policy: OutboundPolicy) -> aiohttp.TraceConfig:
    """Checks every URL a session requests, and every redirect it follows, before connecting: the
    resolver sees host names only, never literal addresses such as http://127.0.0.1/."""

    def check(url: URL) -> None:
        try:
            policy.check_url(url)
        except OutboundDenied as exc:
            raise PolicyRefused(exc) from None

    async def on_start(_: object, __: object, params: aiohttp.TraceRequestStartParams) -> None:
        check(params.url)

    async def on_redirect(_: object, __: object, params: aiohttp.TraceRequestRedirectParams) -> None:
        location = params.response.headers.get("Location")
        if location:
            check(params.url.join(URL(location)))

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    trace.on_request_redirect.append(on_redirect)
    trace.freeze()
    return trace


@dataclass(frozen=True)
class PoolSettings:
    connect_timeout: float = 10.0
    # longest silence while reading an answer; a download may take any time while bytes flow
    read_timeout: float = 300.0
    size: int = 512
    per_host: int = 100
    keepalive: float = 30.0
    dns_ttl: float = 10.0


@dataclass(slots=True)
class OutboundRequest:
    method: str
    url: URL
    headers: CIMultiDict[str] = field(default_factory=CIMultiDict)
    body: Body = None
    decompress: bool = False
    follow_redirects: bool = True
    forward_headers_on_redirect: bool = True


class OutboundClient:
    def __init__(self, pool: PoolSettings | None = None, *, dns: Callable[[], AbstractResolver] | None = None) -> None:
        """`dns` makes the name resolver each pool's policy checks (the system resolver by default)."""
        self.pool = pool or PoolSettings()
        self._dns = dns
        self._connectors: dict[OutboundPolicy, aiohttp.TCPConnector] = {}
        self._sessions: dict[OutboundPolicy, aiohttp.ClientSession] = {}
        # send()'s own sessions per policy: (raw bytes, decompressed)
        self._senders: dict[OutboundPolicy, tuple[aiohttp.ClientSession, aiohttp.ClientSession]] = {}
        # send()'s lean pools per policy (requests with their body in memory)
        self._wires: dict[OutboundPolicy, WirePool] = {}
        self._ssl: ssl.SSLContext | None = None
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=self.pool.connect_timeout, sock_read=self.pool.read_timeout
        )

    def _connector(self, policy: OutboundPolicy) -> aiohttp.TCPConnector:
        """The policy's pool (created on first use, inside the event loop)."""
        connector = self._connectors.get(policy)
        if connector is None:
            connector = aiohttp.TCPConnector(
                limit=self.pool.size,
                limit_per_host=self.pool.per_host,
                keepalive_timeout=self.pool.keepalive,
                ttl_dns_cache=int(self.pool.dns_ttl),
                resolver=PinningResolver(policy, self._dns() if self._dns else None),
            )
            self._connectors[policy] = connector
        return connector

    def session(self, policy: OutboundPolicy) -> aiohttp.ClientSession:
        """A session on the policy's pool that checks every URL it requests against the policy."""
        session = self._sessions.get(policy)
        if session is None:
            session = aiohttp.ClientSession(
                connector=self._connector(policy),
                connector_owner=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=self._timeout,
                trace_configs=[_policing(policy)],
            )
            self._sessions[policy] = session
        return session

    def _sender(self, policy: OutboundPolicy, decompress: bool) -> aiohttp.ClientSession:
        senders = self._senders.get(policy)
        if senders is None:
            connector = self._connector(policy)
            # raw: no Accept-Encoding of aiohttp's own, so that the bytes passed on are what the caller asked for
            raw = aiohttp.ClientSession(
                connector=connector,
                connector_owner=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=self._timeout,
                auto_decompress=False,
                skip_auto_headers=("Accept-Encoding",),
            )
            decompressing = aiohttp.ClientSession(
                connector=connector, connector_owner=False, cookie_jar=aiohttp.DummyCookieJar(), timeout=self._timeout
            )
            senders = self._senders[policy] = (raw, decompressing)
        return senders[1] if decompress else senders[0]

    def _wire(self, policy: OutboundPolicy) -> WirePool:
        wire = self._wires.get(policy)
        if wire is None:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            pool = self.pool
            wire = self._wires[policy] = WirePool(
                PinningResolver(policy, self._dns() if self._dns else None),
                loop=asyncio.get_running_loop(),
                connect_timeout=pool.connect_timeout,
                read_timeout=pool.read_timeout,
                size=pool.size,
                per_host=pool.per_host,
                keepalive=pool.keepalive,
                dns_ttl=pool.dns_ttl,
                ssl_context=self._ssl,
            )
        return wire

    def clear_dns_cache(self) -> None:
        """Forget every looked-up address: the next connection to a name looks it up (and checks it) again."""
        for connector in self._connectors.values():
            connector.clear_dns_cache()
        for wire in self._wires.values():
            wire.clear_dns_cache()

    async def close(self) -> None:
        wires = list(self._wires.values())
        self._wires = {}
        await asyncio.gather(*(wire.close() for wire in wires))
        sessions = [*self._sessions.values(), *(s for pair in self._senders.values() for s in pair)]
        connectors = list(self._connectors.values())
        self._sessions, self._senders, self._connectors = {}, {}, {}
        await asyncio.gather(*(session.close() for session in sessions))
        await asyncio.gather(*(connector.close() for connector in connectors))

    async def __aenter__(self) -> OutboundClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def send(self, request: OutboundRequest, policy: OutboundPolicy) -> Response:
        """Send the request, following up to `policy.max_redirects` redirects; the caller reads (or
        releases) the response. Raises OutboundDenied, TooManyRedirects and aiohttp's errors."""
        method, url, headers, body = request.method.upper(), request.url, request.headers, request.body
        if request.decompress and "accept-encoding" in headers:
            headers = CIMultiDict(headers)
            headers.popall("accept-encoding")
        for hop in range(policy.max_redirects + 1):
            try:
                policy.check_url(url)
                response: Response
                if wire_eligible(method, url, body, request.decompress):
                    assert body is None or isinstance(body, bytes)
                    response = await self._wire(policy).request(method, url, headers, body)
                else:
                    session = self._sender(policy, request.decompress)
                    response = await session.request(method, url, headers=headers, data=body, allow_redirects=False)
            except OutboundDenied as exc:
                if hop == 0:
                    raise
                raise OutboundDenied(
                    "redirect_denied", f"A redirect was refused: {exc.message}", host=exc.host
                ) from None
            location = response.headers.get("Location")
            if not request.follow_redirects or response.status not in _REDIRECTS or not location:
                return response
            target = url.join(URL(location))
            keeps_method = response.status in (307, 308)
            if keeps_method and body is not None and not isinstance(body, bytes):
                return response  # a streamed body cannot be sent twice: the caller gets the redirect
            response.release()
            # the caller's headers are not changed: each hop works on its own copy
            headers = CIMultiDict(headers)
            if not keeps_method and (response.status == 303 or method == "POST") and method != "HEAD":
                method, body = "GET", None
                for name in ("content-type", "content-length", "content-encoding"):
                    headers.popall(name, None)
            if not request.forward_headers_on_redirect and target.origin() != url.origin():
                for name in _ORIGIN_BOUND:
                    headers.popall(name, None)
            url = target
        raise TooManyRedirects(f"The upstream API redirected more than {policy.max_redirects} times")


__all__ = ["Body", "BodyReader", "OutboundClient", "OutboundRequest", "PolicyRefused", "PoolSettings", "Response"]
