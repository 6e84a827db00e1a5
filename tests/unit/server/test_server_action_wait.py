"""Waiting for a synchronous action while its caller may leave: the wait stops, and the orchestrator call
that creates the task is never cut short (the task is created and runs on)."""

from __future__ import annotations

import asyncio

import pytest

from nango.server import actions
from nango.server.actions import CallerGone


@pytest.fixture(autouse=True)
def quick_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(actions, "DISCONNECT_CHECK_SECONDS", 0.01)


async def test_a_caller_that_leaves_stops_waiting_but_a_create_call_runs_to_its_end() -> None:
    release, finished = asyncio.Event(), asyncio.Event()

    async def create_and_wait() -> str:
        await release.wait()
        finished.set()
        return "created"

    with pytest.raises(CallerGone):
        await actions._unless_disconnected(create_and_wait(), lambda: True, cancel=False)  # type: ignore[arg-type]
    release.set()
    await asyncio.wait_for(finished.wait(), 1)


async def test_a_plain_wait_is_cancelled_when_its_caller_leaves() -> None:
    cancelled = asyncio.Event()

    async def long_poll() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "ended"

    with pytest.raises(CallerGone):
        await actions._unless_disconnected(long_poll(), lambda: True)  # type: ignore[arg-type]
    await asyncio.wait_for(cancelled.wait(), 1)


async def test_a_caller_that_stays_gets_the_result() -> None:
    async def quick() -> str:
        await asyncio.sleep(0.03)
        return "ended"

    assert await actions._unless_disconnected(quick(), lambda: False, cancel=False) == "ended"  # type: ignore[arg-type]
