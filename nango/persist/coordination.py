"""Checkpoints (a sync's resumable state, under optimistic concurrency) and the named locks functions
take across runs and runners."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from nango.errors import InvalidRequest
from nango.persist.errors import CheckpointConflict
from nango.persist.models import Checkpoint
from nango.persist.store import CheckpointStore, LockStore

MAX_KEY_LENGTH = 255
MAX_OWNER_LENGTH = 255
MAX_CHECKPOINT_BYTES = 1024 * 1024
MAX_LOCK_TTL = timedelta(days=1)


def _key(key: str, what: str = "key") -> str:
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidRequest(f"{what} must be 1 to {MAX_KEY_LENGTH} characters long")
    return key


def _connection(connection_id: int) -> int:
    if connection_id <= 0:
        raise InvalidRequest("nango_connection_id must be a positive integer")
    return connection_id


def _version(version: int) -> int:
    if version < 0:
        raise InvalidRequest("expected_version must be 0 (none stored yet) or a version that was read")
    return version


class Checkpoints:
    def __init__(self, store: CheckpointStore) -> None:
        self.store = store

    async def get(self, environment_id: int, connection_id: int, key: str) -> Checkpoint | None:
        """The checkpoint, soft-deleted ones included (with `deleted_at`), or None if never written."""
        return await self.store.get(environment_id, _connection(connection_id), _key(key))

    async def put(
        self, environment_id: int, connection_id: int, key: str, checkpoint: dict[str, Any], expected_version: int
    ) -> Checkpoint:
        """Write if the stored version is still `expected_version` (0 when none was ever stored)."""
        if not isinstance(checkpoint, dict):
            raise InvalidRequest("checkpoint must be a JSON object")
        encoded = json.dumps(checkpoint, separators=(",", ":"), default=str)
        if len(encoded) > MAX_CHECKPOINT_BYTES:
            raise InvalidRequest(f"a checkpoint is at most {MAX_CHECKPOINT_BYTES // 1024} KB of JSON")
        written = await self.store.put(
            environment_id, _connection(connection_id), _key(key), encoded, _version(expected_version)
        )
        if written is None:
            raise CheckpointConflict(
                f"checkpoint {key!r} is not at version {expected_version}; read it again before writing"
            )
        return written

    async def delete(self, environment_id: int, connection_id: int, key: str, expected_version: int) -> Checkpoint:
        """Soft-delete the live checkpoint at `expected_version`; its version moves on."""
        deleted = await self.store.delete(
            environment_id, _connection(connection_id), _key(key), _version(expected_version)
        )
        if deleted is None:
            raise CheckpointConflict(
                f"checkpoint {key!r} is not live at version {expected_version}; read it again before deleting"
            )
        return deleted


class Locks:
    def __init__(self, store: LockStore) -> None:
        self.store = store

    async def try_acquire(self, environment_id: int, owner: str, key: str, ttl: timedelta) -> bool:
        if not timedelta(0) < ttl <= MAX_LOCK_TTL:
            raise InvalidRequest(f"ttl must be positive and at most {MAX_LOCK_TTL.days} day")
        return await self.store.try_acquire(environment_id, _key(owner, "owner"), _key(key), ttl)

    async def release(self, environment_id: int, owner: str, key: str) -> bool:
        """True when `owner` held the lock (even past its expiry, if nobody took it since)."""
        return await self.store.release(environment_id, _key(owner, "owner"), _key(key))

    async def release_all(self, environment_id: int, owner: str) -> int:
        return await self.store.release_all(environment_id, _key(owner, "owner"))


__all__ = ["Checkpoints", "Locks"]
