"""What the runner and its worker processes tell each other over a task's socket: length-prefixed
pickles of the dataclasses below. Both ends are this code, so pickle is safe here; user code never
writes to the socket (it never sees it)."""

from __future__ import annotations

import asyncio
import os
import pickle
import struct
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nango.outbound import PoolSettings

_HEADER = struct.Struct("!I")
MAX_FRAME = 256 * 1024 * 1024


class WireError(Exception):
    """The other end sent something that is not a frame, or went away mid-frame."""


@dataclass(frozen=True)
class WorkerConfig:
    """What the zygote (and so every worker) knows: no secret, since user code can read its memory."""

    persist_url: str
    server_url: str
    providers_file: str | None
    outbound_url_policy: str | None
    override_denylist: str | None
    override_enabled: bool
    pool: PoolSettings


@dataclass(frozen=True)
class Limits:
    memory_mb: int
    cpu_seconds: int


@dataclass(frozen=True)
class RunTask:
    task_id: str
    function_name: str
    function_type: str
    bundle_dir: str
    limits: Limits
    task_token: str
    environment_id: int
    environment_name: str
    nango_connection_id: int
    connection_id: str
    provider_config_key: str
    provider: str
    input_json: bytes = b""
    activity_log_id: str = ""
    sync_id: str = ""
    sync_job_id: str = ""
    variant: str = ""
    last_sync_date: datetime | None = None
    track_deletes: bool = False
    reconcile: bool = False
    attempt: int = 0
    debug: bool = False
    end_user: dict[str, Any] | None = None


@dataclass(frozen=True)
class InspectBundle:
    bundle_zip: bytes
    limits: Limits
    max_unpacked_bytes: int


@dataclass(frozen=True)
class RecordsChanged:
    """Sent after every batch, so counts survive a worker that is killed later."""

    model: str
    added: int
    updated: int
    deleted: int


@dataclass(frozen=True)
class Failure:
    type: str
    message: str
    status: int = 500
    payload: Any = None
    upstream: dict[str, Any] | None = None


@dataclass(frozen=True)
class TaskOutcome:
    output_json: bytes | None = None
    failure: Failure | None = None
    proxy_calls: int = 0
    log_messages: int = 0
    # the worker's peak memory when it sent this (its exit status, which says the same, comes later)
    maxrss_kb: int = 0


@dataclass(frozen=True)
class InspectOutcome:
    specs: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def frame(message: object) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    if len(data) > MAX_FRAME:
        raise WireError(f"a message of {len(data)} bytes is over the {MAX_FRAME} bytes limit")
    return _HEADER.pack(len(data)) + data


def _unpickle(data: bytes) -> object:
    return pickle.loads(data)  # noqa: S301 - both ends are the runner's own code


def _size(header: bytes) -> int:
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise WireError(f"a frame of {size} bytes is over the {MAX_FRAME} bytes limit")
    return int(size)


def _read_exactly(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise WireError("the other end closed the socket mid-frame")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_blocking(fd: int) -> object:
    """The next message on a blocking socket's file descriptor; WireError on end of stream. (A worker reads
    and writes its socket by descriptor: a socket object costs a fresh process ~0.2 ms of first touches.)"""
    return _unpickle(_read_exactly(fd, _size(_read_exactly(fd, _HEADER.size))))


def write_blocking(fd: int, data: bytes) -> None:
    """All of `data` on a blocking socket's file descriptor."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def read_message(reader: asyncio.StreamReader) -> object | None:
    """The next message, or None when the other end closed cleanly between messages."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise WireError("the other end closed the socket mid-frame") from None
        return None
    try:
        return _unpickle(await reader.readexactly(_size(header)))
    except asyncio.IncompleteReadError:
        raise WireError("the other end closed the socket mid-frame") from None


__all__ = [
    "Failure",
    "InspectBundle",
    "InspectOutcome",
    "Limits",
    "RecordsChanged",
    "RunTask",
    "TaskOutcome",
    "WireError",
    "WorkerConfig",
    "frame",
    "read_blocking",
    "read_message",
    "write_blocking",
]
