"""The `nango` object a function receives: one class over a `Backend`.

The runner's backend reaches persist and the server over gRPC with the task's token and makes proxy
calls through `nango.proxycore`; the dry-run backend reads through the public REST API and records
writes instead of sending them. Everything an author can observe (validation, chunking, pagination,
checkpoint versions, log batching) lives here, so both behave the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import BaseModel, TypeAdapter, ValidationError

from nango.sdk.definitions import FunctionDefinition
from nango.sdk.errors import CheckpointConflict, HTTPError, InvalidRecord, SdkError
from nango.sdk.models import Model, partial_model
from nango.sdk.pagination import PageRequest, pagination_config
from nango.sdk.pagination import paginate as run_pagination

BATCH_SIZE = 1000
MB = 1024 * 1024
# persist's limits (nango.persist.models): one record's JSON, and a batch well under one call's 48 MB
MAX_RECORD_BYTES = 16 * MB
MAX_CHUNK_BYTES = 32 * MB
LOG_BATCH = 100
# record batches `batch_save` keeps in flight: persist prepares (parses, hashes, seals) one while it writes another
SAVES_IN_FLIGHT = 2
LOG_FLUSH_SECONDS = 1.0
LEVELS = ("debug", "info", "warn", "error")
LogLevel = Literal["debug", "info", "warn", "error"]
# checkpoints are flat objects of scalars (Nango's zod schema for them)
_CHECKPOINT_VALUES = (str, int, float, bool)


@dataclass(frozen=True)
class TaskContext:
    """Who and what a function runs for (Nango's nangoProps, the parts a function may see)."""

    function_name: str
    function_type: Literal["sync", "action", "webhook", "on-event"]
    environment_id: int
    nango_connection_id: int
    connection_id: str
    provider_config_key: str
    provider: str
    environment_name: str = ""
    task_id: str = ""
    activity_log_id: str = ""
    sync_id: str = ""
    sync_job_id: str = ""
    variant: str = ""
    last_sync_date: datetime | None = None
    track_deletes: bool = False
    # a reconcile pass of the sync (docs/functions.md): records are only marked seen, the unseen deleted
    reconcile: bool = False
    attempt: int = 0
    debug: bool = False
    end_user: dict[str, Any] | None = None

    @property
    def checkpoint_key(self) -> str:
        if self.function_type in ("sync", "webhook"):
            return f"sync:{self.function_name}:{self.variant or 'base'}"
        return f"{self.function_type}:{self.function_name}"


@dataclass(frozen=True)
class ProxyRequest:
    method: str
    endpoint: str
    params: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes | None
    retries: int = 0
    retry_on: tuple[int, ...] = ()
    base_url_override: str | None = None
    decompress: bool = False
    connection_id: str | None = None
    provider_config_key: str | None = None


@dataclass
class ProxyResponse:
    """An upstream answer: `.status_code`, `.headers` (case-insensitive), `.json()`, `.text`."""

    status_code: int
    headers: CIMultiDictProxy[str]
    content: bytes
    method: str = "GET"
    endpoint: str = ""

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    def json(self) -> Any:
        return json.loads(self.content) if self.content else None

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise HTTPError(self)


def headers_of(pairs: Iterable[tuple[str, str]]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


@dataclass(frozen=True)
class BatchSummary:
    added: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    # ids that appeared more than once in the batch (the first occurrence was kept)
    non_unique_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReconcileSummary:
    """A finished reconcile pass over one model: distinct ids seen, records deleted (keys capped)."""

    seen: int
    deleted: int
    deleted_keys: list[str]


@dataclass(frozen=True)
class StoredCheckpoint:
    """A checkpoint and its version; `value` is None once cleared (the version still counts)."""

    value: dict[str, Any] | None
    version: int


@dataclass(frozen=True)
class LogLine:
    message: str
    level: LogLevel = "info"
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    type: Literal["log", "http"] = "log"
    meta: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = None


@dataclass
class ModelCounts:
    added: int = 0
    updated: int = 0
    deleted: int = 0


class Backend(Protocol):
    """Where the `nango` object's calls go. Records arrive encoded (a JSON array of objects)."""

    async def proxy(self, request: ProxyRequest) -> ProxyResponse: ...

    async def pagination_defaults(self) -> dict[str, Any] | None: ...

    async def save_records(self, model: str, records: bytes) -> BatchSummary: ...

    async def update_records(self, model: str, records: bytes) -> BatchSummary: ...

    async def delete_records(self, model: str, records: bytes) -> BatchSummary: ...

    async def delete_outdated_records(self, model: str, generation: int) -> list[str]: ...

    async def get_records(self, model: str, ids: Sequence[str]) -> list[dict[str, Any]]: ...

    async def start_reconcile(self, model: str) -> None: ...

    async def mark_seen(self, model: str, ids: Sequence[str]) -> None: ...

    async def finish_reconcile(self, model: str) -> ReconcileSummary: ...

    async def get_checkpoint(self, key: str) -> StoredCheckpoint | None: ...

    async def put_checkpoint(self, key: str, value: dict[str, Any], expected_version: int) -> int: ...

    async def delete_checkpoint(self, key: str, expected_version: int) -> int: ...

    async def get_connection(self, provider_config_key: str, connection_id: str) -> dict[str, Any]: ...

    async def set_metadata(self, metadata: dict[str, Any], *, merge: bool) -> dict[str, Any]: ...

    async def get_integration(self, include_credentials: bool) -> dict[str, Any]: ...

    async def environment_variables(self) -> list[dict[str, str]]: ...

    async def trigger_action(
        self, provider_config_key: str, connection_id: str, action_name: str, input: Any
    ) -> Any: ...

    async def try_acquire_lock(self, key: str, ttl: timedelta) -> bool: ...

    async def release_lock(self, key: str) -> bool: ...

    async def release_all_locks(self) -> int: ...

    async def write_logs(self, lines: Sequence[LogLine]) -> None: ...


ModelRef = str | type[BaseModel]
RecordsObserver = Callable[[str, ModelCounts], None]


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _encode_body(data: Any, headers: dict[str, str]) -> bytes | None:
    if data is None:
        return None
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    if not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "application/json"
    return json.dumps(data, separators=(",", ":"), default=str).encode()


_adapters: dict[type[BaseModel], TypeAdapter[list[Any]]] = {}


def _list_adapter(model: type[BaseModel]) -> TypeAdapter[list[Any]]:
    adapter = _adapters.get(model)
    if adapter is None:
        adapter = _adapters[model] = TypeAdapter(list[model])  # type: ignore[valid-type]
    return adapter


def encode_chunks(model: str, records: list[Any], encode: Callable[[list[Any]], bytes]) -> list[tuple[int, bytes]]:
    """`records` as JSON arrays of at most BATCH_SIZE records and MAX_CHUNK_BYTES each (persist's batches),
    in order, each with how many records it holds. InvalidRecord for a record over MAX_RECORD_BYTES, before
    anything is sent."""
    chunks: list[tuple[int, bytes]] = []
    for start in range(0, len(records), BATCH_SIZE):
        part = records[start : start + BATCH_SIZE]
        data = encode(part)
        # small enough that no record in it can be over the limit: sent as one batch
        if len(data) <= MAX_RECORD_BYTES:
            chunks.append((len(part), data))
            continue
        pending: list[bytes] = []
        size = 2
        for offset, record in enumerate(part):
            one = encode([record])[1:-1]
            if len(one) > MAX_RECORD_BYTES:
                message = f"{len(one) / MB:.1f} MB of JSON, over the {MAX_RECORD_BYTES // MB} MB a record may hold"
                raise InvalidRecord(model, start + offset, [{"loc": ("size",), "msg": message}])
            if pending and size + len(one) + 1 > MAX_CHUNK_BYTES:
                chunks.append((len(pending), b"[" + b",".join(pending) + b"]"))
                pending, size = [], 2
            pending.append(one)
            size += len(one) + 1
        chunks.append((len(pending), b"[" + b",".join(pending) + b"]"))
    return chunks


def _json_list(records: list[Any]) -> bytes:
    return json.dumps(records, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(slots=True)
class _SaveInFlight:
    """A batch sent by `batch_save` whose answer is not read yet."""

    model: str
    # its records' ids as persist keys them (a number id as its string)
    ids: frozenset[str]
    task: asyncio.Future[BatchSummary]


def _record_id(record: Any, model: str, index: int) -> str:
    value = record.get("id") if isinstance(record, Mapping) else getattr(record, "id", None)
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise InvalidRecord(model, index, [{"loc": ("id",), "msg": "a record needs a string or integer id"}])
    return str(value)


class Nango:
    """The runtime SDK of §6.2 in Python: properties are snake_case, every call is awaited."""

    def __init__(
        self,
        context: TaskContext,
        backend: Backend,
        definition: FunctionDefinition | None = None,
        *,
        on_records_changed: RecordsObserver | None = None,
    ) -> None:
        self.context = context
        self._backend = backend
        # the function being run: its models are what records are validated against
        self.definition = definition
        self._on_records_changed = on_records_changed
        self._checkpoint_versions: dict[str, int] = {}
        self._pending_logs: list[LogLine] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        self._locks_taken = False
        # oldest first; see `_send_save`
        self._saves: deque[_SaveInFlight] = deque()
        self.results: dict[str, ModelCounts] = {}
        self.proxy_calls = 0
        self.log_messages = 0

    # properties of §6.2

    @property
    def connection_id(self) -> str:
        return self.context.connection_id

    @property
    def provider_config_key(self) -> str:
        return self.context.provider_config_key

    @property
    def provider(self) -> str:
        return self.context.provider

    @property
    def environment_id(self) -> int:
        return self.context.environment_id

    @property
    def environment_name(self) -> str:
        return self.context.environment_name

    @property
    def variant(self) -> str:
        return self.context.variant or "base"

    @property
    def last_sync_date(self) -> datetime | None:
        return None if self.context.reconcile else self.context.last_sync_date

    @property
    def is_reconcile(self) -> bool:
        """True in a reconcile pass: `batch_save` only marks ids as seen, so the function may list ids
        and skip fetching details; records it does not list are deleted at the end."""
        return self.context.reconcile

    @property
    def activity_log_id(self) -> str:
        return self.context.activity_log_id

    @property
    def sync_id(self) -> str:
        return self.context.sync_id

    @property
    def sync_job_id(self) -> str:
        return self.context.sync_job_id

    # proxy

    async def proxy(
        self,
        method: str = "GET",
        endpoint: str = "",
        *,
        params: Mapping[str, Any] | None = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        retries: int = 0,
        retry_on: Sequence[int] | None = None,
        base_url_override: str | None = None,
        decompress: bool = False,
        connection_id: str | None = None,
        provider_config_key: str | None = None,
    ) -> ProxyResponse:
        """Call the provider's API with this connection's credentials, as the REST `/proxy` does.
        A 4xx or 5xx answer raises HTTPError (its `.response` is the answer)."""
        if not endpoint:
            raise SdkError("proxy needs an endpoint")
        sent_headers = dict(headers or {})
        request = ProxyRequest(
            method=method.upper(),
            endpoint=endpoint if endpoint.startswith("/") else "/" + endpoint,
            params={k: _query_value(v) for k, v in (params or {}).items() if v is not None},
            body=_encode_body(data, sent_headers),
            headers=sent_headers,
            retries=retries,
            retry_on=tuple(retry_on or ()),
            base_url_override=base_url_override,
            decompress=decompress,
            connection_id=connection_id,
            provider_config_key=provider_config_key,
        )
        self.proxy_calls += 1
        response = await self._backend.proxy(request)
        response.raise_for_status()
        return response

    async def get(self, endpoint: str, **options: Any) -> ProxyResponse:
        return await self.proxy("GET", endpoint, **options)

    async def post(self, endpoint: str, **options: Any) -> ProxyResponse:
        return await self.proxy("POST", endpoint, **options)

    async def put(self, endpoint: str, **options: Any) -> ProxyResponse:
        return await self.proxy("PUT", endpoint, **options)

    async def patch(self, endpoint: str, **options: Any) -> ProxyResponse:
        return await self.proxy("PATCH", endpoint, **options)

    async def delete(self, endpoint: str, **options: Any) -> ProxyResponse:
        return await self.proxy("DELETE", endpoint, **options)

    async def paginate(
        self,
        endpoint: str,
        *,
        method: str = "GET",
        params: Mapping[str, Any] | None = None,
        data: Any = None,
        paginate: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncIterator[list[Any]]:
        """Each page's records, following the provider's pagination merged with `paginate`."""
        config = pagination_config(await self._backend.pagination_defaults(), paginate)
        method = method.upper()
        in_body = config.in_body if config.in_body is not None else method in ("POST", "PUT", "PATCH")
        request = PageRequest(method, endpoint, params, data, in_body)

        async def fetch(page: PageRequest) -> tuple[Any, Mapping[str, str]]:
            extra = dict(options)
            if page.base_url_override is not None:
                extra["base_url_override"] = page.base_url_override
            response = await self.proxy(page.method, page.endpoint, params=page.params, data=page.data, **extra)
            return response.json(), response.headers

        on_page = (paginate or {}).get("on_page")
        async for records in run_pagination(fetch, config, request, on_page):
            yield records

    # records (syncs)

    def model_full_name(self, model: ModelRef) -> str:
        """`Model`, or `Model::variant` when this sync runs a variant other than base."""
        name = model if isinstance(model, str) else model.__name__
        variant = self.context.variant
        return name if not variant or variant == "base" else f"{name}::{variant}"

    def _record_model(self, model: ModelRef) -> type[Model]:
        definition = self.definition
        if definition is None or definition.kind != "sync":
            raise SdkError("records can only be saved by syncs (and their webhook handlers)")
        return definition.model(model)

    def _changed(self, model: str, summary: BatchSummary) -> None:
        if summary.non_unique_keys:
            repeated = summary.non_unique_keys
            shown = ", ".join(repeated[:10]) + (", ..." if len(repeated) > 10 else "")
            self.write_log(
                LogLine(
                    f"{len(repeated)} id(s) of model {model} appeared more than once in one batch; the first "
                    f"record with each id was kept: {shown}",
                    "warn",
                )
            )
        counts = self.results.setdefault(model, ModelCounts())
        counts.added += summary.added
        counts.updated += summary.updated
        counts.deleted += summary.deleted
        if self._on_records_changed is not None:
            self._on_records_changed(model, ModelCounts(summary.added, summary.updated, summary.deleted))

    @staticmethod
    def _validated(cls: type[BaseModel], name: str, records: Sequence[Any], *, partial: bool) -> list[BaseModel]:
        schema = partial_model(cls) if partial else cls
        out: list[BaseModel] = []
        for index, record in enumerate(records):
            if isinstance(record, schema) and not partial:
                out.append(record)
                continue
            raw = record.model_dump(exclude_unset=partial) if isinstance(record, BaseModel) else record
            try:
                out.append(schema.model_validate(raw))
            except ValidationError as exc:
                errors = [{"loc": e["loc"], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
                raise InvalidRecord(name, index, errors) from None
        return out

    async def batch_save(self, records: Sequence[Any], model: ModelRef) -> bool:
        """Validate `records` against the model, then upsert them in batches of 1,000. An invalid record
        raises here and sends nothing; the last batches may still be in flight when this returns (see
        `_send_save`): a batch persist refuses raises at a later call, at the latest when the function
        returns."""
        cls = self._record_model(model)
        name = self.model_full_name(cls)
        if self.context.reconcile:
            return await self._mark_seen(name, records)
        validated = self._validated(cls, name, records, partial=False)
        start = 0
        for count, chunk in encode_chunks(name, validated, _list_adapter(cls).dump_json):
            ids = frozenset(
                [r.id if type(r.id) is str else str(r.id) for r in validated[start : start + count]]  # type: ignore[attr-defined]
            )
            start += count
            await self._send_save(name, chunk, ids)
        return True

    async def _send_save(self, name: str, chunk: bytes, ids: frozenset[str]) -> None:
        """Send a batch without waiting for its answer, so that persist prepares it while it writes the one
        before. At most SAVES_IN_FLIGHT are out, and a batch sharing an id with one in flight of its model
        waits for it: persist may write concurrent batches in either order, and the later record must win.
        Answers are read oldest first, so batches fail in the order they were sent."""
        saves = self._saves
        while saves and (
            len(saves) >= SAVES_IN_FLIGHT or any(s.model == name and not s.ids.isdisjoint(ids) for s in saves)
        ):
            await self._read_oldest_save()
        saves.append(_SaveInFlight(name, ids, asyncio.ensure_future(self._backend.save_records(name, chunk))))

    async def _read_oldest_save(self) -> None:
        # it stays in flight until its answer came: a concurrent call must still wait for it
        save = self._saves[0]
        await asyncio.wait((save.task,))
        if self._saves and self._saves[0] is save:
            self._saves.popleft()
            self._changed(save.model, save.task.result())

    async def settle_records(self) -> None:
        """Wait for the batches `batch_save` left in flight; the first of them that failed raises its
        error. Every other call that reads or writes state persist shares (records, checkpoints, locks,
        metadata, actions) settles first, and so does `execute` when the function returns."""
        while self._saves:
            await self._read_oldest_save()

    async def batch_update(self, records: Sequence[Any], model: ModelRef) -> bool:
        """Merge partial records (an `id` and the fields that changed) into the saved ones."""
        await self.settle_records()
        cls = self._record_model(model)
        name = self.model_full_name(cls)
        if self.context.reconcile:
            return await self._mark_seen(name, records)
        validated = self._validated(cls, name, records, partial=True)
        partials = [r.model_dump(mode="json", exclude_unset=True) for r in validated]
        for _, chunk in encode_chunks(name, partials, _json_list):
            self._changed(name, await self._backend.update_records(name, chunk))
        return True

    async def batch_delete(self, records: Sequence[Any], model: ModelRef) -> bool:
        """Mark records deleted by id (each a dict or model with `id`)."""
        await self.settle_records()
        cls = self._record_model(model)
        name = self.model_full_name(cls)
        ids = [{"id": _record_id(record, name, index)} for index, record in enumerate(records)]
        for start in range(0, len(ids), BATCH_SIZE):
            chunk = json.dumps(ids[start : start + BATCH_SIZE]).encode()
            self._changed(name, await self._backend.delete_records(name, chunk))
        return True

    async def _mark_seen(self, name: str, records: Sequence[Any]) -> bool:
        """A reconcile pass: only the ids count (the rest of each record may be left out)."""
        ids = [_record_id(record, name, index) for index, record in enumerate(records)]
        for start in range(0, len(ids), BATCH_SIZE):
            await self._backend.mark_seen(name, ids[start : start + BATCH_SIZE])
        return True

    async def open_reconcile_pass(self) -> None:
        """Platform side of a reconcile pass (`execute` calls it): open one pass per model of the sync."""
        for model in self._reconciled_models():
            await self._backend.start_reconcile(model)

    async def close_reconcile_pass(self) -> None:
        """After the function returned: delete, per model, the live records the pass did not see."""
        await self.settle_records()
        for model in self._reconciled_models():
            summary = await self._backend.finish_reconcile(model)
            self._changed(model, BatchSummary(deleted=summary.deleted))
            shown = ", ".join(summary.deleted_keys[:10]) + (", ..." if summary.deleted > 10 else "")
            self.write_log(
                LogLine(
                    f"reconcile pass over {model}: {summary.seen} id(s) seen, {summary.deleted} record(s) deleted"
                    + (f": {shown}" if summary.deleted else "")
                    + ("" if summary.seen else " (a pass that sees no id deletes nothing)")
                )
            )

    def _reconciled_models(self) -> list[str]:
        definition = self.definition
        if definition is None or definition.kind != "sync":
            raise SdkError("a reconcile pass runs a sync")
        return [self.model_full_name(model) for model in definition.models]

    async def get_records_by_ids(self, ids: Sequence[str | int], model: ModelRef) -> dict[str, dict[str, Any]]:
        """The live records with these ids, by id; missing and deleted ones are left out."""
        await self.settle_records()
        name = self.model_full_name(self._record_model(model))
        found: dict[str, dict[str, Any]] = {}
        wanted = [str(i) for i in ids]
        for start in range(0, len(wanted), 100):
            for record in await self._backend.get_records(name, wanted[start : start + 100]):
                if (record.get("_nango_metadata") or {}).get("deleted_at") is None:
                    found[str(record["id"])] = record
        return found

    def _track_deletes_key(self, model: str) -> str:
        return f"{self.context.checkpoint_key}:trackDeletes:{model}"

    def _generation(self) -> int:
        job = self.context.sync_job_id
        if not job.isdigit() or int(job) <= 0:
            raise SdkError("tracking deletes needs the run's sync job id (a positive integer)")
        return int(job)

    async def track_deletes_start(self, model: ModelRef) -> None:
        """Begin a full pass over `model`: records not saved from here to `track_deletes_end` get deleted.
        A pass left unfinished by an earlier run is continued, not restarted."""
        name = self.model_full_name(self._record_model(model))
        if self.context.reconcile:
            return  # the pass itself tracks every model of the sync
        await self.settle_records()
        key = self._track_deletes_key(name)
        stored = await self._backend.get_checkpoint(key)
        if stored is not None and stored.value is not None:
            self._checkpoint_versions[key] = stored.version
            return
        version = stored.version if stored is not None else 0
        self._checkpoint_versions[key] = await self._backend.put_checkpoint(
            key, {"sync_job_id": self._generation()}, version
        )

    async def track_deletes_end(self, model: ModelRef) -> dict[str, list[str]]:
        """Delete the records of `model` not saved since `track_deletes_start`; returns their ids."""
        await self.settle_records()
        name = self.model_full_name(self._record_model(model))
        if self.context.reconcile:
            return {"deleted_keys": []}
        key = self._track_deletes_key(name)
        stored = await self._backend.get_checkpoint(key)
        if stored is None or stored.value is None:
            raise SdkError(f"track_deletes_end({name!r}) without track_deletes_start")
        deleted = await self._backend.delete_outdated_records(name, int(stored.value["sync_job_id"]))
        await self._backend.delete_checkpoint(key, stored.version)
        self._changed(name, BatchSummary(deleted=len(deleted)))
        return {"deleted_keys": deleted}

    async def delete_outdated_records(self, model: ModelRef) -> list[str]:
        """Legacy track deletes: delete what this run did not save."""
        await self.settle_records()
        name = self.model_full_name(self._record_model(model))
        if self.context.reconcile:
            return []
        deleted = await self._backend.delete_outdated_records(name, self._generation())
        self._changed(name, BatchSummary(deleted=len(deleted)))
        return deleted

    # checkpoints

    async def _read_checkpoint(self, key: str) -> dict[str, Any] | None:
        await self.settle_records()
        stored = await self._backend.get_checkpoint(key)
        self._checkpoint_versions[key] = stored.version if stored is not None else 0
        return stored.value if stored is not None else None

    async def get_checkpoint(self) -> dict[str, Any] | None:
        """This function's checkpoint for this connection; None on a first (or reset) run, and in a
        reconcile pass (which lists everything and leaves the checkpoint alone)."""
        if self.context.reconcile:
            return None
        return await self._read_checkpoint(self.context.checkpoint_key)

    async def save_checkpoint(self, checkpoint: Mapping[str, Any]) -> None:
        """Store a flat object of strings, numbers and booleans. CheckpointConflict when another run
        wrote it since this one read it."""
        if not isinstance(checkpoint, Mapping) or not all(
            isinstance(k, str) and isinstance(v, _CHECKPOINT_VALUES) for k, v in checkpoint.items()
        ):
            raise SdkError("a checkpoint is a flat dict of str keys and str, int, float or bool values")
        if self.context.reconcile:
            return
        await self.settle_records()
        key = self.context.checkpoint_key
        if key not in self._checkpoint_versions:
            await self._read_checkpoint(key)
        self._checkpoint_versions[key] = await self._backend.put_checkpoint(
            key, dict(checkpoint), self._checkpoint_versions[key]
        )

    async def clear_checkpoint(self) -> None:
        if self.context.reconcile:
            return
        await self.settle_records()
        key = self.context.checkpoint_key
        stored = await self._backend.get_checkpoint(key)
        known = self._checkpoint_versions.get(key)
        if stored is None or stored.value is None:
            self._checkpoint_versions[key] = stored.version if stored is not None else 0
            return
        if known is not None and known != stored.version:
            raise CheckpointConflict(f"checkpoint {key!r} was written by another run; read it again")
        self._checkpoint_versions[key] = await self._backend.delete_checkpoint(key, stored.version)

    # connection, metadata, environment

    async def get_connection(
        self, provider_config_key: str | None = None, connection_id: str | None = None
    ) -> dict[str, Any]:
        """The connection with fresh credentials (this task's unless others are named)."""
        return await self._backend.get_connection(
            provider_config_key or self.context.provider_config_key, connection_id or self.context.connection_id
        )

    async def get_token(self) -> Any:
        """The credential a request would carry: the access token, API key, or the basic pair."""
        credentials = (await self.get_connection()).get("credentials") or {}
        kind = credentials.get("type")
        if kind == "API_KEY":
            return credentials.get("apiKey")
        if kind == "BASIC":
            return {"username": credentials.get("username"), "password": credentials.get("password")}
        if kind == "OAUTH1":
            return {
                "oAuthToken": credentials.get("oauth_token"),
                "oAuthTokenSecret": credentials.get("oauth_token_secret"),
            }
        return credentials.get("access_token") or credentials.get("token")

    async def get_integration(self, include_credentials: bool = False) -> dict[str, Any]:
        return await self._backend.get_integration(include_credentials)

    async def get_metadata(self) -> dict[str, Any]:
        return dict((await self.get_connection()).get("metadata") or {})

    async def set_metadata(self, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the connection's metadata."""
        await self.settle_records()
        return await self._backend.set_metadata(dict(metadata), merge=False)

    async def update_metadata(self, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """Shallow-merge into the connection's metadata."""
        await self.settle_records()
        return await self._backend.set_metadata(dict(metadata), merge=True)

    async def get_environment_variables(self) -> list[dict[str, str]]:
        """`[{"name", "value"}]` of this environment."""
        return await self._backend.environment_variables()

    async def trigger_action(
        self,
        provider_config_key: str,
        connection_id: str,
        action_name: str,
        input: Any = None,
    ) -> Any:
        """Run another action for a connection and return its output."""
        payload = input.model_dump(mode="json") if isinstance(input, BaseModel) else input
        await self.settle_records()
        return await self._backend.trigger_action(provider_config_key, connection_id, action_name, payload)

    # locks (persist-backed, owned by this task)

    async def try_acquire_lock(self, key: str, ttl_ms: int) -> bool:
        self._locks_taken = True
        await self.settle_records()
        return await self._backend.try_acquire_lock(key, timedelta(milliseconds=ttl_ms))

    async def release_lock(self, key: str) -> bool:
        await self.settle_records()
        return await self._backend.release_lock(key)

    async def release_all_locks(self) -> int:
        self._locks_taken = False
        await self.settle_records()
        return await self._backend.release_all_locks()

    # logs

    async def log(self, *parts: Any, level: LogLevel = "info") -> None:
        """One line in the run's log (batched); non-string parts are written as JSON."""
        if level not in LEVELS:
            raise SdkError(f"log level must be one of {', '.join(LEVELS)}")
        text = " ".join(p if isinstance(p, str) else json.dumps(p, default=str) for p in parts)
        self.write_log(LogLine(text, level))

    def write_log(self, line: LogLine) -> None:
        """Queue a line; it is sent within a second, or as soon as a batch is full."""
        self._pending_logs.append(line)
        self.log_messages += 1
        if len(self._pending_logs) >= LOG_BATCH:
            self._flush_soon(0)
        elif self._flush_handle is None:
            self._flush_soon(LOG_FLUSH_SECONDS)

    def _flush_soon(self, delay: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # written outside the event loop (a thread): `finish()` sends it
        if self._flush_handle is not None:
            self._flush_handle.cancel()

        def start() -> None:
            self._flush_handle = None
            task = loop.create_task(self._flush_quietly())
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)

        self._flush_handle = loop.call_later(delay, start)

    async def _flush_quietly(self) -> None:
        # a log line that cannot be written must not fail the function that wrote it
        with contextlib.suppress(Exception):
            await self.flush_logs()

    async def flush_logs(self) -> None:
        lines, self._pending_logs = self._pending_logs, []
        if lines:
            await self._backend.write_logs(lines)

    async def finish(self) -> None:
        """Send what is still buffered and let go of this task's locks. Batches still in flight (the
        function failed before they were settled) are waited for and counted; their errors are not raised."""
        while self._saves:
            with contextlib.suppress(Exception):
                await self._read_oldest_save()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)
        await self.flush_logs()
        if self._locks_taken:
            await self.release_all_locks()


__all__ = [
    "BATCH_SIZE",
    "MAX_CHUNK_BYTES",
    "MAX_RECORD_BYTES",
    "Backend",
    "BatchSummary",
    "LogLevel",
    "LogLine",
    "ModelCounts",
    "Nango",
    "ProxyRequest",
    "ProxyResponse",
    "ReconcileSummary",
    "StoredCheckpoint",
    "TaskContext",
    "headers_of",
]
