"""SQL for `webhook_deliveries` (jobs schema): enqueue once per (event, URL), claim due rows under a lease
with FOR UPDATE SKIP LOCKED, record results under the claim that took them, wake a URL's postponed rows,
forget finished rows past their retention."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import asyncpg

from nango.errors import InvalidRequest
from nango.jobs.models import WEBHOOK_TYPES, OutgoingWebhook
from nango.jobs.webhooks.signing import stable_json

MAX_URL_LENGTH = 2048
MAX_EVENT_ID_LENGTH = 255
_CLAIMED = (
    "d.id, d.event_id, d.url, d.environment_id, d.type, d.body, d.headers, d.connection_id, d.provider_config_key, "
    "d.attempts, d.claim::text"
)


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True)
class Delivery:
    """A claimed row: one event to POST to one URL, under the claim `claim`."""

    id: int
    event_id: str
    url: str
    environment_id: int
    type: str
    # the body exactly as sent (stable-stringified JSON)
    body: str
    headers: Mapping[str, str]
    connection_id: str
    provider_config_key: str
    # attempts already used before this one
    attempts: int
    claim: str


@dataclass(frozen=True)
class Finish:
    """What happened to a claimed row: delivered, failed, or pending again after `delay`.
    `used` is 1 when an attempt was made (a postponement uses none)."""

    id: int
    claim: str
    state: DeliveryState
    used: int = 0
    delay: timedelta = timedelta(0)
    status: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class StoredDelivery:
    """A row as it stands (for tests, the bench and operators)."""

    id: int
    event_id: str
    url: str
    environment_id: int
    type: str
    body: str
    state: DeliveryState
    attempts: int
    due_at: datetime
    claimed: bool
    last_status: int | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Row:
    event_id: str
    url: str
    environment_id: int
    type: str
    body: str
    headers: str
    connection_id: str
    provider_config_key: str


def _rows(webhooks: Sequence[OutgoingWebhook]) -> list[_Row]:
    """One row per (event, URL), each checked; InvalidRequest names the first that is wrong."""
    rows: dict[tuple[str, str], _Row] = {}
    for index, webhook in enumerate(webhooks):
        where = f"webhooks[{index}]"
        if not webhook.event_id or len(webhook.event_id) > MAX_EVENT_ID_LENGTH:
            raise InvalidRequest(f"{where}.event_id must be 1 to {MAX_EVENT_ID_LENGTH} characters")
        if webhook.environment_id <= 0:
            raise InvalidRequest(f"{where}.environment_id must be positive")
        if webhook.type not in WEBHOOK_TYPES:
            raise InvalidRequest(f"{where}.type must be one of {', '.join(sorted(WEBHOOK_TYPES))}")
        try:
            body = stable_json(webhook.body)
        except (TypeError, ValueError):
            raise InvalidRequest(f"{where}.body is not JSON") from None
        headers = json.dumps(dict(webhook.headers), separators=(",", ":"))
        for url in webhook.urls:
            if not url or len(url) > MAX_URL_LENGTH or "\x00" in url:
                raise InvalidRequest(f"{where}.urls must be 1 to {MAX_URL_LENGTH} characters")
            rows.setdefault(
                (webhook.event_id, url),
                _Row(
                    webhook.event_id,
                    url,
                    webhook.environment_id,
                    webhook.type,
                    body,
                    headers,
                    webhook.connection_id,
                    webhook.provider_config_key,
                ),
            )
    return list(rows.values())


def _delivery(row: asyncpg.Record) -> Delivery:
    return Delivery(
        id=row["id"],
        event_id=row["event_id"],
        url=row["url"],
        environment_id=row["environment_id"],
        type=row["type"],
        body=row["body"],
        headers=json.loads(row["headers"]),
        connection_id=row["connection_id"],
        provider_config_key=row["provider_config_key"],
        attempts=row["attempts"],
        claim=row["claim"],
    )


class DeliveryStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def enqueue(self, webhooks: Sequence[OutgoingWebhook]) -> int:
        """Store one row per (event, URL) not stored yet, committed on return; how many were new."""
        rows = _rows(webhooks)
        if not rows:
            return 0
        status = await self.pool.execute(
            """INSERT INTO webhook_deliveries
                   (event_id, url, environment_id, type, body, headers, connection_id, provider_config_key)
               SELECT e, u, env, t, b, h::jsonb, c, p
               FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[],
                           $8::text[]) AS r (e, u, env, t, b, h, c, p)
               ON CONFLICT (event_id, url) DO NOTHING""",
            [r.event_id for r in rows],
            [r.url for r in rows],
            [r.environment_id for r in rows],
            [r.type for r in rows],
            [r.body for r in rows],
            [r.headers for r in rows],
            [r.connection_id for r in rows],
            [r.provider_config_key for r in rows],
        )
        return int(status.split()[-1])

    async def claim(self, limit: int, lease: timedelta) -> list[Delivery]:
        """Take up to `limit` due rows, the earliest first, for `lease` (after which they are due again)."""
        claim = str(uuid.uuid4())
        rows = await self.pool.fetch(
            f"""WITH due AS (
                    SELECT id FROM webhook_deliveries
                    WHERE state = 'pending' AND due_at <= now()
                    ORDER BY due_at, id LIMIT $1
                    FOR UPDATE SKIP LOCKED)
                UPDATE webhook_deliveries AS d SET due_at = now() + $2::interval, claim = $3::uuid
                FROM due WHERE d.id = due.id
                RETURNING {_CLAIMED}""",
            limit,
            lease,
            claim,
        )
        return sorted((_delivery(r) for r in rows), key=lambda d: d.id)

    async def finish(self, results: Sequence[Finish]) -> int:
        """Record what happened to claimed rows; a row whose claim is no longer held (its lease ran out and
        another claimer took it) is left alone. Returns how many rows were updated."""
        if not results:
            return 0
        status = await self.pool.execute(
            """UPDATE webhook_deliveries AS d SET
                   state = r.state,
                   attempts = d.attempts + r.used,
                   due_at = CASE WHEN r.state = 'pending' THEN now() + r.delay ELSE d.due_at END,
                   claim = NULL,
                   last_status = CASE WHEN r.used > 0 THEN r.status ELSE d.last_status END,
                   last_error = COALESCE(r.error, CASE WHEN r.used > 0 THEN NULL ELSE d.last_error END),
                   finished_at = CASE WHEN r.state = 'pending' THEN NULL ELSE now() END
               FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::int[], $5::interval[], $6::int[], $7::text[])
                    AS r (id, claim, state, used, delay, status, error)
               WHERE d.id = r.id AND d.claim = r.claim AND d.state = 'pending'""",
            [r.id for r in results],
            [r.claim for r in results],
            [r.state.value for r in results],
            [r.used for r in results],
            [r.delay for r in results],
            [r.status for r in results],
            [r.error for r in results],
        )
        return int(status.split()[-1])

    async def release(self, claims: Sequence[str]) -> int:
        """Give back rows still held under these claims (a replica stopping): due at once, no attempt used."""
        if not claims:
            return 0
        status = await self.pool.execute(
            """UPDATE webhook_deliveries SET due_at = now(), claim = NULL
               WHERE claim = ANY($1::uuid[]) AND state = 'pending'""",
            list(claims),
        )
        return int(status.split()[-1])

    async def wake(self, url: str) -> int:
        """Make a URL's waiting rows (backing off, or postponed while its circuit was open) due now."""
        status = await self.pool.execute(
            """UPDATE webhook_deliveries SET due_at = now()
               WHERE url = $1 AND state = 'pending' AND claim IS NULL AND due_at > now()""",
            url,
        )
        return int(status.split()[-1])

    async def delete_finished(self, *, delivered_before: timedelta, failed_before: timedelta, limit: int) -> int:
        """Forget delivered rows older than `delivered_before` and failed ones older than `failed_before`."""
        status = await self.pool.execute(
            """DELETE FROM webhook_deliveries WHERE id IN (
                   SELECT id FROM webhook_deliveries
                   WHERE state <> 'pending'
                     AND finished_at < now() - CASE WHEN state = 'delivered' THEN $1::interval ELSE $2::interval END
                   LIMIT $3)""",
            delivered_before,
            failed_before,
            limit,
        )
        return int(status.split()[-1])

    async def rows(
        self, *, event_ids: Sequence[str] | None = None, state: DeliveryState | None = None, limit: int = 1000
    ) -> list[StoredDelivery]:
        """Rows as they stand, oldest first, optionally of some events or in one state."""
        conditions: list[str] = []
        params: list[Any] = []
        bound = 0
        if event_ids is not None:
            bound += 1
            conditions.append(f"event_id = ANY(${bound}::text[])")
            params.append(list(event_ids))
        if state is not None:
            bound += 1
            conditions.append(f"state = ${bound}")
            params.append(state.value)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = await self.pool.fetch(
            f"""SELECT id, event_id, url, environment_id, type, body, headers, state, attempts, due_at,
                       claim IS NOT NULL AS claimed, last_status, last_error, created_at, finished_at
                FROM webhook_deliveries {where} ORDER BY id LIMIT {int(limit)}""",
            *params,
        )
        return [
            StoredDelivery(
                id=r["id"],
                event_id=r["event_id"],
                url=r["url"],
                environment_id=r["environment_id"],
                type=r["type"],
                body=r["body"],
                state=DeliveryState(r["state"]),
                attempts=r["attempts"],
                due_at=r["due_at"],
                claimed=r["claimed"],
                last_status=r["last_status"],
                last_error=r["last_error"],
                created_at=r["created_at"],
                finished_at=r["finished_at"],
                headers=json.loads(r["headers"]),
            )
            for r in rows
        ]

    async def counts(self) -> dict[str, int]:
        """Rows per state."""
        rows = await self.pool.fetch("SELECT state, count(*) AS n FROM webhook_deliveries GROUP BY state")
        found: dict[str, Any] = {r["state"]: r["n"] for r in rows}
        return {s.value: int(found.get(s.value, 0)) for s in DeliveryState}


__all__ = ["Delivery", "DeliveryState", "DeliveryStore", "Finish", "StoredDelivery"]
