"""The runner's side of the zygote: start it, ask it for workers, kill them, learn how they ended."""

from __future__ import annotations

import array
import asyncio
import contextlib
import itertools
import json
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nango.errors import ServiceUnavailable
from nango.runner.wire import Limits, WorkerConfig, frame
from nango.runner.zygote import MAX_MESSAGE

log = logging.getLogger(__name__)

# the zygote runs customer code's parent: it gets no secret from our environment
_KEPT_ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH", "TMPDIR")
_START_TIMEOUT = 60.0
_SPAWN_TIMEOUT = 10.0


@dataclass(frozen=True)
class ExitStatus:
    """How a worker ended, as `wait4` saw it (the zygote is its parent)."""

    status: int
    maxrss_kb: int = 0
    cpu_seconds: float = 0.0
    # the zygote died before it could tell
    unknown: bool = False

    @property
    def signal(self) -> int | None:
        return os.WTERMSIG(self.status) if not self.unknown and os.WIFSIGNALED(self.status) else None

    @property
    def code(self) -> int | None:
        return os.WEXITSTATUS(self.status) if not self.unknown and os.WIFEXITED(self.status) else None

    def describe(self) -> str:
        if self.unknown:
            return "ended while the runner lost track of it"
        if self.signal is not None:
            return f"was killed by {signal.Signals(self.signal).name}"
        return f"exited with code {self.code}"


class Worker:
    """One forked worker: its task socket (as asyncio streams) and how it ended."""

    def __init__(
        self,
        zygote: _Parent,
        pid: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        exited: asyncio.Future[ExitStatus],
    ) -> None:
        self.zygote = zygote
        self.pid = pid
        self.reader = reader
        self.writer = writer
        self.exited = exited

    async def send(self, message: object) -> None:
        self.writer.write(frame(message))
        await self.writer.drain()

    def kill(self) -> None:
        if not self.exited.done():
            self.zygote.kill(self.pid)

    async def wait(self, timeout: float) -> ExitStatus:
        """How the worker ended; killed if it has not ended within `timeout` seconds."""
        try:
            return await asyncio.wait_for(asyncio.shield(self.exited), timeout)
        except TimeoutError:
            self.kill()
            return await asyncio.wait_for(asyncio.shield(self.exited), _SPAWN_TIMEOUT)

    def close(self) -> None:
        self.writer.close()


def _zygote_environment() -> dict[str, str]:
    kept = {name: os.environ[name] for name in _KEPT_ENVIRONMENT if name in os.environ}
    # the heap on transparent huge pages: fork+exit of the zygote copies and frees far fewer page-table
    # entries (6.7 -> 3.4 ms measured); ignored where THP is off or glibc is older than 2.35
    tunables = [t for t in os.environ.get("GLIBC_TUNABLES", "").split(":") if t]
    kept["GLIBC_TUNABLES"] = ":".join([*tunables, "glibc.malloc.hugetlb=1"])
    kept["PYTHONMALLOC"] = "malloc"
    return kept


class TemplateUnfit(Exception):
    """The bundle gets no template: it does not import, starts a thread, or took too long."""


class _Parent:
    """A process that forks workers on request over a control socket (the zygote or a template),
    driven from the event loop. Started again on the next spawn if it dies; the workers it leaves
    behind are killed and reported as ended."""

    def __init__(self) -> None:
        self._control: socket.socket | None = None
        self._ready: asyncio.Future[None] | None = None
        self._spawning: dict[int, asyncio.Future[int]] = {}
        self._exits: dict[int, asyncio.Future[ExitStatus]] = {}
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()

    @property
    def running(self) -> bool:
        return self._control is not None

    @property
    def busy(self) -> bool:
        """Starting, or some worker of it has not ended yet."""
        return self._lock.locked() or bool(self._spawning) or bool(self._exits)

    async def start(self) -> None:
        async with self._lock:
            if self._control is None:
                await self._start()

    async def _start(self) -> None:
        raise NotImplementedError

    def _end_process(self) -> None:
        """Make sure the process is gone (it stopped talking)."""
        raise NotImplementedError

    def _connect(self, control: socket.socket) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        control.setblocking(False)
        self._control = control
        self._ready = ready = loop.create_future()
        loop.add_reader(control, self._on_readable)
        return ready

    def _on_readable(self) -> None:
        control = self._control
        if control is None:
            return
        while True:
            try:
                data = control.recv(MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._lost("stopped")
                return
            self._handle(json.loads(data))

    def _handle(self, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "ready" and self._ready is not None and not self._ready.done():
            self._ready.set_result(None)
        elif op == "unfit" and self._ready is not None and not self._ready.done():
            self._ready.set_exception(TemplateUnfit(str(message["why"])))
        elif op == "spawned":
            pid = int(message["pid"])
            # registered before anyone awaits the spawn: the exit may be the very next message
            self._exits[pid] = asyncio.get_running_loop().create_future()
            waiter = self._spawning.pop(int(message["id"]), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(pid)
            else:
                self.kill(pid)
        elif op == "exited":
            exited = self._exits.pop(int(message["pid"]), None)
            if exited is not None and not exited.done():
                exited.set_result(
                    ExitStatus(int(message["status"]), int(message["maxrss_kb"]), float(message["cpu_seconds"]))
                )

    def _lost(self, why: str) -> None:
        """The process is gone: fail what waits on it, and kill its orphaned workers ourselves."""
        control, self._control = self._control, None
        if control is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(control)
            control.close()
        self._end_process()
        for waiter in self._spawning.values():
            if not waiter.done():
                waiter.set_exception(ServiceUnavailable(f"the runner's {self} stopped"))
        self._spawning.clear()
        for pid, exited in self._exits.items():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            if not exited.done():
                exited.set_result(ExitStatus(0, unknown=True))
        self._exits.clear()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(ServiceUnavailable(f"the runner's {self} {why}"))
        log.warning("%s %s", self, why)

    def _send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        control = self._control
        if control is None:
            raise ServiceUnavailable(f"the runner's {self} is not running")
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        try:
            control.sendmsg([json.dumps(message).encode()], ancillary)
        except BlockingIOError:
            # a seqpacket buffer holds thousands of requests: full means the process is stuck
            self._lost("stopped reading requests")
            raise ServiceUnavailable(f"the runner's {self} is not responding") from None
        except OSError:
            self._lost("went away")
            raise ServiceUnavailable(f"the runner's {self} went away") from None

    async def _fork(self, message: dict[str, Any], theirs: socket.socket) -> int:
        """Send a request that forks a child handed `theirs`; the child's pid."""
        request_id = next(self._ids)
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._spawning[request_id] = waiter
        try:
            self._send({**message, "id": request_id}, [theirs.fileno()])
        except BaseException:
            self._spawning.pop(request_id, None)
            raise
        finally:
            theirs.close()
        try:
            return await asyncio.wait_for(waiter, _SPAWN_TIMEOUT)
        except BaseException:
            self._spawning.pop(request_id, None)
            raise

    async def spawn(self) -> Worker:
        """A new worker process, connected by a fresh socket pair."""
        if self._control is None:
            await self.start()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            pid = await self._fork({"op": "spawn"}, theirs)
        except BaseException:
            ours.close()
            raise
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=1 << 20)
        return Worker(self, pid, reader, writer, self._exits[pid])

    def kill(self, pid: int) -> None:
        with contextlib.suppress(ServiceUnavailable):
            self._send({"op": "kill", "pid": pid})

    def close(self) -> None:
        """Close the control socket: the process kills every worker of its own and exits."""
        control, self._control = self._control, None
        if control is not None:
            asyncio.get_running_loop().remove_reader(control)
            control.close()
        for exited in self._exits.values():
            if not exited.done():
                exited.set_result(ExitStatus(0, unknown=True))
        self._exits.clear()


class Zygote(_Parent):
    """The zygote process and its control socket."""

    def __init__(self, config: WorkerConfig) -> None:
        super().__init__()
        self.config = config
        self._process: subprocess.Popen[bytes] | None = None

    def __str__(self) -> str:
        return "zygote"

    async def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._process = subprocess.Popen(  # noqa: ASYNC220 - one fork+exec at start, not per task
                [sys.executable, "-c", "from nango.runner.zygote import main; main()", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                env=_zygote_environment(),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            theirs.close()
        ours.sendall(pickle.dumps(self.config))
        ready = self._connect(ours)
        try:
            await asyncio.wait_for(asyncio.shield(ready), _START_TIMEOUT)
        except TimeoutError:
            self._lost("did not start in time")
            raise ServiceUnavailable("the runner's zygote did not start") from None
        log.info("zygote ready", extra={"pid": self._process.pid})

    def _end_process(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(5)

    async def fork_template(self, bundle_dir: str, limits: Limits, theirs: socket.socket) -> int:
        """A template process for the bundle in `bundle_dir`, controlled through `theirs`; its pid."""
        if self._control is None:
            await self.start()
        message = {"op": "template", "bundle_dir": bundle_dir, "memory_mb": limits.memory_mb}
        return await self._fork({**message, "cpu_seconds": limits.cpu_seconds}, theirs)

    async def stop(self) -> None:
        """Close the control socket: the zygote kills every worker and template, and exits."""
        process = self._process
        self.close()
        if process is not None:
            try:
                await asyncio.wait_for(asyncio.to_thread(process.wait), 10)
            except TimeoutError:
                process.kill()
                await asyncio.to_thread(process.wait)


class Template(_Parent):
    """A child of the zygote that imported one bundle and forks that bundle's workers."""

    def __init__(self, zygote: Zygote, bundle_dir: str, limits: Limits, start_timeout: float) -> None:
        super().__init__()
        self.zygote = zygote
        self.bundle_dir = bundle_dir
        self.limits = limits
        self.start_timeout = start_timeout
        self.pid: int | None = None

    def __str__(self) -> str:
        return f"template of {Path(self.bundle_dir).name[:12]}"

    async def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.pid = await self.zygote.fork_template(self.bundle_dir, self.limits, theirs)
        except BaseException:
            ours.close()
            raise
        ready = self._connect(ours)
        try:
            await asyncio.wait_for(asyncio.shield(ready), self.start_timeout)
        except TimeoutError:
            self._lost("did not import its bundle in time")
            raise TemplateUnfit(f"importing took longer than {self.start_timeout:g} s") from None
        except ServiceUnavailable as exc:
            # it ended before it was ready: the import killed it (memory, CPU, exit)
            raise TemplateUnfit(exc.message) from None
        except TemplateUnfit:
            self._lost("found the bundle unfit")
            raise

    def _end_process(self) -> None:
        if self.pid is not None:
            self.zygote.kill(self.pid)


class Templates:
    """Templates by bundle version (the SHA-256 that names its folder), at most `capacity`: the least
    recently used one with no live worker is closed first. Bundles unfit for one are remembered (as
    many again, least recently used forgotten first) and their workers forked from the zygote."""

    def __init__(self, zygote: Zygote, limits: Limits, *, capacity: int, start_timeout: float) -> None:
        self.zygote = zygote
        self.limits = limits
        self.capacity = capacity
        self.start_timeout = start_timeout
        self._templates: OrderedDict[str, Template] = OrderedDict()
        self._unfit: OrderedDict[str, str] = OrderedDict()

    async def spawn(self, bundle_dir: Path) -> Worker:
        """A worker with the bundle in `bundle_dir` imported already, or a plain one when it has no template."""
        key = bundle_dir.name
        if self.capacity == 0 or key in self._unfit:
            if key in self._unfit:
                self._unfit.move_to_end(key)
            return await self.zygote.spawn()
        template = self._templates.get(key)
        if template is None:
            template = self._templates[key] = Template(self.zygote, str(bundle_dir), self.limits, self.start_timeout)
        self._templates.move_to_end(key)
        self._evict()
        try:
            return await template.spawn()
        except TemplateUnfit as exc:
            log.info("bundle imported per task", extra={"sha256": key, "reason": str(exc)})
            if self._templates.get(key) is template:
                del self._templates[key]
            self._unfit[key] = str(exc)
            while len(self._unfit) > self.capacity:
                self._unfit.popitem(last=False)
            return await self.zygote.spawn()

    def _evict(self) -> None:
        excess = len(self._templates) - self.capacity
        # the most recently used one is about to fork a worker
        for key, template in list(self._templates.items())[:-1]:
            if excess <= 0:
                return
            if not template.busy:
                del self._templates[key]
                template.close()
                excess -= 1

    def close(self) -> None:
        for template in self._templates.values():
            template.close()
        self._templates.clear()


__all__ = ["ExitStatus", "Template", "TemplateUnfit", "Templates", "Worker", "Zygote"]
