"""Encryption keys of stored data: checking them at start, re-sealing rows after a rotation.

Rotating: set the new key as NANGO_ENCRYPTION_KEY and the old one in NANGO_ENCRYPTION_PREVIOUS_KEYS,
restart the services (they read both and seal with the new one), then run `nango keys rotate`:
it re-seals every row still sealed with an old key, in small batches, each row updated only if
it did not change meanwhile, so it runs while the platform serves traffic. When it reports
nothing left, the old key can be removed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from nango.config import SettingsError
from nango.crypto import DecryptionFailed, Keyring
from nango.server.sealing import SEALED_COLUMNS, SealedColumn

log = logging.getLogger(__name__)

# rows sampled per column when checking keys at start (newest first)
_SAMPLE = 1000


async def key_ids_in_use(pool: asyncpg.Pool, *, sample: int | None = _SAMPLE) -> dict[str, set[str]]:
    """Key ids found in each sealed column (`table.column` -> ids), on the newest rows only when `sample`."""
    found: dict[str, set[str]] = {}
    for col in SEALED_COLUMNS:
        order = ", ".join(f"{k} DESC" for k in col.key)
        limit = f"ORDER BY {order} LIMIT {int(sample)}" if sample else ""
        rows = await pool.fetch(
            f"""SELECT DISTINCT split_part({col.column}, '.', 2) AS kid
                FROM (SELECT {col.column} FROM {col.table} WHERE {col.column} IS NOT NULL {limit}) s"""
        )
        found[f"{col.table}.{col.column}"] = {r["kid"] for r in rows}
    return found


async def check_keys(pool: asyncpg.Pool, keyring: Keyring) -> None:
    """Refuse to start when stored data was sealed with a key the settings do not provide."""
    missing: dict[str, set[str]] = {}
    for where, ids in (await key_ids_in_use(pool)).items():
        unknown = ids - set(keyring.key_ids)
        if unknown:
            missing[where] = unknown
    if missing:
        key_ids = sorted({kid for kids in missing.values() for kid in kids})
        raise SettingsError(
            f"invalid setting NANGO_ENCRYPTION_KEY: stored data ({', '.join(sorted(missing))}) was encrypted with "
            f"key id(s) {', '.join(key_ids)}, which is neither NANGO_ENCRYPTION_KEY (key id {keyring.primary_id}) nor "
            "one of NANGO_ENCRYPTION_PREVIOUS_KEYS"
        )


@dataclass
class RotationReport:
    resealed: dict[str, int]
    skipped_changed: dict[str, int]
    failed: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.resealed.values())


async def rotate(
    pool: asyncpg.Pool,
    keyring: Keyring,
    *,
    batch_size: int = 500,
    progress: Callable[[str, int], None] | None = None,
) -> RotationReport:
    """Re-seal every value not sealed with the primary key."""
    report = RotationReport({}, {}, {})
    for col in SEALED_COLUMNS:
        name = f"{col.table}.{col.column}"
        resealed, changed, failed = await _rotate_column(pool, keyring, col, batch_size, progress)
        report.resealed[name], report.skipped_changed[name], report.failed[name] = resealed, changed, failed
    return report


async def _rotate_column(
    pool: asyncpg.Pool,
    keyring: Keyring,
    col: SealedColumn,
    batch_size: int,
    progress: Callable[[str, int], None] | None,
) -> tuple[int, int, int]:
    keys = ", ".join(col.key)
    selected = ", ".join(dict.fromkeys([*col.key, *col.reads, col.column]))
    current_prefix = f"v1.{keyring.primary_id}.%"
    after: tuple[Any, ...] | None = None
    resealed = changed = failed = 0
    while True:
        args: list[Any] = [current_prefix, batch_size]
        keyset = ""
        if after is not None:
            placeholders = ", ".join(f"${i + 3}" for i in range(len(after)))
            keyset = f"AND ({keys}) > ({placeholders})"
            args.extend(after)
        rows = await pool.fetch(
            f"""SELECT {selected} FROM {col.table}
                WHERE {col.column} IS NOT NULL AND {col.column} NOT LIKE $1 {keyset}
                ORDER BY {keys} LIMIT $2""",
            *args,
        )
        if not rows:
            return resealed, changed, failed
        after = tuple(rows[-1][k] for k in col.key)
        updates = []
        for row in rows:
            aad = col.aad(row)
            try:
                fresh = keyring.seal(keyring.open(row[col.column], aad=aad), aad=aad)
            except DecryptionFailed:
                failed += 1
                log.warning("a sealed value could not be opened", extra={"table": col.table, "column": col.column})
                continue
            updates.append((*(row[k] for k in col.key), row[col.column], fresh))
        where = " AND ".join(f"{k} = ${i + 1}" for i, k in enumerate(col.key))
        n = len(col.key)
        async with pool.acquire() as conn, conn.transaction():
            for values in updates:
                status = await conn.execute(
                    f"UPDATE {col.table} SET {col.column} = ${n + 2} WHERE {where} AND {col.column} = ${n + 1}",
                    *values,
                )
                if status.endswith(" 1"):
                    resealed += 1
                else:
                    changed += 1
        if progress is not None:
            progress(f"{col.table}.{col.column}", resealed)
