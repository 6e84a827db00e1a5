"""Key-value store with expiry, atomic counters, locks and pub/sub.

`open_kv` returns a Redis store when a URL is configured and an in-process store otherwise. Every
key and channel is stored under a prefix (`NANGO_REDIS_KEY_PREFIX`), so deployments and test runs
can share one Redis.

The in-process store is per process: its keys, locks and pub/sub do not cross process boundaries,
not even between the five service processes `nango up` starts. Use it only for state one process
keeps to itself. Any deployment with more than one replica of a service needs Redis, or two
replicas would both hold the same lock and a message published by one would never reach the
other's subscribers.

Pub/sub is at-most-once in both stores, as in Redis: a message published while a subscriber is
not subscribed (or reconnecting) is not delivered to it. A subscription whose connection fails
for good raises ServiceUnavailable from its iteration, so the caller can resubscribe and resync.
"""

from __future__ import annotations

from nango.kv.base import KVStore, Lock, LockTimeout, Subscription
from nango.kv.memory import MemoryKV


def open_kv(redis_url: str | None, *, prefix: str = "nango:") -> KVStore:
    """Redis when `redis_url` is set (nothing is connected until first use), else the in-process store."""
    if redis_url:
        # redis-py takes a tenth of a second to import: only processes that use Redis pay for it
        from nango.kv.redis_store import RedisKV

        return RedisKV(redis_url, prefix=prefix)
    return MemoryKV(prefix=prefix)


__all__ = ["KVStore", "Lock", "LockTimeout", "MemoryKV", "Subscription", "open_kv"]
