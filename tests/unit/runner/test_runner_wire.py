"""The worker's side of a task socket: frames read and written by file descriptor, blocking."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from nango.runner.wire import Failure, Limits, RunTask, TaskOutcome, WireError, frame, read_blocking, write_blocking


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield ours, theirs
    ours.close()
    theirs.close()


def task(input_json: bytes = b"{}") -> RunTask:
    return RunTask(
        task_id="t-1",
        function_name="noop",
        function_type="action",
        bundle_dir="/bundles/abc",
        limits=Limits(256, 30),
        task_token="token",
        environment_id=1,
        environment_name="dev",
        nango_connection_id=2,
        connection_id="c",
        provider_config_key="github",
        provider="github",
        input_json=input_json,
    )


def test_frames_larger_than_the_socket_buffer_go_through_whole(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    # several MB: a single write takes only part of it, the rest must follow
    big = task(b'"' + b"x" * (8 * 1024 * 1024) + b'"')
    outcome = TaskOutcome(output_json=b"null", failure=Failure("script", "boom"), proxy_calls=3, maxrss_kb=7)

    def write() -> None:
        try:
            write_blocking(theirs.fileno(), frame(big) + frame(outcome))
        finally:
            # a write that stopped short shows as a frame cut short, not as a reader waiting forever
            theirs.close()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert read_blocking(ours.fileno()) == big
        assert read_blocking(ours.fileno()) == outcome
    finally:
        writer.join(10)


def test_end_of_stream_is_a_wire_error(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    theirs.close()
    with pytest.raises(WireError):
        read_blocking(ours.fileno())


def test_a_frame_cut_short_is_a_wire_error(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    data = frame(task())
    write_blocking(theirs.fileno(), data[: len(data) - 5])
    theirs.close()
    with pytest.raises(WireError):
        read_blocking(ours.fileno())
