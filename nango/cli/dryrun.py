"""`nango dryrun <function> <connection-id>`: run one function in this process against a running
platform, reading through the public REST API with the secret key (connection, proxy, environment
variables), and print what it would save or return. Writes are recorded, never sent: records,
metadata, checkpoints and triggered actions stay in this process.

Settings are Nango CLI's: `NANGO_SECRET_KEY_DEV` / `NANGO_SECRET_KEY_PROD` (by `--environment`) or
`NANGO_SECRET_KEY`, and `NANGO_HOSTPORT` (default http://localhost:3003).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

from nango import __version__
from nango.sdk.definitions import FunctionDefinition
from nango.sdk.errors import ActionError, HTTPError
from nango.sdk.execute import InvalidInput, execute
from nango.sdk.loader import BundleLoadError, load_folder, unload_folder
from nango.sdk.runtime import (
    BatchSummary,
    LogLine,
    Nango,
    ProxyRequest,
    ProxyResponse,
    ReconcileSummary,
    StoredCheckpoint,
    TaskContext,
    headers_of,
)

DEFAULT_HOSTPORT = "http://localhost:3003"
# Nango-Proxy-* carries a header to the provider; these travel as they are
_PLAIN_HEADERS = frozenset({"content-type", "accept-encoding"})


class DryRunError(Exception):
    """The dry run cannot start (settings, folder, connection); the message says why."""


@dataclass
class Recorded:
    saved: dict[str, list[Any]] = field(default_factory=dict)
    updated: dict[str, list[Any]] = field(default_factory=dict)
    deleted: dict[str, list[Any]] = field(default_factory=dict)
    metadata: dict[str, Any] | None = None
    checkpoints: dict[str, StoredCheckpoint] = field(default_factory=dict)
    triggered_actions: list[dict[str, Any]] = field(default_factory=list)
    deletions_not_simulated: list[str] = field(default_factory=list)


class DryRunBackend:
    """Reads through the REST API; records every write instead of making it."""

    def __init__(self, http: aiohttp.ClientSession, host: str, secret_key: str, integration: str, connection: str):
        self.http = http
        self.host = host.rstrip("/")
        self.integration = integration
        self.connection = connection
        self.auth = {"Authorization": f"Bearer {secret_key}", "User-Agent": f"nango-cli/{__version__}"}
        self.recorded = Recorded()
        self._locks: set[str] = set()
        self._connection_cache: dict[str, Any] | None = None

    async def _get(self, path: str) -> Any:
        async with self.http.get(self.host + path, headers=self.auth) as response:
            body = await response.json(content_type=None)
            if response.status >= 400:
                error = (body or {}).get("error", {}) if isinstance(body, dict) else {}
                raise DryRunError(f"GET {path.split('?')[0]} answered {response.status}: {error.get('message', body)}")
            return body

    async def proxy(self, request: ProxyRequest) -> ProxyResponse:
        endpoint = request.endpoint
        if request.params:
            endpoint += ("&" if "?" in endpoint else "?") + urlencode(dict(request.params))
        headers = {
            **self.auth,
            "Provider-Config-Key": request.provider_config_key or self.integration,
            "Connection-Id": request.connection_id or self.connection,
            "Retries": str(request.retries),
        }
        if request.base_url_override:
            headers["Base-Url-Override"] = request.base_url_override
        if request.decompress:
            headers["Decompress"] = "true"
        if request.retry_on:
            headers["Retry-On"] = ",".join(str(code) for code in request.retry_on)
        for name, value in request.headers.items():
            headers[name if name.lower() in _PLAIN_HEADERS else f"Nango-Proxy-{name}"] = value
        async with self.http.request(
            request.method, self.host + "/proxy" + endpoint, headers=headers, data=request.body
        ) as response:
            body = await response.read()
            return ProxyResponse(
                response.status, headers_of(response.headers.items()), body, request.method, request.endpoint
            )

    async def _connection(self) -> dict[str, Any]:
        if self._connection_cache is None:
            self._connection_cache = await self.get_connection(self.integration, self.connection)
        return self._connection_cache

    async def pagination_defaults(self) -> dict[str, Any] | None:
        provider = (await self._connection()).get("provider")
        entry = (await self._get(f"/providers/{quote(str(provider), safe='')}")).get("data") or {}
        paginate = (entry.get("proxy") or {}).get("paginate")
        return paginate if isinstance(paginate, dict) else None

    def _record(self, into: dict[str, list[Any]], model: str, records: bytes) -> list[Any]:
        batch: list[Any] = json.loads(records)
        into.setdefault(model, []).extend(batch)
        return batch

    async def save_records(self, model: str, records: bytes) -> BatchSummary:
        return BatchSummary(added=len(self._record(self.recorded.saved, model, records)))

    async def update_records(self, model: str, records: bytes) -> BatchSummary:
        return BatchSummary(updated=len(self._record(self.recorded.updated, model, records)))

    async def delete_records(self, model: str, records: bytes) -> BatchSummary:
        return BatchSummary(deleted=len(self._record(self.recorded.deleted, model, records)))

    async def delete_outdated_records(self, model: str, generation: int) -> list[str]:
        # which stored records the run did not see is known only to persist: nothing is deleted here
        self.recorded.deletions_not_simulated.append(model)
        return []

    async def start_reconcile(self, model: str) -> None:
        self.recorded.deletions_not_simulated.append(model)

    async def mark_seen(self, model: str, ids: Sequence[str]) -> None:
        return None

    async def finish_reconcile(self, model: str) -> ReconcileSummary:
        # as for track deletes: what the pass did not see is known only to persist
        return ReconcileSummary(0, 0, [])

    async def get_records(self, model: str, ids: Sequence[str]) -> list[dict[str, Any]]:
        wanted = set(ids)
        return [r for r in self.recorded.saved.get(model, []) if str(r.get("id")) in wanted]

    async def get_checkpoint(self, key: str) -> StoredCheckpoint | None:
        return self.recorded.checkpoints.get(key)

    async def put_checkpoint(self, key: str, value: dict[str, Any], expected_version: int) -> int:
        self.recorded.checkpoints[key] = StoredCheckpoint(value, expected_version + 1)
        return expected_version + 1

    async def delete_checkpoint(self, key: str, expected_version: int) -> int:
        self.recorded.checkpoints[key] = StoredCheckpoint(None, expected_version + 1)
        return expected_version + 1

    async def get_connection(self, provider_config_key: str, connection_id: str) -> dict[str, Any]:
        query = urlencode({"provider_config_key": provider_config_key})
        connection: dict[str, Any] = await self._get(f"/connection/{quote(connection_id, safe='')}?{query}")
        if self.recorded.metadata is not None and (provider_config_key, connection_id) == (
            self.integration,
            self.connection,
        ):
            connection = {**connection, "metadata": self.recorded.metadata}
        return connection

    async def set_metadata(self, metadata: dict[str, Any], *, merge: bool) -> dict[str, Any]:
        current = dict((await self.get_connection(self.integration, self.connection)).get("metadata") or {})
        self.recorded.metadata = {**current, **metadata} if merge else dict(metadata)
        return self.recorded.metadata

    async def get_integration(self, include_credentials: bool) -> dict[str, Any]:
        include = "?include=credentials" if include_credentials else ""
        found: dict[str, Any] = (await self._get(f"/integrations/{quote(self.integration, safe='')}{include}"))["data"]
        return found

    async def environment_variables(self) -> list[dict[str, str]]:
        variables: list[dict[str, str]] = await self._get("/environment-variables")
        return variables

    async def trigger_action(self, provider_config_key: str, connection_id: str, action_name: str, input: Any) -> Any:
        self.recorded.triggered_actions.append(
            {
                "provider_config_key": provider_config_key,
                "connection_id": connection_id,
                "action": action_name,
                "input": input,
            }
        )
        return None

    async def try_acquire_lock(self, key: str, ttl: timedelta) -> bool:
        if key in self._locks:
            return False
        self._locks.add(key)
        return True

    async def release_lock(self, key: str) -> bool:
        if key not in self._locks:
            return False
        self._locks.discard(key)
        return True

    async def release_all_locks(self) -> int:
        released = len(self._locks)
        self._locks.clear()
        return released

    async def write_logs(self, lines: Sequence[LogLine]) -> None:
        for line in lines:
            print(f"[{line.level}] {line.message}", file=sys.stderr)


def secret_key(environment: str) -> str:
    key = os.environ.get(f"NANGO_SECRET_KEY_{environment.upper()}") or os.environ.get("NANGO_SECRET_KEY")
    if not key:
        raise DryRunError(
            f"set NANGO_SECRET_KEY_{environment.upper()} (or NANGO_SECRET_KEY) to the environment's secret key"
        )
    return key


def find(directory: Path, function: str, integration: str | None) -> tuple[str, FunctionDefinition]:
    """The integration folder and definition of `function`, loading the folders one at a time."""
    if not directory.is_dir():
        raise DryRunError(f"{directory} is not a folder")
    folders = [directory / integration] if integration else sorted(p for p in directory.iterdir() if p.is_dir())
    for folder in folders:
        if not folder.is_dir() or folder.name.startswith((".", "_")):
            continue
        try:
            definitions = load_folder(folder)
        except BundleLoadError as exc:
            raise DryRunError(f"{folder.name}: {exc}") from None
        for definition in definitions:
            if definition.name == function:
                return folder.name, definition
        unload_folder(folder)
    where = f"{directory / integration}" if integration else f"any integration folder of {directory}"
    raise DryRunError(f"no function named {function!r} in {where}")


async def dry_run(
    function: str,
    connection_id: str,
    *,
    directory: Path,
    integration: str | None,
    input_json: str | None,
    environment: str,
) -> tuple[int, dict[str, Any]]:
    """Run the function once; returns the exit code and the report to print."""
    key = secret_key(environment)
    folder, definition = find(directory, function, integration)
    run_type = definition.kind
    host = os.environ.get("NANGO_HOSTPORT") or DEFAULT_HOSTPORT
    async with aiohttp.ClientSession() as http:
        backend = DryRunBackend(http, host, key, folder, connection_id)
        connection = await backend.get_connection(folder, connection_id)
        context = TaskContext(
            function_name=definition.name,
            function_type=run_type,
            environment_id=0,
            nango_connection_id=int(connection.get("id") or 0),
            connection_id=connection_id,
            provider_config_key=folder,
            provider=str(connection.get("provider") or ""),
            environment_name=environment,
            sync_job_id="1",
        )
        nango = Nango(context, backend, definition)
        report: dict[str, Any] = {
            "function": definition.name,
            "type": run_type,
            "integration": folder,
            "connection_id": connection_id,
        }
        code = 0
        try:
            output = await execute(definition, nango, run_type, (input_json or "").encode())
            if run_type == "action":
                report["output"] = json.loads(output)
        except ActionError as exc:
            report["error"] = {"type": "action_script_runtime_error", "payload": exc.payload}
            code = 1
        except InvalidInput as exc:
            report["error"] = {"type": "invalid_action_input", "message": str(exc), "errors": exc.errors}
            code = 1
        except HTTPError as exc:
            report["error"] = {
                "type": "script_http_error",
                "status": exc.response.status_code,
                "body": exc.response.text[:2000],
            }
            code = 1
        except Exception as exc:
            print(traceback.format_exc(), file=sys.stderr)
            report["error"] = {"type": "script_error", "message": f"{type(exc).__name__}: {exc}"}
            code = 1
        finally:
            await nango.finish()
    recorded = backend.recorded
    if definition.kind == "sync":
        models = sorted({*recorded.saved, *recorded.updated, *recorded.deleted})
        report["records"] = {
            model: {
                "saved": recorded.saved.get(model, []),
                "updated": recorded.updated.get(model, []),
                "deleted": recorded.deleted.get(model, []),
            }
            for model in models
        }
        if recorded.deletions_not_simulated:
            report["deletes_not_simulated"] = sorted(set(recorded.deletions_not_simulated))
    if recorded.metadata is not None:
        report["metadata"] = recorded.metadata
    checkpoints = {k: c.value for k, c in recorded.checkpoints.items() if ":trackDeletes:" not in k}
    if checkpoints:
        report["checkpoints"] = checkpoints
    if recorded.triggered_actions:
        report["triggered_actions"] = recorded.triggered_actions
    return code, report


async def main(
    function: str,
    connection_id: str,
    *,
    directory: Path,
    integration: str | None,
    input_json: str | None,
    environment: str,
) -> int:
    try:
        code, report = await dry_run(
            function,
            connection_id,
            directory=directory,
            integration=integration,
            input_json=input_json,
            environment=environment,
        )
    except (DryRunError, aiohttp.ClientError) as exc:
        print(f"nango dryrun: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2, default=str))
    return code


__all__ = ["DryRunBackend", "DryRunError", "dry_run", "main"]
