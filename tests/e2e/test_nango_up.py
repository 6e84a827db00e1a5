"""`nango up` the way a user runs it: embedded Postgres, every service on its own port."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.support.platform import BIN, Up, platform_environment, start_up

pytestmark = pytest.mark.e2e

SERVICES = {
    "NANGO_SERVER_GRPC_PORT": "nangopb.server.v1.ServerService",
    "NANGO_ORCHESTRATOR_PORT": "nangopb.orchestrator.v1.OrchestratorService",
    "NANGO_JOBS_PORT": "nangopb.jobs.v1.JobsService",
    "NANGO_RUNNER_PORT": "nangopb.runner.v1.RunnerService",
    "NANGO_PERSIST_PORT": "nangopb.persist.v1.PersistService",
}


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[[], Up]]:
    started: list[Up] = []
    ports = {"SERVER_PORT": free_port(), **{name: free_port() for name in SERVICES}}

    def start_one() -> Up:
        up = start_up(tmp_path, ports=ports)
        started.append(up)
        return up

    yield start_one
    for up in started:
        up.stop()


def _http(url: str, headers: dict[str, str] | None = None) -> tuple[int, object]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - loopback http only
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback http only
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "grpcurl"), "-plaintext", *args], capture_output=True, text=True, timeout=30)


def test_up_serves_every_service_and_keeps_its_data_across_restarts(start: Callable[[], Up], tmp_path: Path) -> None:
    up = start()
    dev_key = up.wait_for(r"dev secret key\s+([0-9a-f-]{36})").group(1)
    assert "NANGO_ENCRYPTION_KEY is not set" in up.text()
    api = f"http://127.0.0.1:{up.ports['SERVER_PORT']}"

    assert _http(api + "/health") == (200, {"result": "ok"})
    status, body = _http(api + "/environment-variables")
    assert (status, body["error"]["code"]) == (401, "missing_auth_header")  # type: ignore[index]
    assert _http(api + "/environment-variables", {"Authorization": f"Bearer {dev_key}"}) == (200, [])

    for variable, service in SERVICES.items():
        listed = _grpcurl(f"127.0.0.1:{up.ports[variable]}", "list")
        assert listed.returncode == 0, listed.stderr
        names = set(listed.stdout.split())
        assert {service, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
        described = _grpcurl(f"127.0.0.1:{up.ports[variable]}", "describe", service)
        assert described.returncode == 0
        assert f"service {service.rsplit('.', 1)[1]} {{" in described.stdout

    server_grpc = f"127.0.0.1:{up.ports['NANGO_SERVER_GRPC_PORT']}"
    refused = _grpcurl(server_grpc, "nangopb.server.v1.ServerService/ListEnvironments")
    assert refused.returncode != 0
    assert "Unauthenticated" in refused.stderr
    token = (tmp_path / "data" / "internal.token").read_text().strip()
    allowed = _grpcurl(
        "-H", f"x-nango-internal-token: {token}", server_grpc, "nangopb.server.v1.ServerService/ListEnvironments"
    )
    assert allowed.returncode == 0, allowed.stderr
    environments = {e["name"]: e for e in json.loads(allowed.stdout)["environments"]}
    assert environments["dev"]["secret_key"] == dev_key

    assert up.stop() == 0
    assert "Stopped." in up.text()

    again = start()
    assert again.wait_for(r"dev secret key\s+([0-9a-f-]{36})").group(1) == dev_key
    assert "NANGO_ENCRYPTION_KEY is not set" not in again.text()
    allowed = _grpcurl(
        "-H", f"x-nango-internal-token: {token}", server_grpc, "nangopb.server.v1.ServerService/ListEnvironments"
    )
    assert {e["name"]: e["uuid"] for e in json.loads(allowed.stdout)["environments"]} == {
        name: e["uuid"] for name, e in environments.items()
    }
    assert again.stop() == 0


def test_up_refuses_a_bad_setting_with_exit_code_2(tmp_path: Path) -> None:
    env = platform_environment(tmp_path, {"SERVER_PORT": 3003})
    env["NANGO_ORCHESTRATOR_PORT"] = "not-a-port"
    done = subprocess.run([str(BIN / "nango"), "up"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "nango up: invalid setting NANGO_ORCHESTRATOR_PORT: input should be a valid integer, unable to parse "
        "string as an integer (got 'not-a-port')"
    ]


def test_production_mode_refuses_to_start_without_an_encryption_key(tmp_path: Path) -> None:
    env = platform_environment(tmp_path, {})
    env["NANGO_ENV"] = "production"
    done = subprocess.run([str(BIN / "nango"), "up"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "NANGO_ENCRYPTION_KEY: is required when NANGO_ENV=production" in done.stderr
    assert not (tmp_path / "encryption.key").exists()
