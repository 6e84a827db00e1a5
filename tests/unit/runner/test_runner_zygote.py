"""The zygote when its runner is gone: a worker's exit it cannot report stops it quietly, workers and all.

The scenario runs in a forked process of its own, as the zygote does: it waits for any child, which in
the test process would reap other fixtures' children."""

from __future__ import annotations

import os
import socket
import time
import traceback

from nango.runner.zygote import _Zygote


def _child(seconds: float) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        time.sleep(seconds)
        os._exit(0)
    return pid


def _scenario() -> int:
    # forked before the socket pair exists, as the zygote's workers hold no end of it
    exited, lingering = _child(0.0), _child(30.0)
    runner, control = socket.socketpair()
    zygote = _Zygote(control, templates=False)
    zygote.live.update({exited, lingering})
    runner.close()
    deadline = time.monotonic() + 5
    while exited in zygote.live and time.monotonic() < deadline:
        zygote._reap()  # the exit cannot be reported: this used to raise BrokenPipeError
        time.sleep(0.01)
    if exited in zygote.live or not zygote.runner_gone:
        return 2
    # what serve() then does: every worker left is stopped and reaped
    zygote._kill_all()
    return 0 if zygote.live == set() else 3


def test_a_worker_exit_after_the_runner_left_is_not_a_crash() -> None:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the zygote's stand-in process
        code = 1
        try:
            code = _scenario()
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError("the zygote scenario did not end")
