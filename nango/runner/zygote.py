"""The zygote: a warm parent that every worker process is forked from.

The runner starts it as a fresh interpreter (never forked from the runner, whose gRPC threads must
not be copied). It imports the worker (the SDK, grpc, pydantic, aiohttp), loads the provider catalog,
runs a no-op action through a task's code path a few times (so workers start with that code specialised
and its caches filled, instead of copying the pages they would write), freezes the heap so forked children
share it, and then forks one worker per request. It creates no thread and no gRPC channel, so a fork is
safe and takes about a millisecond.

A template is a child of the zygote that has imported one bundle (under the task limits, its output
kept to replay into each task's log) and then serves the same protocol on its own control socket, so
workers forked from it start with the bundle imported. A bundle whose import fails or leaves a thread
running or a file or socket open gets no template (`{"op": "unfit", "why"}` instead of ready): its tasks
import it themselves.

Protocol on the control socket (SOCK_SEQPACKET, one JSON object per message):
runner -> zygote: `{"op": "spawn", "id": n}` with the worker's socket attached (SCM_RIGHTS),
`{"op": "template", "id": n, "bundle_dir", "memory_mb", "cpu_seconds"}` with the template's control
socket attached (zygote only), or `{"op": "kill", "pid": p}`; zygote -> runner: `{"op": "ready"}`,
`{"op": "unfit", "why"}`, `{"op": "spawned", "id", "pid"}`,
`{"op": "exited", "pid", "status", "maxrss_kb", "cpu_seconds"}`. The zygote reaps its children, so a
pid it kills is always still its own. When the runner goes away (end of stream) it kills every worker
and exits.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import ctypes.util
import gc
import json
import os
import pickle
import select
import signal
import socket
import sys
from typing import Any

MAX_MESSAGE = 64 * 1024
_PR_SET_DUMPABLE = 4
_M_ARENA_MAX = -8


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None


def harden_process() -> None:
    """Make this process undumpable: another process of the same user can then neither ptrace it
    nor read its /proc memory and environment (workers run customer code under our uid)."""
    libc = _libc()
    if libc is not None and sys.platform.startswith("linux"):
        libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


def _limit_malloc_arenas() -> None:
    # glibc reserves 64 MB of address space per thread arena; RLIMIT_AS counts it, grpc starts threads
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(_M_ARENA_MAX, 2)


class _Zygote:
    def __init__(self, control: socket.socket, *, templates: bool) -> None:
        self.control = control
        # only the zygote forks templates: a template's heap holds a customer's bundle
        self.templates = templates
        self.live: set[int] = set()
        # the runner closed its end: nobody is left to tell, every worker is stopped
        self.runner_gone = False
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def send(self, message: dict[str, Any]) -> None:
        if self.runner_gone:
            return
        try:
            self.control.sendall(json.dumps(message).encode())
        except OSError:  # BrokenPipeError, ConnectionResetError: the runner went away
            self.runner_gone = True

    def serve(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
        signal.set_wakeup_fd(self.wake_w)
        poller = select.poll()
        poller.register(self.control, select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        self.send({"op": "ready"})
        while True:
            for fd, _events in poller.poll():
                if fd == self.wake_r:
                    while True:
                        try:
                            if not os.read(self.wake_r, 4096):
                                break
                        except BlockingIOError:
                            break
                elif not self._read_requests():
                    self.runner_gone = True
            self._reap()
            if self.runner_gone:
                self._kill_all()
                return

    def _read_requests(self) -> bool:
        """Handle every queued request; False when the runner went away."""
        while True:
            try:
                data, ancillary, _flags, _addr = self.control.recvmsg(
                    MAX_MESSAGE, socket.CMSG_SPACE(array.array("i").itemsize), socket.MSG_DONTWAIT
                )
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not data:
                return False
            fds = [
                fd
                for level, kind, payload in ancillary
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
                for fd in array.array("i", payload[: len(payload) - len(payload) % 4])
            ]
            request = json.loads(data)
            forks = request["op"] == "spawn" or (request["op"] == "template" and self.templates)
            if forks and fds:
                self._spawn(request, fds[0])
            elif request["op"] == "kill":
                self._kill(int(request["pid"]))
            for fd in fds[1:] if forks else fds:
                os.close(fd)

    def _spawn(self, request: dict[str, Any], fd: int) -> None:
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                self.control.close()
                signal.set_wakeup_fd(-1)
                os.close(self.wake_r)
                os.close(self.wake_w)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                os.setpgid(0, 0)
                if request["op"] == "template":
                    code = _template(socket.socket(fileno=fd), request)
                else:
                    from nango.runner import worker

                    code = worker.main(fd)
            finally:
                os._exit(code)
        os.close(fd)
        self.live.add(pid)
        self.send({"op": "spawned", "id": int(request["id"]), "pid": pid})

    def _kill(self, pid: int) -> None:
        if pid not in self.live:
            return
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            # the worker may not have made its process group yet
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _kill_all(self) -> None:
        for pid in list(self.live):
            self._kill(pid)
        while self.live:
            try:
                pid, _status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            self.live.discard(pid)

    def _reap(self) -> None:
        while self.live:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                self.live.clear()
                return
            if pid == 0:
                return
            self.live.discard(pid)
            self.send(
                {
                    "op": "exited",
                    "pid": pid,
                    "status": status,
                    "maxrss_kb": usage.ru_maxrss,
                    "cpu_seconds": usage.ru_utime + usage.ru_stime,
                }
            )


def _open_fds() -> set[int]:
    """The file descriptors open in this process."""
    listed = {int(name) for name in os.listdir("/proc/self/fd")}
    open_now: set[int] = set()
    for fd in listed:
        # the listing's own descriptor is closed by now
        with contextlib.suppress(OSError):
            os.fstat(fd)
            open_now.add(fd)
    return open_now


def _unfit(control: socket.socket, why: str) -> int:
    control.sendall(json.dumps({"op": "unfit", "why": why[:500]}).encode())
    return 0


def _template(control: socket.socket, request: dict[str, Any]) -> int:
    """A template's life: import the bundle, then fork a worker per request until the runner lets go."""
    from nango.runner import worker
    from nango.runner.wire import Limits

    if not os.path.isdir("/proc/self/task"):
        return _unfit(control, "this system does not show a process's threads and files")
    before = _open_fds()
    try:
        worker.load_template(request["bundle_dir"], Limits(int(request["memory_mb"]), int(request["cpu_seconds"])))
    except BaseException as exc:
        return _unfit(control, f"{type(exc).__name__}: {exc}")
    # what a fork copies badly: a thread's locks without the thread, a socket or file every worker would share
    if len(os.listdir("/proc/self/task")) > 1:
        return _unfit(control, "importing the bundle starts a thread")
    if _open_fds() - before:
        return _unfit(control, "importing the bundle leaves a file or socket open")
    gc.collect()
    gc.freeze()
    _Zygote(control, templates=False).serve()
    return 0


def main() -> None:
    """Entry point: `python -c 'from nango.runner.zygote import main; main()' <control fd>`."""
    control = socket.socket(fileno=int(sys.argv[1]))
    config = pickle.loads(control.recv(MAX_MESSAGE))  # noqa: S301 - sent by the runner that started us
    harden_process()
    _limit_malloc_arenas()
    from nango.runner import worker

    worker.prepare(config)
    gc.collect()
    # objects alive now are shared with every child: keep the collector from touching (copying) them
    gc.freeze()
    _Zygote(control, templates=True).serve()


__all__ = ["harden_process", "main"]
