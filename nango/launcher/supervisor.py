"""Child processes of `nango up`: started, watched, restarted when they crash, stopped in order."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # A child must not outlive a launcher that was killed with SIGKILL.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    env: dict[str, str]
    healthy: Callable[[], Awaitable[bool]]
    process: asyncio.subprocess.Process | None = None
    restarts: deque[float] = field(default_factory=deque)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            f"nango.{self.name}",
            env=self.env,
            start_new_session=True,  # Ctrl-C reaches the launcher only; it stops children in order
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )

    async def stop(self, grace: float) -> int | None:
        process = self.process
        if process is None or process.returncode is not None:
            return process.returncode if process else None
        process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(process.wait(), grace + 5)
        except TimeoutError:
            log.warning("service did not stop in time, killing it", extra={"service": self.name})
            process.kill()
            return await process.wait()


class GaveUp(Exception):
    """A service kept crashing."""


class Supervisor:
    """Restarts a crashed child with back-off; more than `max_restarts` crashes within `window`
    seconds means something is wrong that a restart will not fix, and the whole platform stops."""

    def __init__(self, children: list[Child], *, max_restarts: int = 5, window: float = 60.0) -> None:
        self.children = children
        self.max_restarts = max_restarts
        self.window = window
        self.stopping = False

    async def start_all(self) -> None:
        await asyncio.gather(*(child.start() for child in self.children))

    async def wait_healthy(self, timeout: float) -> list[str]:
        """Wait until every child is healthy; returns the names of those that are not by `timeout`."""
        deadline = time.monotonic() + timeout
        pending = list(self.children)
        while pending and time.monotonic() < deadline:
            for child in list(pending):
                if child.process is not None and child.process.returncode is not None:
                    return [f"{child.name} (exited with code {child.process.returncode})"]
                if await child.healthy():
                    pending.remove(child)
            if pending:
                await asyncio.sleep(0.1)
        return [child.name for child in pending]

    async def watch(self) -> None:
        """Return only when a child crashed too often (raises GaveUp) or stop_all() was called."""
        waits = {asyncio.ensure_future(self._wait(c)): c for c in self.children}
        while waits and not self.stopping:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for finished in done:
                child = waits.pop(finished)
                if self.stopping:
                    continue
                code = finished.result()
                now = time.monotonic()
                child.restarts.append(now)
                while child.restarts and child.restarts[0] < now - self.window:
                    child.restarts.popleft()
                if len(child.restarts) > self.max_restarts:
                    for pending in waits:
                        pending.cancel()
                    raise GaveUp(
                        f"{child.name} exited with code {code} {len(child.restarts)} times in {self.window:.0f}s"
                    )
                delay = min(0.5 * 2 ** (len(child.restarts) - 1), 10.0)
                log.error(
                    "service exited, restarting",
                    extra={"service": child.name, "code": code, "in_seconds": delay},
                )
                await asyncio.sleep(delay)
                if self.stopping:
                    continue
                await child.start()
                waits[asyncio.ensure_future(self._wait(child))] = child
        for pending in waits:
            pending.cancel()

    @staticmethod
    async def _wait(child: Child) -> int:
        assert child.process is not None
        return await child.process.wait()

    async def stop_all(self, grace: float) -> dict[str, int | None]:
        self.stopping = True
        codes = await asyncio.gather(*(child.stop(grace) for child in self.children))
        return {child.name: code for child, code in zip(self.children, codes, strict=True)}
