"""The popup flow across two server replicas on one Postgres and one Redis: the SDK's websocket is held by replica A,
the provider redirects the popup to replica B's callback, and the outcome still reaches the socket (through the
Redis channel `publisher:<ws_client_id>`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import Browser

from nango.crypto import generate_key
from tests.browser.popup import Api, AppPage, providers_yaml
from tests.conftest import free_port
from tests.support.oauth_server.harness import OAuthServer

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


@dataclass
class Replica:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"replica exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as response:  # noqa: S310 - loopback
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"replica not healthy in time:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@dataclass
class Replicas:
    a: Replica
    b: Replica
    dev_key: str


@pytest.fixture(scope="module")
def replicas(
    database_url: str,
    redis_url: str,
    redis_prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
    short_lived_as: OAuthServer,
) -> Iterator[Replicas]:
    tmp = tmp_path_factory.mktemp("replicas")
    providers = tmp / "providers.yaml"
    providers.write_text(providers_yaml(short_lived_as))
    dev_key = str(uuid.uuid4())
    a_port, b_port = free_port(), free_port()
    b_url = f"http://127.0.0.1:{b_port}"
    shared = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NANGO_")},
        "NANGO_DATABASE_URL": database_url,
        "NANGO_DB_SCHEMA": f"nango_replicas_{uuid.uuid4().hex[:8]}",
        "NANGO_REDIS_URL": redis_url,
        "NANGO_REDIS_KEY_PREFIX": f"{redis_prefix}replicas:",
        "NANGO_INTERNAL_TOKEN": "internal-token-for-tests-0123456789",
        "NANGO_ENCRYPTION_KEY": generate_key(),
        "NANGO_OUTBOUND_URL_POLICY_OAUTH": '{"blockLoopback": false}',  # token servers on 127.0.0.1
        "NANGO_SECRET_KEY_DEV": dev_key,
        "NANGO_BIND_HOST": "127.0.0.1",
        "NANGO_DATA_DIR": str(tmp),
        "NANGO_PROVIDERS_FILE": str(providers),
        "NANGO_SHUTDOWN_GRACE_SECONDS": "1",
        "NANGO_LOG_FORMAT": "text",
        # replica A sends the provider back to replica B's callback
        "NANGO_SERVER_URL": b_url,
    }
    started: list[Replica] = []

    def start(name: str, port: int) -> Replica:
        log = tmp / f"{name}.log"
        env = {**shared, "SERVER_PORT": str(port), "NANGO_SERVER_GRPC_PORT": str(free_port())}
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "nango.server"], env=env, stdout=sink, stderr=subprocess.STDOUT
            )
        replica = Replica(f"http://127.0.0.1:{port}", process, log)
        started.append(replica)
        replica.wait_healthy()
        return replica

    try:
        # one after the other: the first one migrates the schema
        a = start("a", a_port)
        b = start("b", b_port)
        yield Replicas(a, b, dev_key)
    finally:
        for replica in started:
            replica.stop()


async def test_outcome_reaches_the_socket_on_another_replica(
    browser: Browser, replicas: Replicas, short_lived_as: OAuthServer, app_page: AppPage, user: tuple[str, str]
) -> None:
    # only replica B's callback is registered: the authorization server cannot send the popup to A
    app = short_lived_as.create_app(name="replicas", redirect_uris=[replicas.b.url + "/oauth/callback"])
    on_a = Api(replicas.a.url, replicas.dev_key)
    key = await on_a.integration(app)
    token = await on_a.session_token("end-user-replicas")

    outcome = await app_page.auth(browser, host=replicas.a.url, token=token, provider_config_key=key, user=user)
    assert outcome["ok"], outcome
    assert outcome["result"]["providerConfigKey"] == key
    assert short_lived_as.stats(app.client_id)["authorization_code_grants"] == 1

    status, connection = await Api(replicas.b.url, replicas.dev_key).connection(key, outcome["result"]["connectionId"])
    assert status == 200, connection
    assert connection["credentials"]["access_token"]
