"""The `KVStore` contract and the parts both stores share: `Lock` and `Subscription`."""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Final

from nango.errors import Conflict, NangoError

log = logging.getLogger(__name__)

# A subscriber that falls this far behind loses messages rather than growing without bound (Redis
# disconnects such a client for the same reason).
SUBSCRIPTION_BUFFER: Final = 10_000


class LockTimeout(Conflict):
    code = "lock_timeout"
    default_message = "A lock could not be acquired in time"


def millis(seconds: float, what: str) -> int:
    """A positive duration in whole milliseconds, as Redis and the memory store both count it."""
    if not seconds > 0:
        raise ValueError(f"{what} must be a positive number of seconds, got {seconds!r}")
    return max(1, round(seconds * 1000))


class KVStore(ABC):
    """Keys, counters, locks and pub/sub. Keys and channels are stored under the store's prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def _key(self, key: str) -> str:
        return self.prefix + key

    @abstractmethod
    async def get(self, key: str) -> bytes | None: ...

    @abstractmethod
    async def set(
        self, key: str, value: bytes | str, *, ttl: float | None = None, only_if_absent: bool = False
    ) -> bool:
        """Store `value`; False (and nothing written) when `only_if_absent` and the key exists."""

    @abstractmethod
    async def delete(self, *keys: str) -> int:
        """Delete the keys; the number that existed."""

    @abstractmethod
    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        """Add `amount` atomically; `ttl` is set only when this call creates the key (a fixed window)."""

    @abstractmethod
    async def ttl(self, key: str) -> float | None:
        """Seconds until the key expires; None when it does not exist or never expires."""

    @abstractmethod
    async def try_acquire(self, key: str, owner: str, ttl: float) -> bool:
        """Hold `key` for `owner` for `ttl` seconds unless someone holds it already."""

    @abstractmethod
    async def release(self, key: str, owner: str) -> bool:
        """Free `key` if `owner` still holds it; False when it expired or another owner holds it."""

    def lock(self, key: str, *, ttl: float, wait: float = 0.0) -> Lock:
        """`async with kv.lock(key, ttl=30, wait=5):` or LockTimeout after `wait` seconds."""
        return Lock(self, key, ttl=ttl, wait=wait)

    @abstractmethod
    async def publish(self, channel: str, message: bytes | str) -> int:
        """Send to the channel's current subscribers; the number of receivers (on Redis, of processes)."""

    def subscribe(self, channel: str) -> Subscription:
        """`async with kv.subscribe(channel) as sub: async for message in sub:`; active once entered."""
        return Subscription(self, channel)

    @abstractmethod
    async def ping(self) -> None:
        """Raise ServiceUnavailable unless the store answers."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections and end every open subscription; safe to call twice."""

    @abstractmethod
    async def _attach(self, subscription: Subscription) -> None:
        """Start delivering the subscription's channel to it; return once no message can be missed."""

    @abstractmethod
    async def _detach(self, subscription: Subscription) -> None: ...

    async def _wait_for_release(self, key: str, timeout: float) -> None:
        """Sleep until `key` may have been freed, at most `timeout` seconds (polling unless overridden)."""
        # Jitter keeps replicas that wait for the same lock from retrying in lockstep.
        await asyncio.sleep(min(timeout, random.uniform(0.02, 0.1)))  # noqa: S311


class Lock:
    """A lock held for at most `ttl` seconds; acquiring waits up to `wait` seconds."""

    def __init__(self, store: KVStore, key: str, *, ttl: float, wait: float) -> None:
        if wait < 0:
            raise ValueError(f"lock wait must not be negative, got {wait!r}")
        self.key = key
        self.ttl = ttl
        self.wait = wait
        self.owner = secrets.token_hex(16)
        self._store = store

    async def __aenter__(self) -> Lock:
        deadline = time.monotonic() + self.wait
        while not await self._store.try_acquire(self.key, self.owner, self.ttl):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockTimeout(f"lock {self.key!r} is held by another owner (waited {self.wait:g}s)")
            await self._store._wait_for_release(self.key, remaining)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            released = await self._store.release(self.key, self.owner)
        except NangoError as error:
            # The ttl frees the lock anyway; raising here would hide the body's own outcome.
            log.warning("lock release failed", extra={"lock": self.key, "error": error.message})
            return
        if not released:
            log.warning("lock expired before its holder finished", extra={"lock": self.key, "ttl": self.ttl})


class Subscription:
    """Messages published on one channel after entry, in order. Iteration ends when the store closes
    and raises ServiceUnavailable when the store loses its connection for good."""

    def __init__(self, store: KVStore, channel: str) -> None:
        self.channel = channel
        self._store = store
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(SUBSCRIPTION_BUFFER)
        self._failure: NangoError | None = None
        self._ended = False

    async def __aenter__(self) -> Subscription:
        await self._store._attach(self)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._store._detach(self)
        self._end(self._failure)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> bytes:
        if self._ended and self._queue.empty():
            raise self._failure or StopAsyncIteration
        message = await self._queue.get()
        if message is None:
            raise self._failure or StopAsyncIteration
        return message

    def _deliver(self, message: bytes) -> None:
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            log.warning("subscriber too slow, message dropped", extra={"channel": self.channel})

    def _end(self, failure: NangoError | None = None) -> None:
        """Stop iteration after the messages already received, raising `failure` if given."""
        self._failure = failure
        self._ended = True
        if self._queue.full():
            # The end marker must fit; one message more or less no longer matters to this subscriber.
            self._queue.get_nowait()
        self._queue.put_nowait(None)
