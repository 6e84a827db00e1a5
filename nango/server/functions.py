"""Deploying functions: bundle, inspect in the runner, store, (re)schedule (docs/functions.md).

A deploy is planned first (what would be added, updated, deleted) and applied only when confirmed,
so the CLI can show the plan and ask. Applying is idempotent: bundles are content-addressed, function
rows are upserted by (integration, type, name), and syncs are "ensured".
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import uuid
import zipfile
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import Field, field_validator

from nango.blob import BlobStore
from nango.errors import InvalidBody, NotFound
from nango.runner.client import FunctionSpec
from nango.server.connections import Connection, ConnectionService
from nango.server.inputs import ProviderConfigKey, Strict
from nango.server.integrations import Integration, IntegrationService
from nango.server.store.connections import ConnectionFilter
from nango.server.store.functions import FunctionRow, FunctionStore, FunctionValues
from nango.server.syncs import SyncScheduler

log = logging.getLogger(__name__)

MAX_FILES = 1000
MAX_BUNDLE_BYTES = 10 * 1024 * 1024
_PATH = re.compile(r"^(?!/)(?!.*\.\./)(?!.*//)[A-Za-z0-9_./-]+\.py$")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class BundleInspector(Protocol):
    """The runner's InspectBundle (RunnerClient): customer code is only ever imported by a runner."""

    async def inspect_bundle(self, bundle_zip: bytes, provider_config_key: str = "") -> list[FunctionSpec]: ...


class DeployIntegration(Strict):
    files: dict[str, str] = Field(min_length=1)

    @field_validator("files")
    @classmethod
    def _files(cls, files: dict[str, str]) -> dict[str, str]:
        if len(files) > MAX_FILES:
            raise ValueError(f"at most {MAX_FILES} files per integration")
        bad = [path for path in files if not _PATH.match(path)]
        if bad:
            raise ValueError(f"file paths must be relative .py paths without '..': {bad[:3]}")
        if sum(len(body.encode()) for body in files.values()) > MAX_BUNDLE_BYTES:
            raise ValueError(f"an integration's files may not exceed {MAX_BUNDLE_BYTES // (1024 * 1024)} MB")
        return files


class DeployBody(Strict):
    integrations: dict[ProviderConfigKey, DeployIntegration]
    # delete deployed functions that the payload no longer has
    reconcile: bool = True
    # false: only say what would change
    confirm: bool = False


@dataclass(frozen=True)
class Change:
    integration: str
    name: str
    type: str
    version: str


@dataclass
class Plan:
    added: list[Change] = field(default_factory=list)
    updated: list[Change] = field(default_factory=list)
    deleted: list[Change] = field(default_factory=list)
    unchanged: list[Change] = field(default_factory=list)
    bundles: dict[str, tuple[Integration, bytes, str, list[FunctionSpec]]] = field(default_factory=dict)
    removed: list[FunctionRow] = field(default_factory=list)


def build_bundle(files: dict[str, str]) -> tuple[bytes, str]:
    """A deterministic zip (sorted paths, fixed times) and its SHA-256, so equal sources dedupe."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(files):
            info = zipfile.ZipInfo(path, date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            bundle.writestr(info, files[path])
    data = buffer.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def bundle_key(environment_id: int, provider_config_key: str, sha256: str) -> str:
    return f"bundles/{environment_id}/{provider_config_key}/{sha256}.zip"


class FunctionService:
    def __init__(
        self,
        store: FunctionStore,
        integrations: IntegrationService,
        connections: ConnectionService,
        scheduler: SyncScheduler,
        blobs: BlobStore,
        inspector: BundleInspector,
    ) -> None:
        self.store = store
        self.integrations = integrations
        self.connections = connections
        self.scheduler = scheduler
        self.blobs = blobs
        self.inspector = inspector

    async def plan(self, environment_id: int, body: DeployBody) -> Plan:
        plan = Plan()
        deployed = {(f.provider_config_key, f.type, f.name): f for f in await self.store.of_environment(environment_id)}
        wanted: set[tuple[str, str, str]] = set()
        for key, integration_files in sorted(body.integrations.items()):
            integration = await self.integrations.find(environment_id, key)
            if integration is None:
                message = f"Integration does not exist: {key}"
                raise InvalidBody(
                    message, errors=[{"code": "custom", "message": message, "path": ["integrations", key]}]
                )
            data, sha = build_bundle(integration_files.files)
            functions = await self.inspector.inspect_bundle(data, key)
            plan.bundles[key] = (integration, data, sha, functions)
            for spec in functions:
                wanted.add((key, spec.type.value, spec.name))
                change = Change(key, spec.name, spec.type.value, spec.version)
                current = deployed.get((key, spec.type.value, spec.name))
                if current is None:
                    plan.added.append(change)
                elif current.version != spec.version or current.bundle_sha256 != sha:
                    plan.updated.append(change)
                else:
                    plan.unchanged.append(change)
        if body.reconcile:
            for ident, row in sorted(deployed.items()):
                if ident not in wanted:
                    plan.removed.append(row)
                    plan.deleted.append(Change(row.provider_config_key, row.name, row.type, row.version))
        return plan

    async def apply(self, environment_id: int, plan: Plan) -> None:
        touched: list[str] = []
        for key, (_, data, sha, _) in plan.bundles.items():
            await self.blobs.put(bundle_key(environment_id, key, sha), data, content_type="application/zip")
        doomed_syncs = [
            s for row in plan.removed if row.type == "sync" for s in await self.store.syncs_of_function(row.id)
        ]
        async with self.store.pool.acquire() as conn, conn.transaction():
            for key, (integration, _, sha, functions) in plan.bundles.items():
                for spec in functions:
                    function_id = await self.store.upsert(
                        conn, str(uuid.uuid4()), environment_id, integration.id, _values(spec, environment_id, key, sha)
                    )
                    touched.append(function_id)
            if plan.removed:
                await self.store.delete(conn, [row.id for row in plan.removed])
        await self.scheduler.remove(doomed_syncs)
        for function_id in touched:
            function = await self.store.get(function_id)
            if function is not None and function.type == "sync" and function.auto_start:
                await self.schedule_everywhere(function)

    async def schedule_everywhere(self, function: FunctionRow) -> None:
        """Ensure the sync for every live connection of its integration."""
        rows = await self.connections.search(
            ConnectionFilter(environment_id=function.environment_id, integration_keys=[function.provider_config_key])
        )
        for row in rows:
            await self.scheduler.ensure(function, row.id, row.connection_id)

    async def connection_created(self, connection: Connection) -> None:
        """A new connection starts the auto-start syncs of its integration."""
        for function in await self.store.of_integration(connection.row.integration_id):
            if function.type == "sync" and function.auto_start and function.enabled:
                await self.scheduler.ensure(function, connection.id, connection.connection_id)

    async def connection_deleted(self, connection: Connection) -> None:
        await self.scheduler.remove_for_connection(connection.id)

    async def functions_of(self, environment_id: int, provider_config_key: str) -> list[FunctionRow]:
        integration = await self.integrations.get(environment_id, provider_config_key)
        return await self.store.of_integration(integration.id)

    async def get(
        self, environment_id: int, provider_config_key: str, name: str, type_: str | None = None
    ) -> FunctionRow:
        found = await self.store.find(environment_id, provider_config_key, name, type_)
        if not found:
            raise NotFound(f"No function named {name} in {provider_config_key}")
        if len(found) > 1:
            message = f"{name} names more than one function in {provider_config_key}; give its type"
            raise InvalidBody(message, code="ambiguous_function")
        return found[0]

    async def delete(self, environment_id: int, provider_config_key: str, name: str, type_: str) -> None:
        function = await self.get(environment_id, provider_config_key, name, type_)
        if function.type == "sync":
            await self.scheduler.remove(await self.store.syncs_of_function(function.id))
        async with self.store.pool.acquire() as conn:
            await self.store.delete(conn, [function.id])


def _values(spec: FunctionSpec, environment_id: int, provider_config_key: str, sha: str) -> FunctionValues:
    return FunctionValues(
        name=spec.name,
        type=spec.type.value,
        version=spec.version,
        description=spec.description,
        bundle_key=bundle_key(environment_id, provider_config_key, sha),
        bundle_sha256=sha,
        module=spec.module,
        attribute=spec.attribute,
        frequency=spec.frequency or None,
        auto_start=spec.auto_start,
        track_deletes=spec.track_deletes,
        models=list(spec.models),
        models_json_schema=spec.models_json_schema,
        input_json_schema=spec.input_json_schema,
        output_json_schema=spec.output_json_schema,
        webhook_subscriptions=list(spec.webhook_subscriptions),
        event=spec.event or None,
        scopes=list(spec.scopes),
        reconcile_deletes=spec.reconcile_deletes or None,
    )
