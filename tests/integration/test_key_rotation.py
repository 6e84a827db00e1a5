"""Encryption at rest: nothing secret in clear in the database, keys that rotate under load, and a
start refused when the key for existing data is missing."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from nango.config import SettingsError
from nango.crypto import Keyring, generate_key
from nango.server.keys import key_ids_in_use, rotate
from tests.support.inprocess import new_schema, server_env, start_server

pytestmark = pytest.mark.integration

SECRETS = ["gho_SECRET_access_token_value", "client-secret-VALUE-123", "SG.api-key-SECRET", "refresh-SECRET-rt"]


async def _call(url: str, key: str, method: str = "GET", body: object = None) -> tuple[int, object]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, json=body, headers={"Authorization": f"Bearer {key}"}) as response,
    ):
        return response.status, await response.json()


async def _dev_key(pool: asyncpg.Pool, keyring: Keyring) -> str:
    row = await pool.fetchrow("SELECT uuid, secret_key_sealed FROM environments WHERE name = 'dev'")
    return keyring.open_text(row["secret_key_sealed"], aad=f"environment:{row['uuid']}:secret_key")


async def test_secrets_are_sealed_and_keys_rotate_under_load(database_url: str, tmp_path: Path) -> None:
    schema = new_schema("nango_keys")
    old_key, new_key = generate_key(), generate_key()
    first = await start_server(server_env(database_url, schema, tmp_path, NANGO_ENCRYPTION_KEY=old_key))
    pool = await asyncpg.create_pool(database_url, server_settings={"search_path": schema})
    try:
        dev = await _dev_key(pool, Keyring.from_encoded(old_key))
        status, _ = await _call(
            first.url + "/integrations",
            dev,
            "POST",
            {
                "provider": "github",
                "unique_key": "gh",
                "credentials": {"type": "OAUTH2", "client_id": "cid", "client_secret": SECRETS[1]},
            },
        )
        assert status == 200
        await _call(first.url + "/integrations", dev, "POST", {"provider": "resend", "unique_key": "sg"})
        ids = [f"c{i}" for i in range(30)]
        for connection_id in ids:
            status, _ = await _call(
                first.url + "/connections",
                dev,
                "POST",
                {
                    "provider_config_key": "gh",
                    "connection_id": connection_id,
                    "credentials": {"type": "OAUTH2", "access_token": SECRETS[0], "refresh_token": SECRETS[3]},
                },
            )
            assert status == 201
        await _call(
            first.url + "/connections",
            dev,
            "POST",
            {
                "provider_config_key": "sg",
                "connection_id": "k",
                "credentials": {"type": "API_KEY", "apiKey": SECRETS[2]},
            },
        )
        await _call(first.url + "/connect/sessions", dev, "POST", {"end_user": {"id": "u1"}})
        _, webhook_settings = await _call(first.url + "/environment/webhook-settings", dev)
        signing_key = webhook_settings["signing_key"]  # type: ignore[index]

        # nothing secret in clear, in any table of the control plane
        tables = [
            r["tablename"] for r in await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
        ]
        for table in tables:
            dump = "\n".join(r["t"] for r in await pool.fetch(f"SELECT row_to_json(x)::text AS t FROM {table} x"))
            for secret in [*SECRETS, dev, signing_key]:
                assert secret not in dump, f"{secret} in clear in {table}"
        await first.stop()

        # new key first, old key still readable: a restarted server serves every read while rows are re-sealed
        rotated_env = server_env(
            database_url, schema, tmp_path, NANGO_ENCRYPTION_KEY=new_key, NANGO_ENCRYPTION_PREVIOUS_KEYS=old_key
        )
        second = await start_server(rotated_env)
        both = Keyring.from_encoded(new_key, [old_key])
        statuses: list[int] = []

        async def read_continuously(stop: asyncio.Event) -> None:
            async with aiohttp.ClientSession() as session:
                while not stop.is_set():
                    for connection_id in ids[:5]:
                        async with session.get(
                            f"{second.url}/connections/{connection_id}?provider_config_key=gh",
                            headers={"Authorization": f"Bearer {dev}"},
                        ) as response:
                            statuses.append(response.status)
                            assert (await response.json())["credentials"]["access_token"] == SECRETS[0]

        stop = asyncio.Event()
        readers = [asyncio.create_task(read_continuously(stop)) for _ in range(4)]
        report = await rotate(pool, both, batch_size=7)
        stop.set()
        await asyncio.gather(*readers)
        assert statuses
        assert set(statuses) == {200}
        assert report.total >= 30 + 1 + 1 + 2 + 2
        assert report.resealed["environment_webhook_settings.signing_key_sealed"] == 2
        assert sum(report.failed.values()) == 0
        in_use = await key_ids_in_use(pool, sample=None)
        assert set().union(*in_use.values()) == {both.primary_id}
        await second.stop()

        # only the new key now: everything still opens
        third = await start_server(server_env(database_url, schema, tmp_path, NANGO_ENCRYPTION_KEY=new_key))
        status, body = await _call(f"{third.url}/connections/k?provider_config_key=sg", dev)
        assert (status, body["credentials"]["apiKey"]) == (200, SECRETS[2])  # type: ignore[index]
        status, body = await _call(f"{third.url}/environment/webhook-settings", dev)
        assert (status, body["signing_key"]) == (200, signing_key)  # type: ignore[index]
        await third.stop()

        # the old key alone can no longer open the data: the start is refused, naming the key
        refused = await start_server(
            server_env(database_url, schema, tmp_path, NANGO_ENCRYPTION_KEY=old_key), wait=False
        )
        with pytest.raises(SettingsError, match=both.primary_id):
            await asyncio.wait_for(refused.task, 20)
    finally:
        await pool.close()


def test_rotate_command(database_url: str, tmp_path: Path) -> None:
    schema = new_schema("nango_keys_cli")
    old_key, new_key = generate_key(), generate_key()

    async def seed() -> None:
        server = await start_server(server_env(database_url, schema, tmp_path, NANGO_ENCRYPTION_KEY=old_key))
        await server.stop()

    asyncio.run(seed())
    env = {
        "PATH": "/usr/bin:/bin",
        "NANGO_DATABASE_URL": database_url,
        "NANGO_DB_SCHEMA": schema,
        "NANGO_ENCRYPTION_KEY": new_key,
        "NANGO_ENCRYPTION_PREVIOUS_KEYS": old_key,
    }
    nango = str(Path(sys.executable).parent / "nango")
    done = subprocess.run([nango, "keys", "rotate"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "environments.secret_key_sealed" in done.stdout
    assert "environment_webhook_settings.signing_key_sealed" in done.stdout
    # the two environments' secret keys and webhook signing keys
    assert "done: 4 values re-sealed" in done.stdout
    again = subprocess.run([nango, "keys", "rotate"], env=env, capture_output=True, text=True, timeout=60)
    assert "done: 0 values re-sealed" in again.stdout
    for secret in (old_key, new_key):
        assert secret not in done.stdout + done.stderr
    generated = subprocess.run([nango, "keys", "generate"], capture_output=True, text=True, timeout=30)
    assert len(generated.stdout.strip()) == 44
