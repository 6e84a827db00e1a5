"""`nango init` and `nango dryrun` against the in-process server: the function runs in the CLI's
process, reads through the REST API (connection, proxy, provider pagination) and prints what it
would save or return, while persist receives nothing."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import BUNDLE, Platform

from nango.persist.client import PersistClient, RecordScope
from tests.support.inprocess import TOKEN

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PEOPLE = [{"id": f"p{i}", "name": f"Person {i}"} for i in range(1, 4)]


async def nango_cli(platform: Platform, *args: str, cwd: Path) -> tuple[int, str, str]:
    env = {**os.environ, "NANGO_SECRET_KEY_DEV": platform.secret_key, "NANGO_HOSTPORT": platform.server.url}
    env.pop("NANGO_SECRET_KEY", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nango.cli.main",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 40)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def nothing_stored(platform: Platform, nango_id: int) -> None:
    async with PersistClient(platform.persist, TOKEN) as persist:
        page = await persist.get_records(RecordScope(platform.environment_id, nango_id, "Contact"))
        assert page.records() == []
        assert await persist.get_checkpoint(platform.environment_id, nango_id, "sync:contacts:base") is None


async def test_dryrun_prints_the_records_it_would_save(platform: Platform, tmp_path: Path) -> None:
    folder = tmp_path / "integrations" / platform.integration
    folder.mkdir(parents=True)
    for name, text in BUNDLE.items():
        (folder / name).write_text(text)
    jane = await platform.connection("jane", PEOPLE)
    code, out, err = await nango_cli(
        platform, "dryrun", "contacts", "jane", "--dir", str(tmp_path / "integrations"), cwd=tmp_path
    )
    assert code == 0, err
    report: dict[str, Any] = json.loads(out)
    assert report["records"]["Contact"]["saved"] == PEOPLE
    assert report["checkpoints"] == {"sync:contacts:base": {"runs": 1}}
    assert report["deletes_not_simulated"] == ["Contact"]
    assert "[info] saved the contacts" in err
    await nothing_stored(platform, jane.nango_id)

    code, out, err = await nango_cli(
        platform,
        "dryrun",
        "remember",
        "jane",
        "--integration",
        platform.integration,
        "--input",
        '{"value": 5}',
        "--dir",
        str(tmp_path / "integrations"),
        cwd=tmp_path,
    )
    assert code == 0, err
    assert json.loads(out)["output"] == {"previous": None}

    code, out, err = await nango_cli(
        platform, "dryrun", "refuse", "jane", "--dir", str(tmp_path / "integrations"), cwd=tmp_path
    )
    assert code == 1
    assert json.loads(out)["error"] == {
        "type": "action_script_runtime_error",
        "payload": {"reason": "not today", "input": None},
    }


async def test_init_then_dryrun_the_example(platform: Platform, tmp_path: Path) -> None:
    code, out, err = await nango_cli(platform, "init", "functions", "--integration", platform.integration, cwd=tmp_path)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "functions" / platform.integration).iterdir()) == [
        "contacts.py",
        "create_contact.py",
        "models.py",
    ]
    code, _out, _err = await nango_cli(
        platform, "init", "functions", "--integration", platform.integration, cwd=tmp_path
    )
    assert code == 1
    kim = await platform.connection("kim", PEOPLE)
    code, out, err = await nango_cli(platform, "dryrun", "contacts", "kim", "--dir", "functions", cwd=tmp_path)
    assert code == 0, err
    assert json.loads(out)["records"]["Contact"]["saved"] == PEOPLE
    await nothing_stored(platform, kim.nango_id)


async def test_dryrun_explains_what_is_missing(platform: Platform, tmp_path: Path) -> None:
    (tmp_path / "functions").mkdir()
    code, _out, err = await nango_cli(platform, "dryrun", "nope", "kim", "--dir", "functions", cwd=tmp_path)
    assert code == 2
    assert "no function named 'nope'" in err
