"""A proxy call from request to upstream answer: URL and credentials, retries, waits, one refresh.

The answer comes back open, for the caller to stream; the engine never reads a body whole except an
error body it must inspect for a provider's `in_body` retry rule (bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qsl

import aiohttp

from nango.outbound import Body, OutboundClient, OutboundDenied, OutboundPolicy, OutboundRequest, Response
from nango.outbound.errors import UpstreamTimeout, UpstreamUnreachable
from nango.proxycore import retry
from nango.proxycore.errors import (
    BaseUrlOverrideDisabled,
    BaseUrlOverrideNotAllowed,
    InvalidBaseUrl,
    InvalidUpstreamHeaders,
)
from nango.proxycore.spec import CredentialSource, ProxySpec
from nango.proxycore.target import Target, build, check_base_url

# an error body read to find a provider's in-body wait is read this far at most
IN_BODY_LIMIT = 1024 * 1024
# a retried answer's body is read to keep its connection alive when it is at most this long
_DRAIN_LIMIT = 64 * 1024
_ABORT_POLL = 0.25


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request sent upstream (for the operations log)."""

    started_at: datetime
    duration_ms: int
    status: int | None = None
    error: str | None = None
    # why and how long the call waited before the next attempt
    retry_reason: str | None = None
    wait_ms: int | None = None

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"started_at": self.started_at.isoformat(), "duration_ms": self.duration_ms}
        for name in ("status", "error", "retry_reason", "wait_ms"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


@dataclass(frozen=True, slots=True)
class UpstreamAnswer:
    response: Response
    decompressed: bool = False


class CallerGone(Exception):
    """The caller disconnected while the call waited to retry: nobody would read the answer."""


def _form_params(spec: ProxySpec, body: Body) -> tuple[tuple[str, str], ...]:
    """Form fields of a urlencoded body: OAuth 1.0a signs them with the URL."""
    if not isinstance(body, bytes):
        return ()
    content_type = next((v for k, v in spec.headers if k.lower() == "content-type"), "")
    if not content_type.lower().startswith("application/x-www-form-urlencoded"):
        return ()
    return tuple(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


async def _drain(response: Response) -> None:
    """Let go of an answer we will not forward, keeping its connection when that is cheap."""
    length = response.content_length
    if length is not None and length <= _DRAIN_LIMIT:
        with contextlib.suppress(aiohttp.ClientError):
            await response.read()
    response.release()


async def _read_capped(response: Response, cap: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while size <= cap:
        chunk = await response.content.read(cap + 1 - size)
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


class ProxyEngine:
    def __init__(self, outbound: OutboundClient, policy: OutboundPolicy, *, override_enabled: bool = True) -> None:
        self.outbound = outbound
        self.policy = policy
        self.override_enabled = override_enabled

    def check_override(self, value: str) -> None:
        """Refuse a Base-Url-Override the settings or the outbound policy do not allow."""
        if not self.override_enabled:
            raise BaseUrlOverrideDisabled()
        url = check_base_url(value)
        try:
            self.policy.check_url(url)
        except OutboundDenied as exc:
            raise BaseUrlOverrideNotAllowed(payload={"reason": exc.reason}) from None

    def call(
        self, spec: ProxySpec, source: CredentialSource, body: Body, *, aborted: Callable[[], bool] | None = None
    ) -> ProxyCall:
        return ProxyCall(self, spec, source, body, aborted or (lambda: False))


@dataclass(slots=True)
class ProxyCall:
    engine: ProxyEngine
    spec: ProxySpec
    source: CredentialSource
    body: Body
    aborted: Callable[[], bool]
    attempts: list[Attempt] = field(default_factory=list)
    target: Target | None = None

    @property
    def replayable(self) -> bool:
        return self.body is None or isinstance(self.body, bytes)

    async def send(self) -> UpstreamAnswer:
        """The upstream's answer, after the retries the spec and the provider allow. Raises
        NangoError subclasses when there is no answer to forward."""
        if self.spec.base_url_override:
            self.engine.check_override(self.spec.base_url_override)
        view = await self.source.current()
        rules = view.provider.proxy.retry if view.provider.proxy else None
        decompress = self.spec.decompress or bool(view.provider.proxy and view.provider.proxy.decompress)
        form = _form_params(self.spec, self.body)
        refreshed = False
        retries_left = self.spec.retries if self.replayable else 0
        while True:
            self.target = build(self.spec, view, form)
            if _splits_lines(self.target.headers):
                raise InvalidUpstreamHeaders()
            request = OutboundRequest(
                method=self.spec.method,
                url=self.target.url,
                headers=self.target.headers,
                body=self.body,
                decompress=decompress,
                forward_headers_on_redirect=self.spec.forward_headers_on_redirect,
            )
            started, clock = datetime.now(UTC), time.monotonic()
            try:
                response = await self.engine.outbound.send(request, self.engine.policy)
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                failed = Attempt(started, _ms_since(clock), error=type(exc).__name__)
                if retries_left <= 0 or self.aborted():
                    self.attempts.append(failed)
                    raise _upstream_error(exc) from None
                wait = retry.backoff(self.spec.retries - retries_left + 1)
                self.attempts.append(_with_wait(failed, "network_error", wait))
                retries_left -= 1
                await self._sleep(wait)
                view = await self.source.current()
                continue
            except aiohttp.InvalidURL:
                self.attempts.append(Attempt(started, _ms_since(clock), error="InvalidURL"))
                raise InvalidBaseUrl("The upstream URL is not valid") from None
            except aiohttp.ClientError as exc:
                # not a network failure: the upstream answered something that is not HTTP
                self.attempts.append(Attempt(started, _ms_since(clock), error=type(exc).__name__))
                raise UpstreamUnreachable(
                    f"The upstream API answered with invalid HTTP ({type(exc).__name__})"
                ) from None
            done = Attempt(started, _ms_since(clock), status=response.status)
            if response.status == 401 and not refreshed and self.replayable:
                refreshed = True
                fresh = await self.source.refreshed()
                if fresh is not None:
                    self.attempts.append(_with_wait(done, "refreshed_credentials", 0.0))
                    await _drain(response)
                    view = fresh
                    continue
            reason = retry.retry_reason(response.status, response.headers, rules, self.spec.retry_on)
            if reason is None or retries_left <= 0 or self.aborted():
                self.attempts.append(done)
                return UpstreamAnswer(response, decompressed=decompress)
            prefix = await _read_capped(response, IN_BODY_LIMIT) if retry.needs_body(rules) else b""
            announced = retry.announced_wait(response.headers, prefix, rules)
            wait = announced if announced is not None else retry.backoff(self.spec.retries - retries_left + 1)
            self.attempts.append(_with_wait(done, reason, wait))
            await _drain(response)
            retries_left -= 1
            await self._sleep(wait)
            view = await self.source.current()

    async def _sleep(self, seconds: float) -> None:
        """Wait, giving up early when the caller went away (nobody would read the answer)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.aborted():
                raise CallerGone()
            await asyncio.sleep(min(left, _ABORT_POLL))


_LINE_BREAKS = frozenset("\r\n")


def _splits_lines(headers: Mapping[str, str]) -> bool:
    """Whether a header would split the request (a credential or metadata value with CR or LF)."""
    return any(
        not _LINE_BREAKS.isdisjoint(value) or not _LINE_BREAKS.isdisjoint(name) for name, value in headers.items()
    )


def _ms_since(clock: float) -> int:
    return int((time.monotonic() - clock) * 1000)


def _with_wait(attempt: Attempt, reason: str, wait: float) -> Attempt:
    return Attempt(attempt.started_at, attempt.duration_ms, attempt.status, attempt.error, reason, int(wait * 1000))


def _upstream_error(exc: BaseException) -> Exception:
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout()
    return UpstreamUnreachable(f"The upstream API could not be reached ({type(exc).__name__})")


__all__ = ["IN_BODY_LIMIT", "Attempt", "CallerGone", "ProxyCall", "ProxyEngine", "UpstreamAnswer"]
