"""`nango deploy [DIR]`: send each integration folder of DIR (`<DIR>/<integration-id>/**/*.py`) to the
platform, show what would be added, updated and deleted, and apply it once confirmed.

Settings are Nango CLI's: `NANGO_SECRET_KEY_DEV` / `NANGO_SECRET_KEY_PROD` (by `--environment`) or
`NANGO_SECRET_KEY`, `NANGO_HOSTPORT` (default http://localhost:3003), and `NANGO_DEPLOY_AUTO_CONFIRM=true`
to skip the question. A full deploy removes deployed functions the folders no longer have; a deploy
of one integration (`--integration`) only adds and updates.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from nango import __version__

DEFAULT_HOSTPORT = "http://localhost:3003"
_SYMBOLS = {"added": "+", "updated": "~", "deleted": "-"}


class DeployError(Exception):
    """The deploy cannot go on; the message says why."""


def secret_key(environment: str) -> str:
    key = os.environ.get(f"NANGO_SECRET_KEY_{environment.upper()}") or os.environ.get("NANGO_SECRET_KEY")
    if not key:
        raise DeployError(
            f"set NANGO_SECRET_KEY_{environment.upper()} (or NANGO_SECRET_KEY) to the environment's secret key"
        )
    return key


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") or part == "__pycache__" for part in path.relative_to(root).parts)


def collect(directory: Path, integration: str | None) -> dict[str, dict[str, str]]:
    """`{integration id: {relative path: source}}` of the folders to deploy."""
    if not directory.is_dir():
        raise DeployError(f"{directory} is not a folder")
    if integration is not None:
        folders = [directory / integration]
        if not folders[0].is_dir():
            raise DeployError(f"{folders[0]} is not a folder: functions go in <DIR>/<integration-id>/")
    else:
        folders = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    bundles: dict[str, dict[str, str]] = {}
    for folder in folders:
        files = {
            path.relative_to(folder).as_posix(): path.read_text(encoding="utf-8")
            for path in sorted(folder.rglob("*.py"))
            if path.is_file() and _visible(path, folder)
        }
        if files:
            bundles[folder.name] = files
    if not bundles:
        raise DeployError(f"no functions found: expected {directory}/<integration-id>/*.py")
    return bundles


def _refusal(status: int, answer: Any) -> str:
    error = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(error, dict):
        return f"the server answered {status}: {str(answer)[:500]}"
    lines = [f"the server refused the deploy ({status} {error.get('code')}): {error.get('message', '')}".rstrip()]
    for problem in error.get("errors") or []:
        where = ".".join(str(p) for p in problem.get("path", []))
        lines.append(f"  {where}: {problem.get('message')}" if where else f"  {problem.get('message')}")
    return "\n".join(lines)


async def _post(http: aiohttp.ClientSession, host: str, body: dict[str, Any]) -> dict[str, Any]:
    try:
        async with http.post(f"{host}/functions/deploy", json=body) as response:
            try:
                answer = await response.json(content_type=None)
            except ValueError:
                answer = (await response.text())[:500]
            if response.status != 200 or not isinstance(answer, dict):
                raise DeployError(_refusal(response.status, answer))
            return answer
    except aiohttp.ClientConnectionError as exc:
        raise DeployError(f"cannot reach {host}: {exc} (is the platform up? set NANGO_HOSTPORT)") from None


def describe(plan: dict[str, Any]) -> list[str]:
    lines = []
    for kind, symbol in _SYMBOLS.items():
        for change in plan.get(kind, []):
            lines.append(f"  {symbol} {change['integration']}: {change['type']} {change['name']} ({kind})")
    return lines


def _ask(prompt: Callable[[str], str]) -> bool:
    try:
        answer = prompt("Deploy these changes? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


async def deploy(
    directory: Path,
    *,
    integration: str | None,
    auto_confirm: bool,
    environment: str,
    prompt: Callable[[str], str] = input,
) -> int:
    key = secret_key(environment)
    host = (os.environ.get("NANGO_HOSTPORT") or DEFAULT_HOSTPORT).rstrip("/")
    bundles = collect(directory, integration)
    body: dict[str, Any] = {
        "integrations": {name: {"files": files} for name, files in bundles.items()},
        "reconcile": integration is None,
        "confirm": False,
    }
    headers = {"Authorization": f"Bearer {key}", "User-Agent": f"nango-cli/{__version__} (python)"}
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=300)) as http:
        print(f"Checking {sum(len(f) for f in bundles.values())} files of {', '.join(bundles)} on {host}...")
        plan = await _post(http, host, body)
        changes = describe(plan)
        if not changes:
            print(f"Nothing to deploy: {len(plan.get('unchanged', []))} functions are up to date.")
            return 0
        print("Changes:")
        print("\n".join(changes))
        auto = auto_confirm or os.environ.get("NANGO_DEPLOY_AUTO_CONFIRM", "").lower() == "true"
        if not auto and not _ask(prompt):
            print("Nothing was deployed.")
            return 1
        applied = await _post(http, host, {**body, "confirm": True})
        counts = {kind: len(applied.get(kind, [])) for kind in _SYMBOLS}
        print(f"Deployed: {counts['added']} added, {counts['updated']} updated, {counts['deleted']} deleted.")
    return 0


async def main(directory: Path, *, integration: str | None, auto_confirm: bool, environment: str) -> int:
    try:
        return await deploy(directory, integration=integration, auto_confirm=auto_confirm, environment=environment)
    except TimeoutError:
        print("nango deploy: the platform did not answer in time", file=sys.stderr)
        return 1
    except (DeployError, OSError, UnicodeDecodeError) as exc:
        print(f"nango deploy: {exc}", file=sys.stderr)
        return 1
    except aiohttp.ClientError as exc:
        print(f"nango deploy: the call failed: {exc}", file=sys.stderr)
        return 1


__all__ = ["DeployError", "collect", "deploy", "main"]
