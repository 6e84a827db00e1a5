"""Environments and their secret keys: first-start bootstrap, and authenticating API calls."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nango.crypto import Keyring, sha256_hex
from nango.errors import InvalidSecretKeyFormat, UnknownAccount
from nango.server import sealing
from nango.server.settings import UUID_V4
from nango.server.store import EnvironmentRow, EnvironmentStore
from nango.telemetry import register_secret

log = logging.getLogger(__name__)

DEFAULT_ENVIRONMENTS = ("dev", "prod")
_CACHE_SECONDS = 30.0
_CACHE_ENTRIES = 10_000


@dataclass(frozen=True)
class Environment:
    id: int
    account_id: int
    uuid: str
    name: str
    is_production: bool

    @classmethod
    def from_row(cls, row: EnvironmentRow) -> Environment:
        return cls(row.id, row.account_id, row.uuid, row.name, row.is_production)


@dataclass(frozen=True)
class EnvironmentWithKey:
    environment: Environment
    secret_key: str


class EnvironmentService:
    def __init__(self, store: EnvironmentStore, keyring: Keyring) -> None:
        self.store = store
        self.keyring = keyring
        # secret key as presented -> (expires at, its environment)
        self._by_key: dict[str, tuple[float, Environment]] = {}
        self._by_id: dict[int, Environment] = {}
        # what every new environment gets in the transaction that creates it: (environment id, conn)
        self.creation_hooks: list[Callable[[int, Any], Awaitable[None]]] = []

    def _seal_key(self, env_uuid: str, secret_key: str) -> str:
        return self.keyring.seal(secret_key, aad=sealing.environment_secret_key(env_uuid))

    async def bootstrap(self, provisioned: dict[str, str | None]) -> list[EnvironmentWithKey]:
        """Create the account and the `dev`/`prod` environments on first start.

        A key given in `NANGO_SECRET_KEY_<ENV>` is used, and replaces the stored one if it differs
        (that is how an operator rotates a key); otherwise a random UUID v4 is generated once.
        """
        async with self.store.pool.acquire() as conn, conn.transaction():
            await self.store.bootstrap_lock(conn)
            account_id = await self.store.first_account_id(conn)
            if account_id is None:
                account_id = await self.store.insert_account(conn, "default")
            for name in DEFAULT_ENVIRONMENTS:
                wanted = provisioned.get(name)
                row = await self.store.environment_by_name(conn, account_id, name)
                if row is None:
                    key = wanted or str(uuid.uuid4())
                    env_uuid = str(uuid.uuid4())
                    created = await self.store.insert_environment(
                        conn,
                        account_id=account_id,
                        env_uuid=env_uuid,
                        name=name,
                        secret_key_hash=sha256_hex(key),
                        secret_key_sealed=self._seal_key(env_uuid, key),
                        is_production=name == "prod",
                    )
                    for hook in self.creation_hooks:
                        await hook(created.id, conn)
                    log.info("environment created", extra={"environment": name})
                elif wanted and sha256_hex(wanted) != row.secret_key_hash:
                    await self.store.replace_secret_key(
                        conn, row.id, sha256_hex(wanted), self._seal_key(row.uuid, wanted)
                    )
                    log.info("environment secret key replaced from settings", extra={"environment": name})
        return await self.list_with_keys()

    async def list_with_keys(self) -> list[EnvironmentWithKey]:
        out = []
        for row in await self.store.list_environments():
            key = self.keyring.open_text(row.secret_key_sealed, aad=sealing.environment_secret_key(row.uuid))
            register_secret(key)
            out.append(EnvironmentWithKey(Environment.from_row(row), key))
        return out

    async def authenticate(self, secret_key: str) -> Environment:
        """The environment a secret key belongs to, or InvalidSecretKeyFormat / UnknownAccount.

        A key that authenticated is remembered for _CACHE_SECONDS, under the key as presented: a
        repeat call costs one dict lookup instead of a format check and a SHA-256. Only keys that
        matched a stored hash are remembered, so a replaced key stops working within that time."""
        now = time.monotonic()
        cached = self._by_key.get(secret_key)
        if cached is not None and cached[0] > now:
            return cached[1]
        if not UUID_V4.match(secret_key):
            raise InvalidSecretKeyFormat()
        row = await self.store.environment_by_key_hash(sha256_hex(secret_key))
        if row is None:
            raise UnknownAccount()
        environment = Environment.from_row(row)
        if len(self._by_key) >= _CACHE_ENTRIES:
            self._by_key.clear()
        self._by_key[secret_key] = (now + _CACHE_SECONDS, environment)
        return environment

    async def get(self, environment_id: int) -> Environment:
        """An environment by id (cached like key lookups: environments are created, not changed)."""
        cached = self._by_id.get(environment_id)
        if cached is not None:
            return cached
        row = await self.store.environment_by_id(environment_id)
        if row is None:
            raise UnknownAccount()
        environment = Environment.from_row(row)
        self._by_id[environment_id] = environment
        return environment

    async def by_public_key(self, public_key: str) -> Environment | None:
        row = await self.store.environment_by_public_key(public_key)
        return Environment.from_row(row) if row else None

    async def account_created_at(self, account_id: int) -> datetime:
        return await self.store.account_created_at(account_id)

    async def variables(self, environment_id: int) -> list[tuple[str, str]]:
        return [
            (name, self.keyring.open_text(sealed, aad=sealing.environment_variable(environment_id, name)))
            for name, sealed in await self.store.environment_variables(environment_id)
        ]

    async def replace_variables(self, environment_id: int, variables: list[tuple[str, str]]) -> None:
        sealed = [
            (name, self.keyring.seal(value, aad=sealing.environment_variable(environment_id, name)))
            for name, value in variables
        ]
        await self.store.replace_environment_variables(environment_id, sealed)
