"""Record payloads follow a key rotation: re-sealed online, readable with the new key alone after,
and a start with a key that cannot open them is refused."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from nango.config import SettingsError
from nango.crypto import Keyring, generate_key
from nango.db import create_pool, migrate_url
from nango.persist.keys import check_payload_keys, payload_key_ids, reseal_records
from nango.persist.models import BatchContext, RecordQuery, RecordScope
from nango.persist.records import RecordsCache, parse_record_batch
from nango.persist.store import RecordStore

pytestmark = pytest.mark.integration

SCHEMA = f"persist_keys_it_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate_url(database_url, SCHEMA, "nango.persist")
    records_pool = await create_pool(database_url, schema=SCHEMA, application_name="test-persist-keys")
    try:
        yield records_pool
    finally:
        await records_pool.close()


async def test_payloads_are_resealed_and_old_keys_can_go(pool: asyncpg.Pool) -> None:
    old, new = generate_key(), generate_key()
    scope = RecordScope(1, 77, "Contact")
    batch = json.dumps([{"id": f"c-{i}", "email": f"person{i}@secret.example"} for i in range(1200)]).encode()
    await RecordsCache(RecordStore(pool), Keyring.from_encoded(old).payload_sealer()).save(
        scope, parse_record_batch(batch), BatchContext()
    )
    raw = await pool.fetchval("SELECT string_agg(encode(data, 'escape'), '') FROM records WHERE connection_id = 77")
    assert "secret.example" not in raw

    rotated = Keyring.from_encoded(new, [old])
    with pytest.raises(SettingsError, match=Keyring.from_encoded(old).primary_id):
        await check_payload_keys(pool, Keyring.from_encoded(new).payload_sealer())
    resealed, changed, failed = await reseal_records(pool, rotated.payload_sealer(), batch_size=500)
    assert (resealed, changed, failed) == (1200, 0, 0)
    assert await payload_key_ids(pool, sample=None) == {rotated.primary_id}
    assert await reseal_records(pool, rotated.payload_sealer()) == (0, 0, 0)

    only_new = Keyring.from_encoded(new).payload_sealer()
    await check_payload_keys(pool, only_new)
    page = await RecordsCache(RecordStore(pool), only_new).page(scope, RecordQuery(limit=10))
    assert json.loads(page.records_json)[0]["email"].endswith("@secret.example")
