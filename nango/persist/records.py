"""The records cache: batches in, pages out.

Every write to one (connection, model) runs in one transaction holding that model's advisory lock,
and stamps the rows it changes with one timestamp taken after the lock (`LockedModel.now`), so the
`(updated_at, id)` cursor only moves forward. Payloads are hashed on their canonical JSON (change
detection without decrypting) and sealed per record with the platform's keys (`sealing.py`), bound to
their (connection, model, external id) so a sealed payload cannot be moved to another row.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from json.scanner import make_scanner
from typing import Any, NamedTuple
from uuid import UUID

from nango.crypto import PayloadSealer
from nango.errors import InvalidRequest
from nango.persist.cursor import Cursor, decode_cursor, encode_cursor
from nango.persist.errors import ReconcilePassNotOpen
from nango.persist.models import (
    MAX_BATCH_BYTES,
    MAX_RECORD_BYTES,
    MB,
    PAGE_BYTES_BUDGET,
    BatchContext,
    BatchResult,
    ClearResult,
    CursorPosition,
    Merging,
    MergingStrategy,
    OutdatedDeletion,
    PruneResult,
    ReconcileResult,
    RecordCount,
    RecordPage,
    RecordQuery,
    RecordScope,
    RecordSummary,
    validate_model,
)
from nango.persist.store import HASH_BYTES, ExistingRecord, RecordStore, RecordWrite

# Key lists in summaries stop here; counts stay exact.
KEYS_CAP = 1000
MAX_RECORDS_PER_BATCH = 10_000
MAX_EXTERNAL_ID_LENGTH = 255
MAX_PASS_ID_LENGTH = 100
MAX_EXTERNAL_IDS_PER_QUERY = 100
MAX_PAGE_SIZE = 10_000
DEFAULT_PAGE_SIZE = 100
MAX_PRUNE_LIMIT = 100_000
MAX_CLEAR_LIMIT = 100_000
# Nango's PERSIST_HARD_DELETE_LIMIT
DEFAULT_CLEAR_LIMIT = 50_000
DEFAULT_PRUNE_LIMIT = 1000

# Key order is kept (JSON.stringify's), so the hash sees what the function produced.
_CANONICAL = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_METADATA_KEY = "_nango_metadata"
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_BLANKS = frozenset(" \t\n\r")
# a record's time stamp in a page row: a datetime, or microseconds since the Unix epoch (`RecordStore.page`)
Moment = datetime | int
_NOT_JSON = "records must be a JSON array of objects (the batch is not valid JSON)"


def _refuse_constant(name: str) -> Any:
    raise InvalidRequest(f"records must be valid JSON ({name} is not)")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
# the decoder's own scanner, called without `raw_decode`'s wrapping once per record
_SCAN = make_scanner(_DECODER)  # type: ignore[arg-type]


@dataclass(slots=True)
class IncomingRecord:
    """A record of a batch: the object (its `id` made a string) and, when it can be stored as it came,
    its JSON as sent (UTF-8)."""

    record: dict[str, Any]
    text: bytes | None


def _skip_whitespace(text: str, position: int) -> int:
    match = _WHITESPACE.match(text, position)
    return position if match is None else match.end()


def _array_elements(raw: bytes) -> list[tuple[Any, bytes]]:
    """Each element of a JSON array with its own UTF-8 text, parsed in one pass (the texts spare
    re-encoding)."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise InvalidRequest("records must be UTF-8 JSON") from None
    # str positions are byte positions in ASCII: each element's bytes are then sliced, not encoded again
    ascii_only = raw.isascii()
    scan = _SCAN
    position = _skip_whitespace(text, 0)
    if text[position : position + 1] != "[":
        raise InvalidRequest("records must be a JSON array of objects")
    elements: list[tuple[Any, bytes]] = []
    position = _skip_whitespace(text, position + 1)
    if text[position : position + 1] == "]":
        end = position + 1
    else:
        while True:
            if len(elements) == MAX_RECORDS_PER_BATCH:
                raise InvalidRequest(f"a batch holds at most {MAX_RECORDS_PER_BATCH} records")
            try:
                value, end = scan(text, position)
            except (StopIteration, ValueError, RecursionError):
                raise InvalidRequest(_NOT_JSON) from None
            elements.append((value, raw[position:end] if ascii_only else text[position:end].encode()))
            separator = text[end : end + 1]
            if separator == ",":
                position = end + 1
                if text[position : position + 1] in _BLANKS:
                    position = _skip_whitespace(text, position)
                continue
            if separator != "]":
                position = _skip_whitespace(text, end)
                separator = text[position : position + 1]
                if separator == ",":
                    position = _skip_whitespace(text, position + 1)
                    continue
                if separator != "]":
                    raise InvalidRequest(_NOT_JSON)
                end = position
            end += 1
            break
    if text[end:].strip(" \t\n\r"):
        raise InvalidRequest(_NOT_JSON)
    return elements


def parse_record_batch(raw: bytes) -> list[IncomingRecord]:
    """A batch's JSON array of objects, each with a string or number `id`; InvalidRequest otherwise."""
    if len(raw) > MAX_BATCH_BYTES:
        raise InvalidRequest(f"a batch is at most {MAX_BATCH_BYTES // MB} MB of JSON")
    batch = []
    for index, (record, text) in enumerate(_array_elements(raw)):
        if type(record) is not dict:
            raise InvalidRequest(f"records[{index}] must be a JSON object")
        value = record.get("id")
        if type(value) is str and 0 < len(value) <= MAX_EXTERNAL_ID_LENGTH and _METADATA_KEY not in record:
            batch.append(IncomingRecord(record, text))
            continue
        # a number id or a `_nango_metadata` of its own changes the stored payload: re-encoded then
        as_sent = type(value) is str and _METADATA_KEY not in record
        record["id"] = external_id_of(record, index)
        batch.append(IncomingRecord(record, text if as_sent else None))
    return batch


def external_id_of(record: dict[str, Any], index: int) -> str:
    """The record's `id` as the string it is stored under (Nango stringifies numbers too)."""
    value = record.get("id")
    if isinstance(value, str):
        external_id = value
    elif isinstance(value, int) and not isinstance(value, bool):
        external_id = str(value)
    elif isinstance(value, float) and value.is_integer():
        external_id = str(int(value))
    elif isinstance(value, float):
        external_id = repr(value)
    else:
        raise InvalidRequest(f"records[{index}].id must be a non-empty string or a number")
    if not external_id or len(external_id) > MAX_EXTERNAL_ID_LENGTH:
        raise InvalidRequest(f"records[{index}].id must be 1 to {MAX_EXTERNAL_ID_LENGTH} characters long")
    return external_id


class PreparedRecord(NamedTuple):
    external_id: str
    payload: bytes
    data_hash: bytes


def canonical_payload(record: dict[str, Any], index: int) -> bytes:
    """The payload as stored and hashed: compact JSON, `id` a string, no `_nango_metadata` of its own."""
    record.pop(_METADATA_KEY, None)
    try:
        return _CANONICAL.encode(record).encode()
    except UnicodeEncodeError:
        raise InvalidRequest(f"records[{index}] holds a string that is not valid Unicode") from None


def check_record_size(payload: bytes, index: int) -> None:
    if len(payload) > MAX_RECORD_BYTES:
        raise InvalidRequest(
            f"records[{index}] is {len(payload) / MB:.1f} MB of JSON; a record holds at most "
            f"{MAX_RECORD_BYTES // MB} MB"
        )


def check_pass_id(pass_id: str) -> None:
    if not 1 <= len(pass_id) <= MAX_PASS_ID_LENGTH or not pass_id.isascii() or not pass_id.isprintable():
        raise InvalidRequest(f"pass_id must be 1 to {MAX_PASS_ID_LENGTH} printable ASCII characters")


def payload_hash(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=HASH_BYTES).digest()


def prepare(records: Sequence[IncomingRecord]) -> tuple[list[PreparedRecord], list[str]]:
    """Payloads and hashes, first occurrence of each id kept; also the repeated ids. A payload is the
    record's JSON text as sent (PersistClient sends compact JSON, like `canonical_payload`), so a
    producer formatting its JSON differently sees its records change once."""
    prepared: list[PreparedRecord] = []
    seen: set[str] = set()
    repeated: list[str] = []
    blake2b = hashlib.blake2b
    for index, incoming in enumerate(records):
        external_id = incoming.record["id"]
        if external_id in seen:
            repeated.append(external_id)
            continue
        seen.add(external_id)
        payload = canonical_payload(incoming.record, index) if incoming.text is None else incoming.text
        if len(payload) > MAX_RECORD_BYTES:
            check_record_size(payload, index)
        prepared.append(PreparedRecord(external_id, payload, blake2b(payload, digest_size=HASH_BYTES).digest()))
    return prepared, repeated


def unique_by_id(records: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """First occurrence of each id, and the ids that repeat."""
    kept: dict[str, dict[str, Any]] = {}
    repeated: list[str] = []
    for record in records:
        if record["id"] in kept:
            repeated.append(record["id"])
        else:
            kept[record["id"]] = record
    return list(kept.values()), repeated


def parse_deletions(raw: bytes) -> list[tuple[str, datetime | None]]:
    """A delete batch: objects with an `id` and an optional ISO-8601 `deletedAt`."""
    records = parse_record_batch(raw)
    return [(incoming.record["id"], parse_deleted_at(incoming.record, index)) for index, incoming in enumerate(records)]


def parse_deleted_at(record: dict[str, Any], index: int) -> datetime | None:
    value = record.get("deletedAt")
    if value is None:
        return None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return moment
    raise InvalidRequest(f"records[{index}].deletedAt must be an ISO-8601 date-time with a time zone")


class SummaryBuilder:
    """Counts every outcome exactly; keeps at most KEYS_CAP keys per list."""

    def __init__(self, repeated: Iterable[str] = ()) -> None:
        self.added: list[str] = []
        self.updated: list[str] = []
        self.deleted: list[str] = []
        self.counts = {"added": 0, "updated": 0, "deleted": 0, "unchanged": 0}
        self.repeated = list(dict.fromkeys(repeated))

    def _note(self, outcome: str, keys: list[str], external_id: str) -> None:
        self.counts[outcome] += 1
        if len(keys) < KEYS_CAP:
            keys.append(external_id)

    def update(self, external_id: str) -> None:
        self._note("updated", self.updated, external_id)

    def delete(self, external_id: str) -> None:
        self._note("deleted", self.deleted, external_id)

    def add_many(self, external_ids: Sequence[str], count: int) -> None:
        self.counts["added"] += count
        self.added += external_ids[: KEYS_CAP - len(self.added)]

    def update_many(self, external_ids: Sequence[str], count: int) -> None:
        self.counts["updated"] += count
        self.updated += external_ids[: KEYS_CAP - len(self.updated)]

    def unchanged(self, count: int = 1) -> None:
        self.counts["unchanged"] += count

    def build(self) -> RecordSummary:
        return RecordSummary(
            added=self.counts["added"],
            updated=self.counts["updated"],
            deleted=self.counts["deleted"],
            unchanged=self.counts["unchanged"],
            added_keys=tuple(self.added),
            updated_keys=tuple(self.updated),
            deleted_keys=tuple(self.deleted),
            non_unique_keys=tuple(self.repeated[:KEYS_CAP]),
        )


class MergeGuard:
    """`ignore_if_modified_after_cursor`: rows moved past the run's cursor (by someone else) are left
    alone; the next batch gets a cursor that covers what this one wrote."""

    def __init__(self, merging: Merging) -> None:
        self.merging = merging
        self.limit: Cursor | None = None
        if merging.strategy is MergingStrategy.IGNORE_IF_MODIFIED_AFTER_CURSOR and merging.cursor:
            self.limit = decode_cursor(merging.cursor)

    def skips(self, row: ExistingRecord) -> bool:
        return self.limit is not None and Cursor(row.updated_at, row.id) > self.limit

    def next(self, written: Sequence[Cursor]) -> Merging:
        """The merging for the next batch: its cursor is past every row this batch wrote."""
        if self.merging.strategy is MergingStrategy.OVERRIDE:
            return Merging(MergingStrategy.OVERRIDE)
        if not written:
            return self.merging
        last = max(written)
        if self.limit is not None and last < self.limit:
            return self.merging
        return Merging(self.merging.strategy, encode_cursor(last.updated_at, last.record_id))


_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def moment_from_epoch_us(microseconds: int) -> datetime:
    return _UNIX_EPOCH + timedelta(microseconds=microseconds)


class PageWriter:
    """Records as the public API shows them: payload plus `_nango_metadata`. This is the read hot path:
    payloads are spliced as bytes, never parsed, and the metadata before the cursor is built once per
    distinct set of timestamps (a batch's records share theirs, and pages come in timestamp order, so
    a row is matched against the previous one by equality before any hashing)."""

    def __init__(self, sealer: PayloadSealer, aad_prefix: bytes) -> None:
        self._open = sealer.open
        self._prefix = aad_prefix
        self._iso: dict[Moment, str] = {}
        # (created, updated, deleted, pruned) -> (metadata up to the cursor's value, cursor text up to the id)
        self._heads: dict[tuple[Moment, Moment, Moment | None, Moment | None], tuple[bytes, bytes]] = {}
        self._last_key: tuple[Moment, Moment, Moment | None, Moment | None] | None = None
        self._last_head = (b"", b"")

    def _format(self, moment: Moment) -> str:
        text = self._iso.get(moment)
        if text is None:
            as_datetime = moment_from_epoch_us(moment) if isinstance(moment, int) else moment
            text = self._iso[moment] = as_datetime.isoformat(timespec="microseconds")
        return text

    def _head(
        self, created_at: Moment, updated_at: Moment, deleted_at: Moment | None, pruned_at: Moment | None
    ) -> tuple[bytes, bytes]:
        key = (created_at, updated_at, deleted_at, pruned_at)
        if key == self._last_key:
            return self._last_head
        found = self._heads.get(key)
        if found is None:
            found = self._heads[key] = self._build_head(created_at, updated_at, deleted_at, pruned_at)
        self._last_key, self._last_head = key, found
        return found

    def _build_head(
        self, created_at: Moment, updated_at: Moment, deleted_at: Moment | None, pruned_at: Moment | None
    ) -> tuple[bytes, bytes]:
        modified = self._format(updated_at)
        if deleted_at is not None:
            action = "DELETED"
        elif created_at == updated_at:
            action = "ADDED"
        else:
            action = "UPDATED"
        deleted = "null" if deleted_at is None else f'"{self._format(deleted_at)}"'
        pruned = "null" if pruned_at is None else f'"{self._format(pruned_at)}"'
        # spliced after the payload's last value, or after the id of a pruned record
        metadata = (
            f',"_nango_metadata":{{"first_seen_at":"{self._format(created_at)}","last_modified_at":"{modified}",'
            f'"last_action":"{action}","deleted_at":{deleted},"pruned_at":{pruned},"cursor":"'
        ).encode()
        return metadata, f"{modified}||".encode()

    def _write(self, row: Sequence[Any], out: list[bytes | memoryview]) -> None:
        # rows are (external_id, id, data, created_at, updated_at, deleted_at, pruned_at[, ...]), read by
        # position (a page's rows carry more columns); a moment is a datetime or microseconds since the epoch
        external_id, data = row[0], row[2]
        metadata, cursor_head = self._head(row[3], row[4], row[5], row[6])
        if data is None:
            out.append(b'{"id":' + json.dumps(external_id, ensure_ascii=False).encode())
        else:
            # a stored payload is a JSON object holding at least "id", so it ends with "}" after a value;
            # the payload, its metadata and the cursor are one piece (one copy here, one in the page's join)
            payload = self._open(data, self._prefix + external_id.encode())
            out.append(memoryview(payload)[:-1])
        out.append(metadata)
        # the cursor: base64("<last_modified_at>||<record uuid>")
        out.append(binascii.b2a_base64(cursor_head + str(row[1]).encode(), newline=False) + b'"}}')

    def record(self, row: Sequence[Any]) -> bytes:
        out: list[bytes | memoryview] = []
        self._write(row, out)
        return b"".join(out)

    def page(self, rows: Sequence[Sequence[Any]]) -> bytes:
        """The JSON array of the rows, copied into one buffer once."""
        out: list[bytes | memoryview] = []
        write = self._write
        for row in rows:
            out.append(b",")
            write(row, out)
        if not out:
            return b"[]"
        out[0] = b"["
        out.append(b"]")
        return b"".join(out)


class RecordsCache:
    def __init__(self, store: RecordStore, sealer: PayloadSealer) -> None:
        self.store = store
        self.sealer = sealer
        # per (connection, model): the turn of the newest batch received that has not taken the model's lock
        self._lock_line: dict[tuple[int, str], asyncio.Future[None]] = {}

    @staticmethod
    def _aad_prefix(scope: RecordScope) -> bytes:
        """Sealed payloads are bound to their (connection, model, external id): moved, they do not open."""
        return f"{scope.connection_id}/{scope.model}/".encode()

    def _seal(self, prefix: bytes, record: PreparedRecord) -> RecordWrite:
        sealed = self.sealer.seal(record.payload, prefix + record.external_id.encode())
        return RecordWrite(record.external_id, sealed, record.data_hash, len(record.payload))

    async def save_json(self, scope: RecordScope, raw: bytes, batch: BatchContext) -> BatchResult:
        """`save` of a batch's JSON as it was received. A writer may send a model's next batch before the
        answer to the one before (the SDK does): each is parsed and sealed while the one before is being
        written, and they take the model's lock in the order this process received them."""
        key = (scope.connection_id, scope.model)
        ahead = self._lock_line.get(key)
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lock_line[key] = turn
        try:
            return await self.save(scope, parse_record_batch(raw), batch, after=ahead, locked=turn)
        finally:
            if not turn.done():
                turn.set_result(None)
            if self._lock_line.get(key) is turn:
                del self._lock_line[key]

    async def save(
        self,
        scope: RecordScope,
        records: Sequence[IncomingRecord],
        batch: BatchContext,
        *,
        after: asyncio.Future[None] | None = None,
        locked: asyncio.Future[None] | None = None,
    ) -> BatchResult:
        """Upsert a batch, all or nothing. A re-saved deleted record is added again; an unchanged one
        is not rewritten. With a generation, every id of the batch is recorded as seen by it. The lock is
        asked for once `after` is done; `locked` is set once it is held."""
        guard = MergeGuard(batch.merging)
        prepared, repeated = prepare(records)
        summary = SummaryBuilder(repeated)
        prefix = self._aad_prefix(scope)
        sealed = self.sealer.seal_many(
            [r.payload for r in prepared], [prefix + r.external_id.encode() for r in prepared]
        )
        writes = [
            RecordWrite(r.external_id, box, r.data_hash, len(r.payload))
            for r, box in zip(prepared, sealed, strict=True)
        ]
        if after is not None:
            # waited for, never cancelled with this call: the batch ahead goes on whatever happens here
            await asyncio.wait((after,))
        async with self.store.locked(scope) as model:
            if locked is not None and not locked.done():
                locked.set_result(None)
            written = await model.upsert(
                writes,
                sync_id=batch.sync_id,
                unless_modified_after=guard.limit,
                generation=batch.generation,
                keys_cap=KEYS_CAP,
            )
            count = {name: outcome.count for name, outcome in written.items()}
            keys = {name: outcome.external_ids for name, outcome in written.items()}
            added = count.get("inserted", 0) + count.get("undeleted", 0)
            summary.add_many(keys.get("inserted", []) + keys.get("undeleted", []), added)
            summary.update_many(keys.get("updated", []), count.get("updated", 0))
            # a restored payload (pruned, then saved with the same content) counts as unchanged
            summary.unchanged(len(prepared) - added - count.get("updated", 0))
            grown = sum(outcome.grown for outcome in written.values())
            await model.add_counts(scope.environment_id, count.get("inserted", 0), grown)
        return BatchResult(summary.build(), guard.next([outcome.last for outcome in written.values()]))

    async def update(self, scope: RecordScope, records: Sequence[dict[str, Any]], batch: BatchContext) -> BatchResult:
        """Merge partial records into live ones (top-level keys, like jsonb `||`); unknown, deleted and
        pruned records are left out."""
        guard = MergeGuard(batch.merging)
        partials, repeated = unique_by_id(records)
        summary = SummaryBuilder(repeated)
        prefix = self._aad_prefix(scope)
        async with self.store.locked(scope) as model:
            existing = await model.existing([r["id"] for r in partials], with_data=True)
            writes: list[RecordWrite] = []
            size_delta = 0
            for index, partial in enumerate(partials):
                row = existing.get(partial["id"])
                if row is None or row.deleted or row.data is None:
                    continue
                if guard.skips(row):
                    summary.unchanged()
                    continue
                merged = json.loads(self.sealer.open(row.data, prefix + row.external_id.encode()))
                merged.update(partial)
                payload = canonical_payload(merged, index)
                check_record_size(payload, index)
                digest = payload_hash(payload)
                if digest == row.data_hash:
                    summary.unchanged()
                    continue
                summary.update(row.external_id)
                size_delta += len(payload) - row.size_bytes
                writes.append(self._seal(prefix, PreparedRecord(row.external_id, payload, digest)))
            written = await model.upsert(writes, sync_id=batch.sync_id)
            await model.add_counts(scope.environment_id, 0, size_delta)
        return BatchResult(summary.build(), guard.next([outcome.last for outcome in written.values()]))

    async def delete(
        self, scope: RecordScope, deletions: Sequence[tuple[str, datetime | None]], batch: BatchContext
    ) -> BatchResult:
        """Soft-delete (external id, deletedAt or None): `deleted_at` is that moment or now, `updated_at`
        now. Unknown ids are left out; already deleted ones are unchanged."""
        guard = MergeGuard(batch.merging)
        deleted_at: dict[str, datetime | None] = {}
        repeated: list[str] = []
        for external_id, moment in deletions:
            if external_id in deleted_at:
                repeated.append(external_id)
            else:
                deleted_at[external_id] = moment
        summary = SummaryBuilder(repeated)
        async with self.store.locked(scope) as model:
            existing = await model.existing(list(deleted_at))
            doomed: dict[str, datetime | None] = {}
            for external_id, moment in deleted_at.items():
                row = existing.get(external_id)
                if row is None:
                    continue
                if row.deleted or guard.skips(row):
                    summary.unchanged()
                    continue
                summary.delete(external_id)
                doomed[external_id] = moment
            written = await model.soft_delete(doomed)
        return BatchResult(summary.build(), guard.next(written))

    async def delete_outdated(self, scope: RecordScope, generation: int) -> OutdatedDeletion:
        """Soft-delete every live record no batch of `generation` or a later one carried."""
        async with self.store.locked(scope) as model:
            count, keys = await model.delete_unseen(generation, KEYS_CAP)
        return OutdatedDeletion(count, tuple(keys))

    async def start_reconcile(self, scope: RecordScope, pass_id: str) -> datetime:
        """Open a reconcile pass of the model; records written from the returned moment on are kept."""
        check_pass_id(pass_id)
        async with self.store.locked(scope) as model:
            return await model.start_reconcile(pass_id)

    async def mark_seen(self, scope: RecordScope, pass_id: str, external_ids: Sequence[str]) -> None:
        """Record ids as seen by the open pass; no record is written."""
        check_pass_id(pass_id)
        if len(external_ids) > MAX_RECORDS_PER_BATCH:
            raise InvalidRequest(f"at most {MAX_RECORDS_PER_BATCH} ids per call")
        for index, external_id in enumerate(external_ids):
            if not 1 <= len(external_id) <= MAX_EXTERNAL_ID_LENGTH:
                raise InvalidRequest(f"external_ids[{index}] must be 1 to {MAX_EXTERNAL_ID_LENGTH} characters long")
        if external_ids and not await self.store.mark_seen(scope, pass_id, external_ids):
            raise ReconcilePassNotOpen()

    async def finish_reconcile(self, scope: RecordScope, pass_id: str) -> ReconcileResult:
        """Close the pass, soft-deleting the live records it did not see and nobody wrote since it
        opened; a pass that saw no id at all deletes nothing."""
        check_pass_id(pass_id)
        async with self.store.locked(scope) as model:
            finished = await model.finish_reconcile(pass_id, KEYS_CAP)
        if finished is None:
            raise ReconcilePassNotOpen()
        seen, deleted, keys = finished
        return ReconcileResult(seen, deleted, tuple(keys))

    async def page(self, scope: RecordScope, query: RecordQuery) -> RecordPage:
        if not 1 <= query.limit <= MAX_PAGE_SIZE:
            raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE_SIZE}")
        if len(query.external_ids) > MAX_EXTERNAL_IDS_PER_QUERY:
            raise InvalidRequest(f"at most {MAX_EXTERNAL_IDS_PER_QUERY} ids per query")
        after = decode_cursor(query.cursor) if query.cursor else None
        rows, more = await self.store.page(scope, query, after, PAGE_BYTES_BUDGET)
        body = PageWriter(self.sealer, self._aad_prefix(scope)).page(rows)
        return RecordPage(body, encode_cursor(moment_from_epoch_us(rows[-1][4]), rows[-1][1]) if more else None)

    async def cursor(self, scope: RecordScope, position: CursorPosition) -> str | None:
        found = await self.store.cursor_at(scope, last=position is CursorPosition.LAST)
        return None if found is None else encode_cursor(*found)

    async def prune(self, scope: RecordScope, until_cursor: str, limit: int) -> PruneResult:
        """Empty the payloads of records up to and including `until_cursor`; metadata stays."""
        if not 1 <= limit <= MAX_PRUNE_LIMIT:
            raise InvalidRequest(f"limit must be between 1 and {MAX_PRUNE_LIMIT}")
        return await self._prune(scope, decode_cursor(until_cursor), limit)

    async def prune_older_than(self, scope: RecordScope, moment: datetime, limit: int) -> PruneResult:
        """Empty the payloads of records last modified before `moment` (auto-pruning)."""
        return await self._prune(scope, Cursor(moment - timedelta(microseconds=1), UUID(int=2**128 - 1)), limit)

    async def _prune(self, scope: RecordScope, until: Cursor, limit: int) -> PruneResult:
        async with self.store.locked(scope) as model:
            count, has_more, freed = await model.prune(until, limit)
            await model.add_counts(scope.environment_id, 0, -freed)
        return PruneResult(count, has_more)

    async def clear(self, environment_id: int, connection_id: int, models: Sequence[str], limit: int) -> ClearResult:
        """Hard-delete up to `limit` records of a connection (every model when `models` is empty);
        `has_more` tells the caller to call again."""
        if connection_id <= 0:
            raise InvalidRequest("nango_connection_id must be a positive integer")
        if not 1 <= limit <= MAX_CLEAR_LIMIT:
            raise InvalidRequest(f"limit must be between 1 and {MAX_CLEAR_LIMIT}")
        for model in models:
            validate_model(model)
        targets = sorted(set(models)) or await self.store.models_of(environment_id, connection_id)
        deleted = 0
        for model in targets:
            if deleted >= limit:
                break
            scope = RecordScope(environment_id, connection_id, model)
            async with self.store.locked(scope) as locked:
                count, freed = await locked.clear_step(limit - deleted)
                await locked.add_counts(environment_id, -count, -freed)
            deleted += count
        await self.store.drop_empty_counts(connection_id, targets)
        return ClearResult(deleted, deleted >= limit and await self.store.any_left(connection_id, targets))

    async def counts(
        self, environment_id: int, connection_ids: Sequence[int], models: Sequence[str]
    ) -> list[RecordCount]:
        """Rows held (soft-deleted included) and payload bytes per (connection, model)."""
        return await self.store.counts(environment_id, connection_ids, models)


__all__ = [
    "DEFAULT_CLEAR_LIMIT",
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_PRUNE_LIMIT",
    "KEYS_CAP",
    "MAX_RECORDS_PER_BATCH",
    "IncomingRecord",
    "PageWriter",
    "RecordsCache",
    "SummaryBuilder",
    "canonical_payload",
    "external_id_of",
    "parse_deletions",
    "parse_record_batch",
    "payload_hash",
    "prepare",
]
