"""The public records API over persist's records cache (reference §3.5).

The server only resolves the connection and names the model; persist validates cursors and answers
pages as JSON bytes, which the gateway passes through without decoding them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from nango.persist.client import PersistClient, PruneResult, RecordAction, RecordPage, RecordScope
from nango.server.errors import UnknownConnection
from nango.server.store.connections import ConnectionRow, ConnectionStore

BASE_VARIANT = "base"


def model_key(model: str, variant: str | None) -> str:
    """The model as persist stores it: `Model` for the base variant, `Model::variant` otherwise."""
    return model if not variant or variant == BASE_VARIANT else f"{model}::{variant}"


@dataclass(frozen=True)
class RecordQuery:
    model: str
    variant: str | None = None
    modified_after: datetime | None = None
    limit: int = 100
    actions: frozenset[RecordAction] = frozenset()
    cursor: str | None = None
    ids: Sequence[str] = ()


class RecordService:
    def __init__(self, connections: ConnectionStore, persist: PersistClient) -> None:
        self.connections = connections
        self.persist = persist

    async def connection(self, environment_id: int, provider_config_key: str, connection_id: str) -> ConnectionRow:
        """The live connection; an unknown integration is reported as an unknown connection, as Nango does here."""
        row = await self.connections.get_by_key(environment_id, provider_config_key, connection_id)
        if row is None:
            raise UnknownConnection()
        return row

    async def page(
        self, environment_id: int, provider_config_key: str, connection_id: str, query: RecordQuery
    ) -> RecordPage:
        row = await self.connection(environment_id, provider_config_key, connection_id)
        return await self.persist.get_records(
            RecordScope(environment_id, row.id, model_key(query.model, query.variant)),
            cursor=query.cursor,
            limit=query.limit,
            external_ids=query.ids,
            modified_after=query.modified_after,
            actions=sorted(query.actions, key=lambda a: a.value),
        )

    async def prune(
        self,
        environment_id: int,
        provider_config_key: str,
        connection_id: str,
        model: str,
        variant: str | None,
        until_cursor: str,
        limit: int,
    ) -> PruneResult:
        row = await self.connection(environment_id, provider_config_key, connection_id)
        scope = RecordScope(environment_id, row.id, model_key(model, variant))
        return await self.persist.prune_records(scope, until_cursor, limit=limit)
