"""Deploying Python functions to `nango up`: plan, apply, schedules for every connection, reconcile."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from nango.cli.init import FILES
from nango.orchestrator.client import OrchestratorClient, ScheduleState
from tests.support.platform import Up, start_up

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    up = start_up(tmp_path_factory.mktemp("deploy"), name="deploy").wait_ready()
    yield up
    assert up.stop() == 0


@pytest.fixture(scope="module")
async def orchestrator(platform: Up) -> AsyncIterator[OrchestratorClient]:
    token = platform.internal_token
    async with OrchestratorClient(f"127.0.0.1:{platform.ports['NANGO_ORCHESTRATOR_PORT']}", token) as client:
        yield client


async def call(up: Up, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {up.dev_key}"}) as http,
        http.request(method, up.api + path, json=body) as response,
    ):
        return response.status, await response.json(content_type=None)


async def connect(up: Up, connection_id: str) -> None:
    body = {
        "provider_config_key": "demo",
        "connection_id": connection_id,
        "credentials": {"type": "API_KEY", "apiKey": "k"},
    }
    status, answer = await call(up, "POST", "/connections", body)
    assert status == 201, answer


async def sync_schedules(orchestrator: OrchestratorClient) -> dict[str, Any]:
    schedules = await orchestrator.search_schedules(state=ScheduleState.STARTED, limit=1000)
    return {s.args["connection_id"]: s for s in schedules if s.args.get("type") == "sync"}


async def test_deploy_plan_apply_schedule_and_reconcile(platform: Up, orchestrator: OrchestratorClient) -> None:
    status, _ = await call(platform, "POST", "/integrations", {"provider": "resend", "unique_key": "demo"})
    assert status == 200
    await connect(platform, "before-deploy")

    payload = {"integrations": {"demo": {"files": FILES}}}
    status, plan = await call(platform, "POST", "/functions/deploy", payload)
    assert status == 200, plan
    assert plan["applied"] is False
    assert sorted((c["name"], c["type"]) for c in plan["added"]) == [("contacts", "sync"), ("create_contact", "action")]
    status, listed = await call(platform, "GET", "/integrations/demo/functions")
    assert listed["data"] == []

    status, applied = await call(platform, "POST", "/functions/deploy", {**payload, "confirm": True})
    assert (status, applied["applied"]) == (200, True)
    status, listed = await call(platform, "GET", "/integrations/demo/functions")
    assert listed["pagination"]["total"] == 2
    contacts = next(f for f in listed["data"] if f["name"] == "contacts")
    assert (contacts["type"], contacts["runs"], contacts["returns"]) == ("sync", "every hour", ["Contact"])
    assert contacts["track_deletes"] is True
    status, code = await call(platform, "GET", "/integrations/demo/functions/contacts/code")
    assert status == 200
    assert "async def contacts(nango)" in code["code"]

    schedules = await sync_schedules(orchestrator)
    assert set(schedules) == {"before-deploy"}
    assert schedules["before-deploy"].frequency.total_seconds() == 3600

    await connect(platform, "after-deploy")
    assert set(await sync_schedules(orchestrator)) == {"before-deploy", "after-deploy"}
    status, _ = await call(platform, "DELETE", "/connections/before-deploy?provider_config_key=demo")
    assert status == 200
    assert set(await sync_schedules(orchestrator)) == {"after-deploy"}

    status, again = await call(platform, "POST", "/functions/deploy", {**payload, "confirm": True})
    assert (again["added"], again["updated"], again["deleted"]) == ([], [], [])
    assert len(again["unchanged"]) == 2

    only_action = {name: body for name, body in FILES.items() if name != "contacts.py"}
    status, reduced = await call(
        platform, "POST", "/functions/deploy", {"integrations": {"demo": {"files": only_action}}, "confirm": True}
    )
    assert status == 200, reduced
    assert [c["name"] for c in reduced["deleted"]] == ["contacts"]
    assert await sync_schedules(orchestrator) == {}
    status, listed = await call(platform, "GET", "/integrations/demo/functions")
    assert [f["name"] for f in listed["data"]] == ["create_contact"]


@pytest.mark.parametrize(
    ("files", "needle"),
    [
        ({"broken.py": "def (:\n"}, "broken.py"),
        ({"models.py": "from nango.sdk import Model\n\nclass NoId(Model):\n    name: str\n"}, "id"),
        ({"../escape.py": "x = 1\n"}, "relative"),
        (
            {
                "bad.py": 'from nango.sdk import sync\n\n@sync(description="d", frequency="whenever", models=[])\n'
                "async def s(nango): ...\n"
            },
            "frequency",
        ),
    ],
)
async def test_bad_bundles_are_refused_and_change_nothing(platform: Up, files: dict[str, str], needle: str) -> None:
    status, _ = await call(platform, "POST", "/integrations", {"provider": "resend", "unique_key": "bad"})
    assert status in (200, 409)
    status, before = await call(platform, "GET", "/integrations/bad/functions")
    status, answer = await call(
        platform,
        "POST",
        "/functions/deploy",
        {"integrations": {"bad": {"files": files}}, "confirm": True, "reconcile": False},
    )
    assert status == 400, answer
    assert needle in str(answer["error"])
    status, after = await call(platform, "GET", "/integrations/bad/functions")
    assert after == before
