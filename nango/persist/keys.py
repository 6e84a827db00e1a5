"""Keys of sealed record payloads: checked at start, re-sealed after a rotation (`nango keys rotate`).

Payloads start with `0x01 | key id`; the AAD is `<connection>/<model>/<external id>`, as the records
cache seals them. A re-seal updates a row only if its payload did not change meanwhile (a newer
write is sealed with the new key already).
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from nango.config import SettingsError
from nango.crypto import DecryptionFailed, PayloadSealer

_SAMPLE = 1000


async def payload_key_ids(pool: asyncpg.Pool, *, sample: int | None = _SAMPLE) -> set[str]:
    """Hex key ids found on sealed payloads (the newest `sample` rows per check, all with None)."""
    limit = f"ORDER BY updated_at DESC LIMIT {int(sample)}" if sample else ""
    rows = await pool.fetch(
        f"""SELECT DISTINCT encode(substring(data FROM 2 FOR 4), 'hex') AS kid
            FROM (SELECT data FROM records WHERE data IS NOT NULL {limit}) s"""
    )
    return {r["kid"] for r in rows}


async def check_payload_keys(pool: asyncpg.Pool, sealer: PayloadSealer) -> None:
    unknown = await payload_key_ids(pool) - sealer.key_ids()
    if unknown:
        raise SettingsError(
            f"invalid setting NANGO_ENCRYPTION_KEY: record payloads were encrypted with key id(s) "
            f"{', '.join(sorted(unknown))}, which is neither NANGO_ENCRYPTION_KEY nor one of "
            "NANGO_ENCRYPTION_PREVIOUS_KEYS"
        )


async def reseal_records(
    pool: asyncpg.Pool,
    sealer: PayloadSealer,
    *,
    batch_size: int = 500,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, int, int]:
    """Re-seal every payload not sealed with the primary key: (resealed, changed meanwhile, failed)."""
    prefix = sealer.primary_prefix()
    after: tuple[int, str, str] | None = None
    resealed = changed = failed = 0
    while True:
        keyset = "AND (connection_id, model, external_id) > ($3, $4, $5)" if after else ""
        rows = await pool.fetch(
            f"""SELECT connection_id, model, external_id, data FROM records
                WHERE data IS NOT NULL AND substring(data FROM 1 FOR 5) <> $1 {keyset}
                ORDER BY connection_id, model, external_id LIMIT $2""",
            prefix,
            batch_size,
            *(after or ()),
        )
        if not rows:
            return resealed, changed, failed
        after = (rows[-1]["connection_id"], rows[-1]["model"], rows[-1]["external_id"])
        async with pool.acquire() as conn, conn.transaction():
            for row in rows:
                aad = f"{row['connection_id']}/{row['model']}/{row['external_id']}".encode()
                try:
                    fresh = sealer.seal(sealer.open(row["data"], aad), aad)
                except DecryptionFailed:
                    failed += 1
                    continue
                status = await conn.execute(
                    """UPDATE records SET data = $5
                       WHERE connection_id = $1 AND model = $2 AND external_id = $3 AND data = $4""",
                    row["connection_id"],
                    row["model"],
                    row["external_id"],
                    row["data"],
                    fresh,
                )
                if status.endswith(" 1"):
                    resealed += 1
                else:
                    changed += 1
        if progress is not None:
            progress(resealed)
