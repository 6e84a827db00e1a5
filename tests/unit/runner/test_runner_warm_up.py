"""The zygote's warm-up: a no-op action through a task's code path, leaving nothing behind."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

import pytest
import uvloop

from nango.outbound import PoolSettings, server_policy
from nango.providers import load_catalog
from nango.runner import worker
from nango.runner.wire import Limits, RunTask, TaskOutcome, WorkerConfig
from nango.sdk.definitions import action, clear_registry, registered

CONFIG = WorkerConfig("127.0.0.1:1", "127.0.0.1:2", None, None, None, False, PoolSettings())


@pytest.fixture(scope="module")
def prepared() -> Any:
    return worker._Prepared(CONFIG, load_catalog(None), server_policy(None, None))


def open_fds() -> set[int]:
    return set(os.listdir("/proc/self/fd"))


def test_it_runs_the_action_to_its_outcome_and_leaves_nothing_behind(
    prepared: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcomes: list[TaskOutcome] = []
    run = worker._run

    async def recorded(*args: Any) -> TaskOutcome:
        outcome = await run(*args)
        outcomes.append(outcome)
        return outcome

    monkeypatch.setattr(worker, "_run", recorded)
    clear_registry()
    # libuv keeps one pipe per process from its first loop on (made again in each child after a fork)
    uvloop.new_event_loop().close()
    fds, threads, streams = open_fds(), threading.active_count(), (sys.stdout, sys.stderr)
    template = worker._template

    worker._warm_up(prepared)

    assert len(outcomes) == worker._WARM_UP_RUNS
    assert all(o.output_json == b"null" and o.failure is None for o in outcomes)
    assert open_fds() == fds
    assert threading.active_count() == threads
    assert (sys.stdout, sys.stderr) == streams
    assert worker._template is template
    assert registered() == []
    # the loops put the signal wakeup descriptor back
    assert signal.set_wakeup_fd(-1) == -1


def test_it_leaves_a_registry_that_holds_a_bundles_functions_alone(
    prepared: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[object] = []
    monkeypatch.setattr(worker, "_run", lambda *args: calls.append(args))
    clear_registry()

    @action(description="a bundle's")
    async def mine(nango: Any) -> None:
        return None

    try:
        before = registered()
        worker._warm_up(prepared)
        assert registered() == before
        assert calls == []
    finally:
        clear_registry()


def test_its_backend_opens_no_channel_nor_pool() -> None:
    task = RunTask("t", "f", "action", "/b", Limits(1, 1), "", 1, "", 1, "c", "p", "")
    backend = worker._WarmUpBackend(
        task,
        persist_url="127.0.0.1:1",
        server_url="127.0.0.1:2",
        catalog=load_catalog(None),
        policy=server_policy(None, None),
        pool=PoolSettings(),
        override_enabled=False,
    )
    for client in ("persist", "server", "engine"):
        with pytest.raises(RuntimeError):
            getattr(backend, client)
