"""`nango keys generate | rotate`: encryption keys of stored data."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from pydantic import Field

from nango.config import DatabaseSettings, EncryptionSettings, SettingsError, load
from nango.crypto import Keyring, generate_key
from nango.db import create_pool
from nango.errors import NangoError


class KeysSettings(DatabaseSettings, EncryptionSettings):
    data_dir: Path = Field(Path("~/.nango"), validation_alias="NANGO_DATA_DIR")
    mode: Literal["development", "production"] = Field("development", validation_alias="NANGO_ENV")


def generate() -> int:
    print(generate_key())
    return 0


async def rotate(batch_size: int) -> int:
    from nango.server.keys import rotate as rotate_rows

    try:
        settings = load(KeysSettings)
        keyring, _ = settings.keyring(mode=settings.mode, data_dir=settings.data_dir.expanduser().resolve())
    except SettingsError as exc:
        print(f"nango keys rotate: {exc}", file=sys.stderr)
        return 2
    try:
        pool = await create_pool(
            settings.main_database_url(), schema=settings.db_schema, application_name="nango-keys-rotate", max_size=2
        )
    except NangoError as exc:
        print(f"nango keys rotate: {exc.message}", file=sys.stderr)
        return 1
    try:
        print(f"re-sealing with key {keyring.primary_id} (batches of {batch_size}) ...")
        report = await rotate_rows(pool, keyring, batch_size=batch_size)
    finally:
        await pool.close()
    for column, count in report.resealed.items():
        line = f"  {column:<40} {count} re-sealed"
        if report.skipped_changed[column]:
            line += f", {report.skipped_changed[column]} changed meanwhile (already sealed with the new key)"
        if report.failed[column]:
            line += f", {report.failed[column]} could not be opened with any configured key"
        print(line)
    resealed, changed, records_failed = await _rotate_records(keyring)
    line = f"  {'records (payloads)':<40} {resealed} re-sealed"
    if changed:
        line += f", {changed} changed meanwhile (already sealed with the new key)"
    if records_failed:
        line += f", {records_failed} could not be opened with any configured key"
    print(line)
    failed = sum(report.failed.values()) + records_failed
    print(f"done: {report.total + resealed} values re-sealed" + (f", {failed} FAILED" if failed else ""))
    return 1 if failed else 0


async def _rotate_records(keyring: Keyring) -> tuple[int, int, int]:
    """Record payloads live in persist's schema (and maybe its own database, RECORDS_DATABASE_URL)."""
    from nango.persist.keys import reseal_records
    from nango.persist.settings import RecordsDatabaseSettings

    records = load(RecordsDatabaseSettings)
    pool = await create_pool(
        records.database(), schema=records.records_schema, application_name="nango-keys-rotate", max_size=2
    )
    try:
        exists = await pool.fetchval("SELECT to_regclass('records') IS NOT NULL")
        if not exists:
            return 0, 0, 0
        return await reseal_records(pool, keyring.payload_sealer())
    finally:
        await pool.close()
