"""Deployed bundles: fetched from the blob store by key, checked against their SHA-256, unpacked once
into `<data dir>/runner/bundles/<sha256>/` and reused by every task of that version."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import shutil
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

from nango.blob import BlobNotFound, BlobStore
from nango.errors import InvalidRequest, NotFound
from nango.runner.archive import InvalidBundle, unpack

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMPLETE = ".complete"


class BundleUnavailable(NotFound):
    code = "bundle_unavailable"
    default_message = "The function's bundle is not in the blob store"


class BundleCache:
    """Unpacked bundles by SHA-256, at most `capacity` of them; the least recently used one that no
    running task holds is removed first."""

    def __init__(self, store: BlobStore, root: Path, *, capacity: int, max_bytes: int) -> None:
        self.store = store
        self.root = root
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._locks: dict[str, asyncio.Lock] = {}
        self._in_use: Counter[str] = Counter()
        # an eviction had to keep bundles that tasks held: try again when one is let go
        self._over_capacity = False
        root.mkdir(parents=True, exist_ok=True)
        for leftover in root.glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    @contextlib.asynccontextmanager
    async def use(self, key: str, sha256: str) -> AsyncIterator[Path]:
        """The unpacked folder of a bundle, kept while the block runs."""
        digest = sha256.lower()
        if not _SHA256.fullmatch(digest):
            raise InvalidRequest("function.bundle_sha256 must be a hex SHA-256")
        self._in_use[digest] += 1
        try:
            yield await self._fetch(key, digest)
        finally:
            self._in_use[digest] -= 1
            if not self._in_use[digest]:
                del self._in_use[digest]
                if self._over_capacity:
                    await asyncio.to_thread(self._evict)

    async def _fetch(self, key: str, digest: str) -> Path:
        target = self.root / digest
        if (target / _COMPLETE).exists():
            with contextlib.suppress(OSError):
                os.utime(target)
            return target
        lock = self._locks.setdefault(digest, asyncio.Lock())
        async with lock:
            if (target / _COMPLETE).exists():
                return target
            try:
                data = await self.store.get(key)
            except BlobNotFound:
                raise BundleUnavailable(f"no bundle at {key!r} in the blob store") from None
            if hashlib.sha256(data).hexdigest() != digest:
                raise InvalidBundle(f"the bundle at {key!r} does not match its SHA-256")
            await asyncio.to_thread(self._install, data, target)
        self._locks.pop(digest, None)
        await asyncio.to_thread(self._evict)
        return target

    def _install(self, data: bytes, target: Path) -> None:
        staging = self.root / f".tmp-{target.name}-{uuid.uuid4().hex[:8]}"
        unpack(data, staging, self.max_bytes)
        (staging / _COMPLETE).touch()
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)

    def _evict(self) -> None:
        entries = [p for p in self.root.iterdir() if _SHA256.fullmatch(p.name)]
        excess = len(entries) - self.capacity
        entries.sort(key=lambda p: p.stat().st_mtime)
        for path in entries:
            if excess <= 0:
                break
            if path.name not in self._in_use:
                shutil.rmtree(path, ignore_errors=True)
                log.info("bundle evicted from the cache", extra={"sha256": path.name})
                excess -= 1
        self._over_capacity = excess > 0


__all__ = ["BundleCache", "BundleUnavailable", "InvalidBundle", "unpack"]
