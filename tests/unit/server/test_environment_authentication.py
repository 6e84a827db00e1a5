"""Secret-key authentication: a key that authenticated is reused for a short while, nothing else is."""

from __future__ import annotations

import uuid
from typing import Any, cast

import pytest

from nango.crypto import sha256_hex
from nango.errors import InvalidSecretKeyFormat, UnknownAccount
from nango.server import environments
from nango.server.environments import EnvironmentService
from nango.server.store import EnvironmentRow

KEY = str(uuid.uuid4())


class Store:
    """`EnvironmentStore.environment_by_key_hash` over one environment whose key can be replaced."""

    def __init__(self, key: str) -> None:
        self.key_hash = sha256_hex(key)
        self.reads = 0

    async def environment_by_key_hash(self, key_hash: str) -> EnvironmentRow | None:
        self.reads += 1
        if key_hash != self.key_hash:
            return None
        return EnvironmentRow(7, 3, str(uuid.uuid4()), "dev", str(uuid.uuid4()), False, key_hash, "sealed")


def service(store: Store) -> EnvironmentService:
    return EnvironmentService(cast(Any, store), cast(Any, None))


async def test_a_key_that_authenticated_is_reused() -> None:
    store = Store(KEY)
    envs = service(store)
    first = await envs.authenticate(KEY)
    second = await envs.authenticate(KEY)
    assert first.id == 7
    assert first.account_id == 3
    assert second is first
    assert store.reads == 1


async def test_unknown_and_malformed_keys_are_not_remembered() -> None:
    store = Store(KEY)
    envs = service(store)
    other = str(uuid.uuid4())
    for _ in range(2):
        with pytest.raises(UnknownAccount):
            await envs.authenticate(other)
    assert store.reads == 2
    for _ in range(2):
        with pytest.raises(InvalidSecretKeyFormat):
            await envs.authenticate("not-a-key")
    assert store.reads == 2


async def test_a_replaced_key_stops_working_once_its_entry_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(KEY)
    envs = service(store)
    clock = [1000.0]
    monkeypatch.setattr(environments.time, "monotonic", lambda: clock[0])
    await envs.authenticate(KEY)
    store.key_hash = sha256_hex(str(uuid.uuid4()))  # another replica replaced the key
    clock[0] += environments._CACHE_SECONDS - 1
    await envs.authenticate(KEY)
    clock[0] += 2
    with pytest.raises(UnknownAccount):
        await envs.authenticate(KEY)


async def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(environments, "_CACHE_ENTRIES", 3)
    keys = [str(uuid.uuid4()) for _ in range(5)]
    stores = {sha256_hex(key): Store(key) for key in keys}

    class Many(Store):
        async def environment_by_key_hash(self, key_hash: str) -> EnvironmentRow | None:
            self.reads += 1
            return await stores[key_hash].environment_by_key_hash(key_hash)

    envs = service(Many(keys[0]))
    for key in keys:
        await envs.authenticate(key)
    assert len(envs._by_key) <= 3
