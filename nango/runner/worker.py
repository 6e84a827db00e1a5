"""Inside a worker process: one task (or one bundle inspection), then exit.

The zygote imports this module and calls `prepare` once; a template calls `load_template` once; each
forked child calls `main` with its task socket. The child reads its task, puts itself under the task's
limits (RLIMIT_AS, RLIMIT_CPU, no core dumps), runs the function through the SDK with the gRPC
backend, and sends back its outcome. User code's stdout and stderr become log lines of the
operation, never the runner's output; an exception becomes a failure with its traceback in the operation's log.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvloop

from nango.outbound import OutboundPolicy, server_policy
from nango.providers import ProviderCatalog, load_catalog
from nango.runner.archive import InvalidBundle, unpack
from nango.runner.backend import GrpcBackend
from nango.runner.models import ErrorType, FunctionType
from nango.runner.wire import (
    Failure,
    InspectBundle,
    InspectOutcome,
    Limits,
    RecordsChanged,
    RunTask,
    TaskOutcome,
    WorkerConfig,
    frame,
    read_blocking,
    write_blocking,
)
from nango.sdk.definitions import FunctionDefinition
from nango.sdk.errors import ActionError, HTTPError
from nango.sdk.execute import FunctionNotFound, InvalidInput, InvalidOutput, execute, find_function
from nango.sdk.loader import BundleLoadError, describe, load_folder
from nango.sdk.runtime import LogLevel, LogLine, ModelCounts, Nango, TaskContext

if TYPE_CHECKING:
    from nango.persist.client import PersistClient
    from nango.proxycore import ProxyEngine
    from nango.server.client import ServerClient

MB = 1024 * 1024
# address space granted past the limit once it is hit, to report the failure
_HEADROOM = 64 * MB
_UPSTREAM_BODY_LIMIT = 64 * 1024
_MESSAGE_LIMIT = 2000
# a task's function type as the SDK names it (a plain lookup: an enum call costs a fresh worker ~0.1 ms)
_FUNCTION_TYPES: dict[str, Any] = {kind.value: kind.value for kind in FunctionType}


@dataclass(frozen=True)
class _Prepared:
    config: WorkerConfig
    catalog: ProviderCatalog
    policy: OutboundPolicy


@dataclass(frozen=True)
class _Template:
    """A bundle imported once, in a template process, for every worker forked from it."""

    # the folder as the runner named it, and resolved
    bundle_dir: str
    root: Path
    definitions: list[FunctionDefinition]
    # what the import printed, replayed into each task's log as if the task had imported it
    printed: list[tuple[str, LogLevel]]


_prepared: _Prepared | None = None
_template: _Template | None = None


def prepare(config: WorkerConfig) -> None:
    """Run once in the zygote: everything built here is shared (copy-on-write) by every worker."""
    global _prepared
    catalog = load_catalog(Path(config.providers_file) if config.providers_file else None)
    _prepared = _Prepared(config, catalog, server_policy(config.outbound_url_policy, config.override_denylist))
    _warm_up(_prepared)


_WARM_UP_RUNS = 10


class _WarmUpBackend(GrpcBackend):
    """The warm-up's backend: it may open no channel and no pool (grpc would start threads in the zygote)."""

    @property
    def persist(self) -> PersistClient:
        raise RuntimeError("the warm-up calls nothing")

    @property
    def server(self) -> ServerClient:
        raise RuntimeError("the warm-up calls nothing")

    @property
    def engine(self) -> ProxyEngine:
        raise RuntimeError("the warm-up calls nothing")


def _warm_up(prepared: _Prepared) -> None:
    """Run a no-op action through a task's own code path a few times, in the zygote, before it forks anything
    (about 0.6 ms less CPU per task, of ~4.3 ms a fresh worker used).

    A worker pays for every page it shares with its parent that it writes to (a copy-on-write fault). Python
    writes to code it runs for the first times (3.11 counts a function's first calls in its code object, then
    specialises its instructions in place) and to caches it fills on first use (types' attribute caches,
    uvloop's allocator setup): done here once, workers run code specialised already and find the caches
    filled. Best effort, and nothing outlives it: the action calls nothing (no channel, no connection, no
    thread), the loops and pipes are closed, the standard streams, the template and the registry of declared
    functions are as they were (the registry empty). Only libuv's process-wide signal lock pipe stays, as it
    would in any process that ran a loop; libuv closes it and makes a new one in each child after a fork."""
    global _template
    from nango.sdk.definitions import action, clear_registry, registered

    if registered():
        # the registry holds functions of some bundle: leave it be (the zygote imports none)
        return
    saved, streams = _template, (sys.stdout, sys.stderr)
    try:

        @action(description="warms the zygote up", name="nango_warm_up")
        async def noop(nango: Nango) -> None:
            return None

        definition = registered()[-1]
        root = Path("/nonexistent/nango-warm-up")
        _template = _Template(str(root), root, [definition], [])
        task = RunTask(
            task_id="warm-up",
            function_name=definition.name,
            function_type=FunctionType.ACTION.value,
            bundle_dir=str(root),
            limits=Limits(0, 0),
            task_token="",
            environment_id=0,
            environment_name="",
            nango_connection_id=0,
            connection_id="",
            provider_config_key="",
            provider="",
        )
        for _ in range(_WARM_UP_RUNS):
            read_fd, write_fd = os.pipe()
            loop = uvloop.new_event_loop()
            try:
                write_blocking(write_fd, frame(task))
                message = read_blocking(read_fd)
                if isinstance(message, RunTask):
                    outcome = loop.run_until_complete(_run(message, root, write_fd, prepared, _WarmUpBackend))
                    write_blocking(write_fd, frame(outcome))
                    read_blocking(read_fd)
            finally:
                loop.close()
                os.close(read_fd)
                os.close(write_fd)
    except Exception:  # noqa: S110 - an optimisation: workers that start cold still run
        pass
    finally:
        _template = saved
        sys.stdout, sys.stderr = streams
        clear_registry()


def load_template(bundle_dir: str, limits: Limits) -> None:
    """Run once in a template process: import the bundle under the task limits (CPU time only while it
    imports: the template lives on), for its workers to share. Raises when the bundle does not import."""
    global _template
    _silence_standard_streams()
    _limit_memory(limits)
    cpu_soft, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
    importing = limits.cpu_seconds if cpu_hard == resource.RLIM_INFINITY else min(limits.cpu_seconds, cpu_hard)
    resource.setrlimit(resource.RLIMIT_CPU, (min(importing, cpu_soft), cpu_hard))
    printed: list[tuple[str, LogLevel]] = []
    sys.stdout = _LineStream(lambda line: printed.append((line, "info")))
    sys.stderr = _LineStream(lambda line: printed.append((line, "error")))
    root = Path(bundle_dir).resolve()
    try:
        definitions = load_folder(root)
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_soft, cpu_hard))
    _template = _Template(bundle_dir, root, definitions, printed)


class _Failed(Exception):
    """A failure decided by the worker itself (the deployed code does not import)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


class _LineStream(io.TextIOBase):
    """What user code prints, as log lines of its operation."""

    def __init__(self, sink: Callable[[str], None]) -> None:
        self._sink = sink
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            if line:
                self._sink(line)
        return len(text)

    def flush(self) -> None:
        if self._pending:
            line, self._pending = self._pending, ""
            self._sink(line)


def _silence_standard_streams() -> None:
    # C-level writes of user code (and of libraries it loads) must not reach the runner's output
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)


def _limit_memory(limits: Limits) -> None:
    memory = limits.memory_mb * MB
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    ceiling = memory + _HEADROOM if hard == resource.RLIM_INFINITY else min(memory + _HEADROOM, hard)
    resource.setrlimit(resource.RLIMIT_AS, (min(memory, ceiling), ceiling))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _apply_limits(limits: Limits) -> None:
    _limit_memory(limits)
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    cpu_hard = limits.cpu_seconds + 1 if hard == resource.RLIM_INFINITY else min(limits.cpu_seconds + 1, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (min(limits.cpu_seconds, cpu_hard), cpu_hard))


def _release_headroom() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))


def _memory_exhausted(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, MemoryError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _within(filename: str, root: Path) -> bool:
    try:
        Path(filename).resolve().relative_to(root)
    except ValueError:
        return False
    return True


def _traceback(exc: BaseException, root: Path) -> str:
    """The traceback from the function's own first frame down (the worker's frames say nothing)."""
    summary = traceback.TracebackException.from_exception(exc)
    frames = list(summary.stack)
    first = next((i for i, f in enumerate(frames) if _within(f.filename, root)), 0)
    summary.stack = traceback.StackSummary.from_list(frames[first:])
    return "".join(summary.format())


def _upstream(error: HTTPError) -> dict[str, Any]:
    response = error.response
    body: Any = response.content[:_UPSTREAM_BODY_LIMIT].decode("utf-8", "replace")
    with contextlib.suppress(ValueError):
        body = response.json() if len(response.content) <= _UPSTREAM_BODY_LIMIT else body
    return {"status": response.status_code, "headers": dict(response.headers), "body": _json_safe(body)}


def _failure(exc: BaseException, limits: Limits) -> Failure:
    if isinstance(exc, _Failed):
        return exc.failure
    if isinstance(exc, InvalidInput):
        return Failure(ErrorType.INVALID_INPUT, str(exc), 400, payload=exc.errors)
    if isinstance(exc, InvalidOutput):
        return Failure(ErrorType.INVALID_OUTPUT, str(exc), payload=exc.errors)
    if isinstance(exc, FunctionNotFound):
        return Failure(ErrorType.SCRIPT, str(exc))
    if _memory_exhausted(exc):
        return Failure(ErrorType.MEMORY, f"the function exceeded its memory limit ({limits.memory_mb} MB)")
    if isinstance(exc, ActionError):
        return Failure(ErrorType.ACTION, str(exc)[:_MESSAGE_LIMIT], 500, payload=_json_safe(exc.payload))
    if isinstance(exc, HTTPError):
        return Failure(ErrorType.HTTP, str(exc)[:_MESSAGE_LIMIT], 424, upstream=_upstream(exc))
    if isinstance(exc, SystemExit):
        return Failure(ErrorType.SCRIPT, "the function called exit()")
    return Failure(ErrorType.SCRIPT, f"{type(exc).__name__}: {exc}"[:_MESSAGE_LIMIT])


def _context(task: RunTask) -> TaskContext:
    return TaskContext(
        function_name=task.function_name,
        function_type=_FUNCTION_TYPES[task.function_type],
        environment_id=task.environment_id,
        environment_name=task.environment_name,
        nango_connection_id=task.nango_connection_id,
        connection_id=task.connection_id,
        provider_config_key=task.provider_config_key,
        provider=task.provider,
        task_id=task.task_id,
        activity_log_id=task.activity_log_id,
        sync_id=task.sync_id,
        sync_job_id=task.sync_job_id,
        variant=task.variant,
        last_sync_date=task.last_sync_date,
        track_deletes=task.track_deletes,
        reconcile=task.reconcile,
        attempt=task.attempt,
        debug=task.debug,
        end_user=task.end_user,
    )


def _bundle_root(bundle_dir: str) -> Path:
    """The bundle's folder, resolved: the template's, when it imported this very folder (bundle folders are
    named by their hash; resolving afresh costs each task a quarter of a millisecond)."""
    template = _template
    if template is not None and template.bundle_dir == bundle_dir:
        return template.root
    return Path(bundle_dir).resolve()


def _imported(root: Path, nango: Nango) -> list[FunctionDefinition]:
    """The bundle's functions: from the template this worker was forked from, else imported now."""
    template = _template
    if template is None or template.root != root:
        return load_folder(root)
    for line, level in template.printed:
        nango.write_log(LogLine(line, level))
    return template.definitions


async def _run(
    task: RunTask, root: Path, fd: int, prepared: _Prepared, backend_type: type[GrpcBackend] = GrpcBackend
) -> TaskOutcome:
    backend = backend_type(
        task,
        persist_url=prepared.config.persist_url,
        server_url=prepared.config.server_url,
        catalog=prepared.catalog,
        policy=prepared.policy,
        pool=prepared.config.pool,
        override_enabled=prepared.config.override_enabled,
    )

    def changed(model: str, counts: ModelCounts) -> None:
        write_blocking(fd, frame(RecordsChanged(model, counts.added, counts.updated, counts.deleted)))

    nango = Nango(_context(task), backend, on_records_changed=changed)
    backend.on_log = nango.write_log

    def printed(level: LogLevel) -> Callable[[str], None]:
        return lambda line: nango.write_log(LogLine(line, level))

    sys.stdout = _LineStream(printed("info"))
    sys.stderr = _LineStream(printed("error"))
    output_json: bytes | None = None
    failure: Failure | None = None
    try:
        try:
            definitions = _imported(root, nango)
        except BundleLoadError as exc:
            raise _Failed(Failure(ErrorType.SCRIPT, f"the deployed code does not import: {exc}")) from None
        run_type = nango.context.function_type
        nango.definition = find_function(definitions, task.function_name, run_type)
        output_json = await execute(nango.definition, nango, run_type, task.input_json)
    except BaseException as exc:
        if _memory_exhausted(exc):
            _release_headroom()
        failure = _failure(exc, task.limits)
        expected = _Failed | ActionError | InvalidInput | InvalidOutput | FunctionNotFound
        detail = None if isinstance(exc, expected) else _traceback(exc, root)
        text = f"{failure.type}: {failure.message}" + (f"\n{detail}" if detail else "")
        error = {"type": type(exc).__name__, "message": failure.message}
        nango.write_log(LogLine(text, "error", error=error if detail is None else {**error, "stack": detail}))
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        # the outcome is reported even when its log lines cannot be delivered
        with contextlib.suppress(Exception):
            await nango.finish()
        with contextlib.suppress(Exception):
            await backend.close()
    # built once, whole (dataclasses.replace costs a fresh worker ~0.1 ms a call)
    return TaskOutcome(
        output_json=output_json,
        failure=failure,
        proxy_calls=nango.proxy_calls,
        log_messages=nango.log_messages,
        maxrss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    )


def _inspect(message: InspectBundle) -> InspectOutcome:
    workdir = Path(tempfile.mkdtemp(prefix="nango-inspect-"))
    try:
        _apply_limits(message.limits)
        root = workdir / "bundle"
        unpack(message.bundle_zip, root, message.max_unpacked_bytes)
        definitions = load_folder(root)
        if not definitions:
            return InspectOutcome(error="the bundle declares no function (no @sync, @action or @on_event)")
        return InspectOutcome(specs=_json_safe([d.spec() for d in definitions]))
    except InvalidBundle as exc:
        return InspectOutcome(error=exc.message)
    except BundleLoadError as exc:
        return InspectOutcome(error=str(exc))
    except BaseException as exc:
        if _memory_exhausted(exc):
            _release_headroom()
            return InspectOutcome(
                error=f"importing the bundle exceeded the memory limit ({message.limits.memory_mb} MB)"
            )
        return InspectOutcome(error=describe(exc, workdir / "bundle"))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(fd: int) -> int:
    """A forked worker's life: read the task, run it, send the outcome. Returns the exit code."""
    prepared = _prepared
    if prepared is None:
        return 70
    os.set_blocking(fd, True)
    message = read_blocking(fd)
    _silence_standard_streams()
    outcome: TaskOutcome | InspectOutcome
    if isinstance(message, RunTask):
        _apply_limits(message.limits)
        # no loop teardown: the process exits once the outcome is sent, and what the function left running
        # could not reach the platform anyway (its SDK is finished and its clients closed)
        loop = uvloop.new_event_loop()
        outcome = loop.run_until_complete(_run(message, _bundle_root(message.bundle_dir), fd, prepared))
    elif isinstance(message, InspectBundle):
        outcome = _inspect(message)
    else:
        return 70
    write_blocking(fd, frame(outcome))
    os.close(fd)
    return 0


__all__ = ["load_template", "main", "prepare"]
