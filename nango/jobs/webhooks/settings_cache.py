"""The server's webhook settings (`GetWebhookSettings`), kept at most `ttl` seconds per environment (and
connection), so that the signing key is read at send time without one call per delivery: a rotated key
signs every attempt made more than `ttl` after the server answers with it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from nango.server.client import WebhookSettings

MAX_TTL = 2.0
_MAX_ENTRIES = 10_000


class WebhookSettingsSource(Protocol):
    async def get_webhook_settings(self, environment_id: int, nango_connection_id: int = 0) -> WebhookSettings: ...


class SettingsCache:
    def __init__(
        self, source: WebhookSettingsSource, *, ttl: float = MAX_TTL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.source = source
        self.ttl = min(ttl, MAX_TTL)
        self._clock = clock
        self._entries: dict[tuple[int, int], tuple[float, WebhookSettings]] = {}
        self._asking: dict[tuple[int, int], asyncio.Future[WebhookSettings]] = {}

    async def get(self, environment_id: int, nango_connection_id: int = 0) -> WebhookSettings:
        """The settings as the connection sees them (0: the environment's own); callers asking together
        share one call. The server's errors (NotFound, ServiceUnavailable…) are raised as they are."""
        key = (environment_id, nango_connection_id)
        entry = self._entries.get(key)
        if entry is not None and entry[0] > self._clock():
            return entry[1]
        asking = self._asking.get(key)
        if asking is None:
            asking = asyncio.ensure_future(self._ask(key))
            self._asking[key] = asking
            asking.add_done_callback(lambda done: self._settled(key, done))
        return await asyncio.shield(asking)

    async def _ask(self, key: tuple[int, int]) -> WebhookSettings:
        # counted from the question: an answer is never used longer than `ttl` after the server gave it
        asked_at = self._clock()
        settings = await self.source.get_webhook_settings(*key)
        if len(self._entries) >= _MAX_ENTRIES:
            self._entries.clear()
        self._entries[key] = (asked_at + self.ttl, settings)
        return settings

    def _settled(self, key: tuple[int, int], done: asyncio.Future[WebhookSettings]) -> None:
        self._asking.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved here: a caller that gave up must not leave it unobserved

    def forget(self) -> None:
        self._entries.clear()


__all__ = ["MAX_TTL", "SettingsCache", "WebhookSettingsSource"]
