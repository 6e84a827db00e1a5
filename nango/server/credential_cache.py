"""A few seconds of decrypted connections for hot paths (the proxy), so that a burst of calls on one
connection costs one SQL read and one decryption.

An entry lives `ttl` seconds at most, and never past the moment its credentials become due for a
refresh. This replica drops an entry when it refreshes, overrides, changes or deletes the
connection; other replicas' entries expire with their TTL, which bounds how long they may use what
was just replaced.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nango.server.connections import Connection

Key = tuple[int, str, str]


class CredentialCache:
    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[Key, tuple[float, Connection]] = {}
        self._keys_by_id: dict[int, Key] = {}

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def get(self, key: Key) -> Connection | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            self.forget(key)
            return None
        return entry[1]

    def put(self, key: Key, connection: Connection, *, fresh_for: float | None = None) -> None:
        """Keep `connection` for the TTL, or `fresh_for` seconds when its credentials are due sooner."""
        lifetime = self.ttl if fresh_for is None else min(self.ttl, fresh_for)
        if not self.enabled or lifetime <= 0:
            return
        if key not in self._entries and len(self._entries) >= self.max_entries:
            self.forget(next(iter(self._entries)))
        self._entries[key] = (time.monotonic() + lifetime, connection)
        self._keys_by_id[connection.id] = key

    def forget(self, key: Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._keys_by_id.pop(entry[1].id, None)

    def forget_id(self, row_id: int) -> None:
        key = self._keys_by_id.get(row_id)
        if key is not None:
            self.forget(key)


__all__ = ["CredentialCache", "Key"]
