"""The in-process store: one dict and asyncio queues, for a single process that needs no Redis."""

from __future__ import annotations

import asyncio
import time
from typing import NamedTuple

from nango.errors import InternalError
from nango.kv.base import KVStore, Subscription, millis


class _Entry(NamedTuple):
    value: bytes
    expires_at: float | None  # time.monotonic() deadline


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


class MemoryKV(KVStore):
    """Expired keys are dropped when read, and all of them in a sweep at most every `purge_interval`
    seconds when something is written, so memory stays bounded without a background task."""

    def __init__(self, *, prefix: str = "nango:", purge_interval: float = 30.0) -> None:
        super().__init__(prefix)
        self._entries: dict[str, _Entry] = {}
        self._channels: dict[str, set[Subscription]] = {}
        self._purge_interval = purge_interval
        self._next_purge = time.monotonic() + purge_interval
        self._removed = asyncio.Event()

    def _live(self, key: str, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at is not None and entry.expires_at <= now:
            del self._entries[key]
            return None
        return entry

    def _write(self, key: str, entry: _Entry, now: float) -> None:
        self._entries[key] = entry
        if now >= self._next_purge:
            for expired in [k for k, e in self._entries.items() if e.expires_at is not None and e.expires_at <= now]:
                del self._entries[expired]
            self._next_purge = now + self._purge_interval

    def _signal_removal(self) -> None:
        # Wake every lock waiter; each retries its own key, which is cheap for in-process locks.
        self._removed.set()
        self._removed = asyncio.Event()

    async def get(self, key: str) -> bytes | None:
        entry = self._live(self._key(key), time.monotonic())
        return None if entry is None else entry.value

    async def set(
        self, key: str, value: bytes | str, *, ttl: float | None = None, only_if_absent: bool = False
    ) -> bool:
        full, now = self._key(key), time.monotonic()
        expires_at = None if ttl is None else now + millis(ttl, "ttl") / 1000
        if only_if_absent and self._live(full, now) is not None:
            return False
        self._write(full, _Entry(_as_bytes(value), expires_at), now)
        return True

    async def delete(self, *keys: str) -> int:
        now = time.monotonic()
        deleted = 0
        for key in keys:
            full = self._key(key)
            if self._live(full, now) is not None:
                del self._entries[full]
                deleted += 1
        if deleted:
            self._signal_removal()
        return deleted

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        full, now = self._key(key), time.monotonic()
        entry = self._live(full, now)
        if entry is None:
            value, expires_at = amount, None if ttl is None else now + millis(ttl, "ttl") / 1000
        else:
            try:
                value, expires_at = int(entry.value) + amount, entry.expires_at
            except ValueError:
                raise InternalError(f"kv key {key!r} does not hold an integer") from None
        self._write(full, _Entry(str(value).encode(), expires_at), now)
        return value

    async def ttl(self, key: str) -> float | None:
        now = time.monotonic()
        entry = self._live(self._key(key), now)
        if entry is None or entry.expires_at is None:
            return None
        return entry.expires_at - now

    async def try_acquire(self, key: str, owner: str, ttl: float) -> bool:
        return await self.set(key, owner, ttl=ttl, only_if_absent=True)

    async def release(self, key: str, owner: str) -> bool:
        full = self._key(key)
        entry = self._live(full, time.monotonic())
        if entry is None or entry.value != owner.encode():
            return False
        del self._entries[full]
        self._signal_removal()
        return True

    async def _wait_for_release(self, key: str, timeout: float) -> None:
        now = time.monotonic()
        entry = self._live(self._key(key), now)
        if entry is not None and entry.expires_at is not None:
            timeout = min(timeout, entry.expires_at - now)
        removed = self._removed
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                await removed.wait()
        except TimeoutError:
            return

    async def publish(self, channel: str, message: bytes | str) -> int:
        subscribers = self._channels.get(self._key(channel), set())
        for subscription in subscribers:
            subscription._deliver(_as_bytes(message))
        return len(subscribers)

    async def _attach(self, subscription: Subscription) -> None:
        self._channels.setdefault(self._key(subscription.channel), set()).add(subscription)

    async def _detach(self, subscription: Subscription) -> None:
        full = self._key(subscription.channel)
        subscribers = self._channels.get(full, set())
        subscribers.discard(subscription)
        if not subscribers:
            self._channels.pop(full, None)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        for subscribers in self._channels.values():
            for subscription in subscribers:
                subscription._end()
        self._channels.clear()
