"""SQL for persist's tables (`records`, `records_seen`, `record_counts`, `checkpoints`, `locks`), and nothing else.

Every statement on `records` names both partition keys (connection_id, model), so it is pruned to one
partition. Writers of one (connection, model) serialise on a transaction-scoped advisory lock.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import accumulate
from typing import Any, NamedTuple
from uuid import UUID

import asyncpg

from nango.persist.cursor import Cursor
from nango.persist.models import Checkpoint, RecordAction, RecordCount, RecordQuery, RecordScope


def model_lock_key(connection_id: int, model: str) -> int:
    """The advisory-lock key of one (connection, model): 64 bits of a hash, namespaced."""
    digest = hashlib.blake2b(f"nango-records:{connection_id}:{model}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True, slots=True)
class ExistingRecord:
    external_id: str
    id: UUID
    data_hash: bytes
    size_bytes: int
    updated_at: datetime
    deleted: bool
    pruned: bool
    data: bytes | None = None


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """The rows of an upsert that had one outcome: inserted, undeleted, updated or restored (a pruned
    payload put back)."""

    outcome: str
    count: int
    # change of the payload bytes held
    grown: int
    # capped
    external_ids: list[str]
    # the furthest cursor position among them
    last: Cursor


# a content hash (blake2b-128 of the payload's JSON) is this many bytes
HASH_BYTES = 16


class RecordWrite(NamedTuple):
    external_id: str
    sealed: bytes
    data_hash: bytes
    size_bytes: int


# Plans are made for each execution (~0.3 ms, against ~20 ms for a batch or a page): a generic plan cached
# while a partition was near empty (a first sync, before autovacuum analyses it) would stay until the next
# ANALYZE, scanning a whole model where it should walk an index.
_CUSTOM_PLANS = "set_config('plan_cache_mode', 'force_custom_plan', true)"
# the same for every statement of a pool's connections (persist's own pool): a page is then one round trip
POOL_SETTINGS = {"plan_cache_mode": "force_custom_plan"}
_LOCK = f"SELECT pg_advisory_xact_lock($1), {_CUSTOM_PLANS}"

# The stamp of a write: after the lock (so after the previous writer committed), and never behind the
# newest row even if the clock steps back, so the cursor of a (connection, model) only moves forward.
_NOW = """
SELECT greatest(clock_timestamp(), (SELECT max(updated_at) + interval '1 microsecond'
                                     FROM records WHERE connection_id = $1 AND model = $2))
"""

_EXISTING = """
SELECT external_id, id, data_hash, size_bytes, updated_at, deleted_at IS NOT NULL, pruned_at IS NOT NULL{data}
FROM records
WHERE connection_id = $1 AND model = $2 AND external_id = ANY($3::text[])
"""

# One statement, no lookup first: ON CONFLICT finds rows through the primary key itself, so no plan (and no
# stale statistics) decides how a batch meets its rows. Rows are rewritten only when their content
# changed, or they were deleted (saved again, they start over: created_at = updated_at, read as ADDED) or
# pruned (the payload comes back, the cursor stays). With a merging cursor ($9, $10), rows modified after
# it are left alone. Rows written are summed up per outcome, with up to $12 of their ids. With a
# generation ($11), the batch's ids are appended to records_seen (one row per batch, older generations
# of the model forgotten). Sealed payloads come as one bytea ($6) cut at bounds ($13: where each starts, then
# where the last ends), and content hashes as one bytea ($7) of HASH_BYTES each: an array of a thousand bytea
# (or ints) costs the client far more to encode than one value (asyncpg checks every element's type).
_UPSERT = f"""
WITH forget AS (
    DELETE FROM records_seen
    WHERE $11::bigint IS NOT NULL AND connection_id = $1 AND model = $2 AND generation < $11::bigint
), seen AS (
    INSERT INTO records_seen (connection_id, model, generation, external_ids)
    SELECT $1, $2, $11::bigint, $5::text[] WHERE $11::bigint IS NOT NULL
), written AS (
INSERT INTO records AS r (connection_id, model, external_id, data, data_hash, size_bytes, previous_size, created_at,
                          updated_at, sync_id)
SELECT $1, $2, t.external_id,
       substring($6::bytea FROM ($13::int4[])[t.n] + 1 FOR ($13::int4[])[t.n + 1] - ($13::int4[])[t.n]),
       substring($7::bytea FROM (t.n::int4 - 1) * {HASH_BYTES} + 1 FOR {HASH_BYTES}), t.size_bytes, NULL, $3, $3, $4
FROM unnest($5::text[], $8::int4[]) WITH ORDINALITY AS t(external_id, size_bytes, n)
ON CONFLICT (connection_id, model, external_id) DO UPDATE SET
    data = EXCLUDED.data,
    data_hash = EXCLUDED.data_hash,
    size_bytes = EXCLUDED.size_bytes,
    previous_size = r.size_bytes,
    created_at = CASE WHEN r.deleted_at IS NOT NULL THEN EXCLUDED.created_at ELSE r.created_at END,
    updated_at = CASE WHEN r.deleted_at IS NOT NULL OR r.data_hash <> EXCLUDED.data_hash
                      THEN EXCLUDED.updated_at ELSE r.updated_at END,
    deleted_at = NULL,
    pruned_at = NULL,
    sync_id = coalesce(EXCLUDED.sync_id, r.sync_id)
WHERE (r.data_hash <> EXCLUDED.data_hash OR r.deleted_at IS NOT NULL OR r.pruned_at IS NOT NULL)
  AND ($9::timestamptz IS NULL OR (r.updated_at, r.id) <= ($9::timestamptz, $10::uuid))
RETURNING external_id, id, updated_at, size_bytes - coalesce(previous_size, 0) AS grown,
    CASE WHEN previous_size IS NULL THEN 'inserted'
         WHEN updated_at <> $3 THEN 'restored'
         WHEN created_at = $3 THEN 'undeleted'
         ELSE 'updated' END AS outcome
)
-- one row per outcome rather than per record: a batch's answer stays small to decode
SELECT outcome, count(*), sum(grown), (array_agg(external_id))[1:$12], max(updated_at),
       (array_agg(id ORDER BY updated_at DESC, id DESC))[1]
FROM written GROUP BY outcome
"""

_SOFT_DELETE = """
UPDATE records AS r SET deleted_at = coalesce(t.deleted_at, $3), updated_at = $3
FROM unnest($4::text[], $5::timestamptz[]) AS t(external_id, deleted_at)
WHERE r.connection_id = $1 AND r.model = $2 AND r.external_id = t.external_id AND r.deleted_at IS NULL
RETURNING r.updated_at, r.id
"""

_NEWER_GENERATION = """
SELECT EXISTS (SELECT 1 FROM records_seen WHERE connection_id = $1 AND model = $2 AND generation > $3)
"""

_DELETE_UNSEEN = """
WITH seen AS (
    SELECT DISTINCT unnest(external_ids) AS external_id FROM records_seen
    WHERE connection_id = $1 AND model = $2 AND generation >= $3
), gone AS (
    UPDATE records AS r SET deleted_at = $4, updated_at = $4
    WHERE r.connection_id = $1 AND r.model = $2 AND r.deleted_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM seen WHERE seen.external_id = r.external_id)
    RETURNING r.external_id
)
SELECT (SELECT count(*) FROM gone), ARRAY(SELECT external_id FROM gone LIMIT $5)
"""

_OPEN_RECONCILE = """
INSERT INTO reconcile_passes AS p (connection_id, model, pass_id, started_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (connection_id, model) DO UPDATE SET pass_id = EXCLUDED.pass_id, started_at = EXCLUDED.started_at
WHERE p.pass_id <> EXCLUDED.pass_id
RETURNING started_at
"""

_RECONCILE_STARTED_AT = (
    "SELECT started_at FROM reconcile_passes WHERE connection_id = $1 AND model = $2 AND pass_id = $3"
)

_FORGET_OTHER_RECONCILES = "DELETE FROM reconcile_seen WHERE connection_id = $1 AND model = $2 AND pass_id <> $3"

_MARK_SEEN = """
INSERT INTO reconcile_seen (connection_id, model, pass_id, external_ids)
SELECT $1, $2, $3, $4::text[]
WHERE EXISTS (SELECT 1 FROM reconcile_passes WHERE connection_id = $1 AND model = $2 AND pass_id = $3)
"""

# Live records neither seen by the pass nor written since it started; nothing when it saw no id at all
# (an empty listing is far likelier an upstream outage than every record gone).
_DELETE_UNRECONCILED = """
WITH seen AS (
    SELECT DISTINCT unnest(external_ids) AS external_id FROM reconcile_seen
    WHERE connection_id = $1 AND model = $2 AND pass_id = $3
), gone AS (
    UPDATE records AS r SET deleted_at = $5, updated_at = $5
    WHERE r.connection_id = $1 AND r.model = $2 AND r.deleted_at IS NULL AND r.updated_at < $4
      AND EXISTS (SELECT 1 FROM seen)
      AND NOT EXISTS (SELECT 1 FROM seen WHERE seen.external_id = r.external_id)
    RETURNING r.external_id
)
SELECT (SELECT count(*) FROM seen), (SELECT count(*) FROM gone), ARRAY(SELECT external_id FROM gone LIMIT $6)
"""

_FORGET_RECONCILE = [
    "DELETE FROM reconcile_seen WHERE connection_id = $1 AND model = $2",
    "DELETE FROM reconcile_passes WHERE connection_id = $1 AND model = $2",
]

_PRUNE_CANDIDATES = """
SELECT external_id, size_bytes FROM records
WHERE connection_id = $1 AND model = $2 AND pruned_at IS NULL AND (updated_at, id) <= ($3, $4)
ORDER BY updated_at, id
LIMIT $5
"""

_PRUNE = """
UPDATE records SET data = NULL, pruned_at = $3, size_bytes = 0
WHERE connection_id = $1 AND model = $2 AND external_id = ANY($4::text[])
"""

_ADD_COUNTS = """
INSERT INTO record_counts AS c (connection_id, model, environment_id, count, size_bytes)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (connection_id, model) DO UPDATE SET
    count = c.count + EXCLUDED.count, size_bytes = c.size_bytes + EXCLUDED.size_bytes, updated_at = now()
"""

_FORGET_SEEN = "DELETE FROM records_seen WHERE connection_id = $1 AND model = $2"

_CLEAR_STEP = """
WITH doomed AS (
    SELECT external_id FROM records WHERE connection_id = $1 AND model = $2 LIMIT $3
), gone AS (
    DELETE FROM records AS r USING doomed AS d
    WHERE r.connection_id = $1 AND r.model = $2 AND r.external_id = d.external_id
    RETURNING r.size_bytes
)
SELECT count(*), coalesce(sum(size_bytes), 0) FROM gone
"""

_PAGE_COLUMNS = "external_id, id, data, created_at, updated_at, deleted_at, pruned_at"
# Every row of a page has these two: as integers they cost a tenth of a datetime to decode (and a page's
# rows share a few values, formatted once). Exact: extract() is numeric with microseconds.
_EPOCH_US = "(extract(epoch FROM {}) * 1000000)::int8"

_ACTION_FILTERS = {
    RecordAction.ADDED: "(deleted_at IS NULL AND created_at = updated_at)",
    RecordAction.UPDATED: "(deleted_at IS NULL AND created_at <> updated_at)",
    RecordAction.DELETED: "(deleted_at IS NOT NULL)",
}


class LockedModel:
    """One (connection, model) inside a transaction holding its advisory lock; `now` stamps its writes."""

    def __init__(self, conn: asyncpg.Connection, scope: RecordScope, now: datetime) -> None:
        self._conn = conn
        self._keys = (scope.connection_id, scope.model)
        self.now = now

    async def existing(self, external_ids: Sequence[str], *, with_data: bool = False) -> dict[str, ExistingRecord]:
        """The rows of these ids (update and delete; a save needs no lookup)."""
        if not external_ids:
            return {}
        sql = _EXISTING.format(data=", data" if with_data else "")
        rows = await self._conn.fetch(sql, *self._keys, list(external_ids))
        return {row[0]: ExistingRecord(*row) for row in rows}

    async def upsert(
        self,
        writes: Sequence[RecordWrite],
        *,
        sync_id: str | None,
        unless_modified_after: Cursor | None = None,
        generation: int | None = None,
        keys_cap: int = 1000,
    ) -> dict[str, WriteOutcome]:
        """Write sealed payloads whose content differs (or whose row was deleted or pruned); returns the
        rows written. With a generation, every id of `writes` is recorded as seen by it."""
        if not writes:
            return {}
        hashes = b"".join([w.data_hash for w in writes])
        if len(hashes) != HASH_BYTES * len(writes):
            raise ValueError(f"content hashes are {HASH_BYTES} bytes")
        rows = await self._conn.fetch(
            _UPSERT,
            *self._keys,
            self.now,
            sync_id,
            [w.external_id for w in writes],
            b"".join([w.sealed for w in writes]),
            hashes,
            [w.size_bytes for w in writes],
            None if unless_modified_after is None else unless_modified_after.updated_at,
            None if unless_modified_after is None else unless_modified_after.record_id,
            generation,
            keys_cap,
            [0, *accumulate([len(w.sealed) for w in writes])],
        )
        return {row[0]: WriteOutcome(row[0], row[1], row[2], row[3], Cursor(row[4], row[5])) for row in rows}

    async def soft_delete(self, deleted_at: Mapping[str, datetime | None]) -> list[Cursor]:
        if not deleted_at:
            return []
        rows = await self._conn.fetch(_SOFT_DELETE, *self._keys, self.now, list(deleted_at), list(deleted_at.values()))
        return [Cursor(row[0], row[1]) for row in rows]

    async def delete_unseen(self, generation: int, keys_cap: int) -> tuple[int, list[str]]:
        """Soft-delete live records no batch of `generation` or later carried; nothing when a newer
        generation has started (that run's own track-deletes will decide)."""
        if await self._conn.fetchval(_NEWER_GENERATION, *self._keys, generation):
            return 0, []
        row = await self._conn.fetchrow(_DELETE_UNSEEN, *self._keys, generation, self.now, keys_cap)
        assert row is not None
        return int(row[0]), list(row[1])

    async def start_reconcile(self, pass_id: str) -> datetime:
        """Open a pass named `pass_id` (replacing another open one); when it started. Opening the open
        pass again changes nothing."""
        started_at = await self._conn.fetchval(_OPEN_RECONCILE, *self._keys, pass_id, self.now)
        if started_at is None:
            started_at = await self._conn.fetchval(_RECONCILE_STARTED_AT, *self._keys, pass_id)
        await self._conn.execute(_FORGET_OTHER_RECONCILES, *self._keys, pass_id)
        assert isinstance(started_at, datetime)
        return started_at

    async def finish_reconcile(self, pass_id: str, keys_cap: int) -> tuple[int, int, list[str]] | None:
        """Close the pass: (ids seen, records deleted, capped keys), or None when it is not the open one."""
        started_at = await self._conn.fetchval(_RECONCILE_STARTED_AT, *self._keys, pass_id)
        if started_at is None:
            return None
        row = await self._conn.fetchrow(_DELETE_UNRECONCILED, *self._keys, pass_id, started_at, self.now, keys_cap)
        assert row is not None
        for sql in _FORGET_RECONCILE:
            await self._conn.execute(sql, *self._keys)
        return int(row[0]), int(row[1]), list(row[2])

    async def prune(self, until: Cursor, limit: int) -> tuple[int, bool, int]:
        """(records pruned, whether more remain up to `until`, payload bytes freed)."""
        rows = await self._conn.fetch(_PRUNE_CANDIDATES, *self._keys, until.updated_at, until.record_id, limit + 1)
        chosen = rows[:limit]
        if chosen:
            await self._conn.execute(_PRUNE, *self._keys, self.now, [row[0] for row in chosen])
        return len(chosen), len(rows) > limit, sum(row[1] for row in chosen)

    async def clear_step(self, limit: int) -> tuple[int, int]:
        """Hard-delete up to `limit` rows: (rows deleted, payload bytes freed)."""
        row = await self._conn.fetchrow(_CLEAR_STEP, *self._keys, limit)
        assert row is not None
        if row[0] < limit:
            for sql in (_FORGET_SEEN, *_FORGET_RECONCILE):
                await self._conn.execute(sql, *self._keys)
        return int(row[0]), int(row[1])

    async def add_counts(self, environment_id: int, count: int, size_bytes: int) -> None:
        if count or size_bytes:
            await self._conn.execute(_ADD_COUNTS, *self._keys, environment_id, count, size_bytes)


class RecordStore:
    def __init__(self, pool: asyncpg.Pool, *, custom_plans: bool = False) -> None:
        """`custom_plans`: the pool's connections were made with POOL_SETTINGS (else each read sets it)."""
        self._pool = pool
        self._custom_plans = custom_plans

    @asynccontextmanager
    async def locked(self, scope: RecordScope) -> AsyncIterator[LockedModel]:
        """A transaction holding the (connection, model) lock: writes inside commit together or not at all."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_LOCK, model_lock_key(scope.connection_id, scope.model))
            now = await conn.fetchval(_NOW, scope.connection_id, scope.model)
            yield LockedModel(conn, scope, now)

    async def page(
        self, scope: RecordScope, query: RecordQuery, after: Cursor | None, byte_budget: int
    ) -> tuple[list[Any], bool]:
        """Up to `query.limit` rows in cursor order, and whether more follow. Rows stop early once the
        payloads before a row reach `byte_budget` (the first row always comes): a page of large records
        stays within what one answer may carry, and the payloads left out are never read. A row is
        (external_id, id, data, created_at, updated_at, deleted_at, pruned_at, within the budget), with
        created_at and updated_at in microseconds since the Unix epoch."""
        args: list[Any] = [scope.connection_id, scope.model]
        where = ["connection_id = $1", "model = $2"]
        if after is not None:
            args += [after.updated_at, after.record_id]
            where.append(f"(updated_at, id) > (${len(args) - 1}, ${len(args)})")
        if query.modified_after is not None:
            args.append(query.modified_after)
            where.append(f"updated_at >= ${len(args)}")
        if query.external_ids:
            args.append(list(query.external_ids))
            where.append(f"external_id = ANY(${len(args)}::text[])")
        if query.actions and set(query.actions) != set(RecordAction):
            where.append("(" + " OR ".join(_ACTION_FILTERS[a] for a in RecordAction if a in query.actions) + ")")
        args += [query.limit + 1, byte_budget]
        # One row more than asked tells whether another page follows; the window runs over those rows only,
        # as a running sum that streams (no count over the whole page). Rows past the budget come without
        # their payload, which is then never read from its TOAST table.
        sql = (
            f"SELECT external_id, id, CASE WHEN before < ${len(args)} THEN data END, "
            f"{_EPOCH_US.format('created_at')}, {_EPOCH_US.format('updated_at')}, deleted_at, pruned_at, "
            f"before < ${len(args)} FROM ("
            f"SELECT *, sum(size_bytes) OVER (ORDER BY updated_at, id ROWS UNBOUNDED PRECEDING) - size_bytes "
            f"AS before FROM ("
            f"SELECT {_PAGE_COLUMNS}, size_bytes FROM records WHERE {' AND '.join(where)} "
            f"ORDER BY updated_at, id LIMIT ${len(args) - 1}) AS candidates) AS budgeted ORDER BY updated_at, id"
        )
        rows: list[Any]
        if self._custom_plans:
            # one statement sees one snapshot: no transaction needed
            rows = await self._pool.fetch(sql, *args)
        else:
            async with self._pool.acquire() as conn, conn.transaction(readonly=True):
                await conn.execute(f"SELECT {_CUSTOM_PLANS}")
                rows = await conn.fetch(sql, *args)
        kept = min(len(rows), query.limit)
        if kept and not rows[kept - 1][7]:
            # the first row is always within; the running sum only grows
            kept = next(index for index in range(1, kept) if not rows[index][7])
        return rows[:kept], len(rows) > kept

    async def mark_seen(self, scope: RecordScope, pass_id: str, external_ids: Sequence[str]) -> bool:
        """Append ids to an open pass (no lock: a pass only grows); False when the pass is not open."""
        async with self._pool.acquire() as conn:
            status: str = await conn.execute(_MARK_SEEN, scope.connection_id, scope.model, pass_id, list(external_ids))
        return status.split()[-1] == "1"

    async def cursor_at(self, scope: RecordScope, *, last: bool) -> tuple[datetime, UUID] | None:
        order = "DESC" if last else "ASC"
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT updated_at, id FROM records WHERE connection_id = $1 AND model = $2 "
                f"ORDER BY updated_at {order}, id {order} LIMIT 1",
                scope.connection_id,
                scope.model,
            )
        return None if row is None else (row[0], row[1])

    async def claim_for_pruning(self, recheck_after: timedelta, limit: int) -> list[RecordScope]:
        """Models holding payloads that no replica looked at for `recheck_after`, claimed for this one."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "UPDATE record_counts SET pruning_checked_at = now() WHERE (connection_id, model) IN ("
                "SELECT connection_id, model FROM record_counts WHERE size_bytes > 0 "
                "AND (pruning_checked_at IS NULL OR pruning_checked_at < now() - $1::interval) "
                "ORDER BY pruning_checked_at NULLS FIRST LIMIT $2 FOR UPDATE SKIP LOCKED) "
                "RETURNING environment_id, connection_id, model",
                recheck_after,
                limit,
            )
        return [RecordScope(row[0], row[1], row[2]) for row in rows]

    async def unclaim_for_pruning(self, scope: RecordScope) -> None:
        """Due again at the next sweep: its pruning stopped at the step limit."""
        async with self._pool.acquire() as conn:
            await conn.execute(
                "UPDATE record_counts SET pruning_checked_at = NULL WHERE connection_id = $1 AND model = $2",
                scope.connection_id,
                scope.model,
            )

    async def models_of(self, environment_id: int, connection_id: int) -> list[str]:
        """The models holding records for a connection (every write keeps `record_counts` in step)."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT model FROM record_counts WHERE environment_id = $1 AND connection_id = $2 ORDER BY model",
                environment_id,
                connection_id,
            )
        return [row[0] for row in rows]

    async def drop_empty_counts(self, connection_id: int, models: Sequence[str]) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                "DELETE FROM record_counts WHERE connection_id = $1 AND model = ANY($2::text[]) AND count = 0",
                connection_id,
                list(models),
            )

    async def any_left(self, connection_id: int, models: Sequence[str]) -> bool:
        async with self._pool.acquire() as conn:
            for model in models:
                if await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM records WHERE connection_id = $1 AND model = $2)",
                    connection_id,
                    model,
                ):
                    return True
        return False

    async def counts(
        self, environment_id: int, connection_ids: Sequence[int], models: Sequence[str]
    ) -> list[RecordCount]:
        args: list[Any] = [environment_id]
        where = ["environment_id = $1"]
        if connection_ids:
            args.append(list(connection_ids))
            where.append(f"connection_id = ANY(${len(args)}::bigint[])")
        if models:
            args.append(list(models))
            where.append(f"model = ANY(${len(args)}::text[])")
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT connection_id, model, count, size_bytes FROM record_counts WHERE {' AND '.join(where)} "
                "ORDER BY connection_id, model",
                *args,
            )
        return [RecordCount(row[0], row[1], row[2], row[3]) for row in rows]


_CHECKPOINT_COLUMNS = "checkpoint::text, version, deleted_at"


def _checkpoint(row: Any) -> Checkpoint | None:
    return None if row is None else Checkpoint(json.loads(row[0]), int(row[1]), row[2])


class CheckpointStore:
    """Checkpoints under optimistic concurrency: a write names the version it read, and loses if it moved."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, environment_id: int, connection_id: int, key: str) -> Checkpoint | None:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints "
                "WHERE connection_id = $1 AND key = $2 AND environment_id = $3",
                connection_id,
                key,
                environment_id,
            )
        return _checkpoint(row)

    async def put(
        self, environment_id: int, connection_id: int, key: str, checkpoint_json: str, expected_version: int
    ) -> Checkpoint | None:
        """The new checkpoint, or None when `expected_version` is not the stored one (0: none stored)."""
        async with self._pool.acquire() as conn:
            if expected_version == 0:
                row = await conn.fetchrow(
                    "INSERT INTO checkpoints (connection_id, key, environment_id, checkpoint, version) "
                    "VALUES ($1, $2, $3, $4::jsonb, 1) ON CONFLICT (connection_id, key) DO NOTHING "
                    f"RETURNING {_CHECKPOINT_COLUMNS}",
                    connection_id,
                    key,
                    environment_id,
                    checkpoint_json,
                )
            else:
                row = await conn.fetchrow(
                    "UPDATE checkpoints SET checkpoint = $4::jsonb, version = version + 1, deleted_at = NULL, "
                    "updated_at = now() "
                    "WHERE connection_id = $1 AND key = $2 AND environment_id = $3 AND version = $5 "
                    f"RETURNING {_CHECKPOINT_COLUMNS}",
                    connection_id,
                    key,
                    environment_id,
                    checkpoint_json,
                    expected_version,
                )
        return _checkpoint(row)

    async def delete(
        self, environment_id: int, connection_id: int, key: str, expected_version: int
    ) -> Checkpoint | None:
        """Soft-delete (the version moves on); None when the live checkpoint is not at `expected_version`."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "UPDATE checkpoints SET deleted_at = now(), version = version + 1, updated_at = now() "
                "WHERE connection_id = $1 AND key = $2 AND environment_id = $3 AND version = $4 "
                f"AND deleted_at IS NULL RETURNING {_CHECKPOINT_COLUMNS}",
                connection_id,
                key,
                environment_id,
                expected_version,
            )
        return _checkpoint(row)


class LockStore:
    """Named locks with a time to live; an expired lock is free for anyone to take."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def try_acquire(self, environment_id: int, owner: str, key: str, ttl: timedelta) -> bool:
        """Take the lock if free or expired; its owner taking it again extends it."""
        async with self._pool.acquire() as conn:
            acquired = await conn.fetchval(
                "INSERT INTO locks AS l (environment_id, key, owner, expires_at) "
                "VALUES ($1, $2, $3, clock_timestamp() + $4::interval) "
                "ON CONFLICT (environment_id, key) DO UPDATE SET owner = EXCLUDED.owner, "
                "expires_at = EXCLUDED.expires_at, acquired_at = now() "
                "WHERE l.expires_at <= clock_timestamp() OR l.owner = EXCLUDED.owner "
                "RETURNING true",
                environment_id,
                key,
                owner,
                ttl,
            )
        return bool(acquired)

    async def release(self, environment_id: int, owner: str, key: str) -> bool:
        async with self._pool.acquire() as conn:
            released = await conn.fetchval(
                "DELETE FROM locks WHERE environment_id = $1 AND key = $2 AND owner = $3 RETURNING true",
                environment_id,
                key,
                owner,
            )
        return bool(released)

    async def release_all(self, environment_id: int, owner: str) -> int:
        async with self._pool.acquire() as conn:
            status: str = await conn.execute(
                "DELETE FROM locks WHERE environment_id = $1 AND owner = $2", environment_id, owner
            )
        return int(status.split()[-1])

    async def delete_expired(self, limit: int) -> int:
        """Forget up to `limit` expired locks (they would be taken over anyway; this keeps the table small)."""
        async with self._pool.acquire() as conn:
            status: str = await conn.execute(
                "DELETE FROM locks WHERE ctid = ANY(ARRAY("
                "SELECT ctid FROM locks WHERE expires_at <= clock_timestamp() LIMIT $1 FOR UPDATE SKIP LOCKED))",
                limit,
            )
        return int(status.split()[-1])


__all__ = [
    "HASH_BYTES",
    "CheckpointStore",
    "ExistingRecord",
    "LockStore",
    "LockedModel",
    "RecordStore",
    "RecordWrite",
    "WriteOutcome",
    "model_lock_key",
]
