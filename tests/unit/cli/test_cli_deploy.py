"""`nango deploy`: which files it sends, what it prints, and how it fails without the platform."""

from __future__ import annotations

from pathlib import Path

import pytest

from nango.cli.deploy import DeployError, collect, describe, main


def _tree(root: Path) -> None:
    for path, text in {
        "crm/models.py": "x = 1\n",
        "crm/sub/helpers.py": "y = 2\n",
        "crm/__pycache__/models.cpython-311.py": "junk\n",
        "crm/.hidden/secret.py": "junk\n",
        "crm/README.md": "not code\n",
        "mail/send.py": "z = 3\n",
        ".git/hooks.py": "junk\n",
        "_drafts/wip.py": "junk\n",
    }.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)


def test_collect_reads_each_integration_folder(tmp_path: Path) -> None:
    _tree(tmp_path)
    assert collect(tmp_path, None) == {
        "crm": {"models.py": "x = 1\n", "sub/helpers.py": "y = 2\n"},
        "mail": {"send.py": "z = 3\n"},
    }
    assert list(collect(tmp_path, "mail")) == ["mail"]
    with pytest.raises(DeployError, match="not a folder"):
        collect(tmp_path, "nope")
    # python files directly in DIR belong to no integration
    with pytest.raises(DeployError, match="no functions found"):
        collect(tmp_path / "crm" / "sub", None)


def test_describe_lists_changes() -> None:
    plan = {
        "added": [{"integration": "crm", "name": "contacts", "type": "sync", "version": "1"}],
        "updated": [],
        "deleted": [{"integration": "crm", "name": "old", "type": "action", "version": "1"}],
        "unchanged": [],
    }
    assert describe(plan) == ["  + crm: sync contacts (added)", "  - crm: action old (deleted)"]


async def test_missing_key_and_unreachable_host_are_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _tree(tmp_path)
    for name in ("NANGO_SECRET_KEY", "NANGO_SECRET_KEY_DEV"):
        monkeypatch.delenv(name, raising=False)
    assert await main(tmp_path, integration=None, auto_confirm=True, environment="dev") == 1
    assert "NANGO_SECRET_KEY_DEV" in capsys.readouterr().err
    monkeypatch.setenv("NANGO_SECRET_KEY_DEV", "00000000-0000-4000-8000-000000000000")
    monkeypatch.setenv("NANGO_HOSTPORT", "http://127.0.0.1:9")
    assert await main(tmp_path, integration=None, auto_confirm=True, environment="dev") == 1
    assert "cannot reach http://127.0.0.1:9" in capsys.readouterr().err
