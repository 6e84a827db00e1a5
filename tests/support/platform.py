"""`nango up` as a user starts it, for end-to-end and compatibility tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.conftest import free_port

BIN = Path(sys.executable).parent
GRPC_PORTS = (
    "NANGO_SERVER_GRPC_PORT",
    "NANGO_ORCHESTRATOR_PORT",
    "NANGO_JOBS_PORT",
    "NANGO_RUNNER_PORT",
    "NANGO_PERSIST_PORT",
)


def platform_environment(data_dir: Path, ports: dict[str, int], extra: dict[str, str] | None = None) -> dict[str, str]:
    """The user's environment minus any platform setting of this machine, plus ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NANGO_", "ORCHESTRATOR_", "RECORDS_", "JOBS_"))}
    env.update({k: str(v) for k, v in ports.items()})
    env.update(NANGO_DATA_DIR=str(data_dir), NANGO_BIND_HOST="127.0.0.1", NANGO_STARTUP_TIMEOUT_SECONDS="120")
    # test token servers and providers listen on 127.0.0.1, which token requests refuse by default
    env["NANGO_OUTBOUND_URL_POLICY_OAUTH"] = '{"blockLoopback": false}'
    env.update(extra or {})
    return env


@dataclass
class Up:
    process: subprocess.Popen[bytes]
    output: Path
    ports: dict[str, int]
    data_dir: Path
    dev_key: str = ""
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports['SERVER_PORT']}"

    @property
    def connect_ui(self) -> str:
        return f"http://127.0.0.1:{self.ports['NANGO_CONNECT_UI_PORT']}"

    @property
    def internal_token(self) -> str:
        """The token the services accept from each other (nango up writes it to the data directory)."""
        return (self.data_dir / "internal.token").read_text().strip()

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.text())
            if match:
                return match
            if self.process.poll() is not None:
                raise AssertionError(f"nango up exited with {self.process.returncode}:\n{self.text()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} not seen in {timeout}s:\n{self.text()[-3000:]}")

    def wait_ready(self) -> Up:
        self.dev_key = self.wait_for(r"dev secret key\s+([0-9a-f-]{36})").group(1)
        return self

    def stop(self) -> int:
        if self.process.poll() is not None:
            return self.process.returncode
        children = psutil.Process(self.process.pid).children(recursive=True)
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(60)
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"left running: {[p.pid for p in alive]}"
        return code


def start_up(
    tmp: Path, *, ports: dict[str, int] | None = None, extra_env: dict[str, str] | None = None, name: str = "up"
) -> Up:
    ports = ports or {"SERVER_PORT": free_port(), **{p: free_port() for p in GRPC_PORTS}}
    # Connect UI too gets a free port unless the caller chose one (never the fixed 3009)
    ports = {"NANGO_CONNECT_UI_PORT": free_port(), **ports}
    data_dir = tmp / "data"
    output = tmp / f"{name}-{time.monotonic_ns()}.log"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [str(BIN / "nango"), "up"],
            env=platform_environment(data_dir, ports, extra_env),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return Up(process, output, ports, data_dir)
