"""Incoming provider webhooks (reference §7.1, docs/webhooks.md): from a verified, routed request to
the work it causes, stored durably before the provider gets its answer.

For each event the provider's router found: the connections it names are resolved (by id, by a
metadata value, by a connection_config value, or all connections of the integration); each sync of
those connections whose function subscribes to the event type (or `*`) gets a `webhook` task; and,
when the integration forwards webhooks, each matched connection gets one `forward` delivery (one
unwrapped delivery of the provider's body when none matched). All of it goes into the outbox.

The hot path does no control-plane query once warm: environment, integration, router and webhook
functions, connection resolutions and syncs are cached for `cache_seconds`, then served stale while
one background read refreshes them (never older than MAX_STALE_SECONDS past that), and dropped at
once on this replica when an integration or a connection changes here. The outbox rows of concurrent requests
are written together (`GroupCommit`): one INSERT per batch, each request answered once its batch
committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import asyncpg

from nango.errors import ServiceUnavailable
from nango.providers import CatalogRef
from nango.server.connections import Connection
from nango.server.errors import UnknownEnvironment, UnknownProviderConfig
from nango.server.integrations import Integration, IntegrationService
from nango.server.store.incoming_webhooks import (
    IncomingWebhookStore,
    WebhookConnection,
    WebhookFunction,
    WebhookSync,
)
from nango.server.webhooks.outbox import Delivery, TaskToCreate, WebhookOutbox
from nango.server.webhooks.routers import (
    IncomingRequest,
    IntegrationSecrets,
    RoutedEvent,
    Router,
    router_for,
)
from nango.server.webhooks.settings import WebhookSettingsService

log = logging.getLogger(__name__)

DEFAULT_CACHE_SECONDS = 2.0
# a lookup older than its freshness plus this is never served, however busy its key
MAX_STALE_SECONDS = 30.0
# outbox items one INSERT takes at most
BATCH_MAX_ITEMS = 1_000
# items waiting for a commit beyond which new webhooks are refused (503: the provider retries)
PENDING_MAX_ITEMS = 50_000
_CACHE_MAX_ENTRIES = 100_000
SUCCESS = {"status": "success"}

# provider headers that are not forwarded to the customer (reference §7.1), plus hop-by-hop headers and
# our own X-Nango-* (a provider's request must not choose the headers jobs signs with)
_NOT_FORWARDED = frozenset(
    {
        "host",
        "authorization",
        "connection",
        "keep-alive",
        "content-length",
        "content-type",
        "content-encoding",
        "cookie",
        "set-cookie",
        "referer",
        "user-agent",
        "www-authenticate",
        "server",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "expect",
    }
)
_NOT_FORWARDED_PREFIXES = ("sec-", "proxy-", "x-nango-")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def forwardable_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The provider's headers (lower-case names) that are forwarded with its webhook."""
    return {
        name: value
        for name, value in headers.items()
        if name not in _NOT_FORWARDED and not name.startswith(_NOT_FORWARDED_PREFIXES)
    }


class TtlCache(Generic[K, V]):
    """An expiring map that serves stale entries while it re-reads them (stale-while-revalidate).

    An entry is fresh for `seconds`; after that the next reader gets it at once and one background
    load replaces it, so a busy key never makes a request wait for the database. An entry older than
    `seconds + max_stale_seconds` is not served. Dropping keys (a change seen on this replica) also
    voids loads already under way, so they cannot put back what was read before the change."""

    def __init__(
        self, seconds: float, *, max_stale_seconds: float = MAX_STALE_SECONDS, max_entries: int = _CACHE_MAX_ENTRIES
    ) -> None:
        self.seconds = seconds
        self.max_stale_seconds = max_stale_seconds
        self.max_entries = max_entries
        self._entries: dict[K, tuple[float, V]] = {}
        self._refreshing: dict[K, asyncio.Task[None]] = {}
        self._generation = 0

    @property
    def generation(self) -> int:
        """Moves on every drop: a load started before it must not be put (see `put`)."""
        return self._generation

    def lookup(self, key: K) -> tuple[V, bool] | None:
        """(value, fresh), or None when there is no entry young enough to serve."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        fresh_until, value = entry
        now = time.monotonic()
        if fresh_until > now:
            return value, True
        if fresh_until + self.max_stale_seconds > now:
            return value, False
        self._entries.pop(key, None)
        return None

    def get(self, key: K) -> V | None:
        """A fresh value, or None."""
        found = self.lookup(key)
        return found[0] if found is not None and found[1] else None

    def put(self, key: K, value: V, generation: int | None = None) -> None:
        if self.seconds <= 0 or (generation is not None and generation != self._generation):
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + self.seconds, value)

    async def fetch(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        found = self.lookup(key)
        if found is not None:
            if not found[1]:
                self.refresh(key, load)
            return found[0]
        generation = self._generation
        value = await load()
        self.put(key, value, generation)
        return value

    def refresh(self, key: K, load: Callable[[], Awaitable[V]]) -> None:
        """Re-read a stale entry in the background (once per key at a time)."""
        if key in self._refreshing or self.seconds <= 0:
            return
        generation = self._generation

        async def reload() -> None:
            try:
                self.put(key, await load(), generation)
            except Exception as exc:
                # the next reader loads it itself, and meets the error if it lasts
                self._entries.pop(key, None)
                log.debug("webhook lookup refresh failed", extra={"error": type(exc).__name__})
            finally:
                self._refreshing.pop(key, None)

        self._refreshing[key] = asyncio.create_task(reload(), name="webhook-lookup-refresh")

    def drop(self, key: K) -> None:
        self._generation += 1
        self._entries.pop(key, None)

    def drop_where(self, predicate: Callable[[K], bool]) -> None:
        self._generation += 1
        for key in [k for k in self._entries if predicate(k)]:
            self._entries.pop(key, None)

    async def close(self) -> None:
        tasks = list(self._refreshing.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass(frozen=True)
class WebhookEnvironment:
    id: int
    uuid: str
    name: str


@dataclass(frozen=True)
class WebhookTarget:
    """What `POST /webhook/{environmentUuid}/{providerConfigKey}` resolves to."""

    environment: WebhookEnvironment
    integration_id: int
    provider_config_key: str
    provider: str
    router_name: str | None
    router: Router | None
    secrets: IntegrationSecrets
    forward_webhooks: bool
    allowed_query_params: frozenset[str]
    functions: tuple[WebhookFunction, ...]


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any = None


@contextlib.contextmanager
def _storage_errors() -> Iterator[None]:
    """The database being unreachable or failing is an outage, not a bad request: 503, so the provider
    retries (they all retry on 5xx) instead of the webhook being lost."""
    try:
        yield
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        log.warning("incoming webhook not stored: database unavailable", extra={"error": type(exc).__name__})
        raise ServiceUnavailable("the webhook could not be stored; try again shortly") from None


def _secrets(integration: Integration) -> IntegrationSecrets:
    custom = integration.custom or {}
    webhook_secret = integration.webhook_secret or custom.get("webhookSecret") or custom.get("webhook_secret")
    return IntegrationSecrets(webhook_secret=webhook_secret or None, client_secret=integration.client_secret or None)


class GroupCommit:
    """Group commit of outbox items: concurrent requests hand in their items, one writer stores all
    that arrived while the previous INSERT ran in a single INSERT, and each request resumes once its
    items are committed. A batch the database refuses is written again request by request, so one
    bad request fails alone."""

    def __init__(
        self, outbox: WebhookOutbox, *, max_items: int = BATCH_MAX_ITEMS, max_pending: int = PENDING_MAX_ITEMS
    ) -> None:
        self.outbox = outbox
        self.max_items = max_items
        self.max_pending = max_pending
        self._pending: list[tuple[Sequence[Delivery | TaskToCreate], asyncio.Future[None]]] = []
        self._pending_items = 0
        self._writer: asyncio.Task[None] | None = None

    async def add(self, items: Sequence[Delivery | TaskToCreate]) -> None:
        """Returns once the items are committed; raises what the write raised."""
        if self._pending_items + len(items) > self.max_pending:
            raise ServiceUnavailable("too many webhooks are waiting to be stored; try again shortly")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((items, future))
        self._pending_items += len(items)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="webhook-group-commit")
        # a request that goes away does not cancel the write of the others
        await asyncio.shield(future)

    def _take(self) -> list[tuple[Sequence[Delivery | TaskToCreate], asyncio.Future[None]]]:
        taken, count = 0, 0
        for items, _ in self._pending:
            if taken and count + len(items) > self.max_items:
                break
            taken += 1
            count += len(items)
        batch, self._pending = self._pending[:taken], self._pending[taken:]
        self._pending_items -= count
        return batch

    async def _write(self) -> None:
        while self._pending:
            batch = self._take()
            try:
                await self.outbox.add([item for items, _ in batch for item in items])
            except (asyncpg.PostgresError, ValueError, UnicodeError) as exc:
                if len(batch) == 1:
                    _settle(batch[0][1], exc)
                    continue
                log.warning("webhook batch refused, storing its requests one by one", extra={"requests": len(batch)})
                for items, future in batch:
                    try:
                        await self.outbox.add(items)
                    except Exception as one:
                        _settle(future, one)
                    else:
                        _settle(future, None)
            except asyncio.CancelledError:
                # shutting down: nobody may wait forever for a write that will not happen
                for _, future in batch + self._pending:
                    _settle(future, ServiceUnavailable("the server is shutting down; try again shortly"))
                self._pending.clear()
                self._pending_items = 0
                raise
            except Exception as exc:
                for _, future in batch:
                    _settle(future, exc)
            else:
                for _, future in batch:
                    _settle(future, None)

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
        # the request may have gone away; its exception is then never retrieved, which is fine
        future.add_done_callback(lambda f: f.exception())


class IncomingWebhooks:
    """Resolves webhook URLs to targets and turns routed webhooks into outbox items. Registered as a
    connection listener so that a connection created or deleted here is seen at once."""

    def __init__(
        self,
        store: IncomingWebhookStore,
        integrations: IntegrationService,
        providers: CatalogRef,
        settings: WebhookSettingsService,
        outbox: WebhookOutbox,
        *,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
    ) -> None:
        self.store = store
        self.integrations = integrations
        self.providers = providers
        self.settings = settings
        self.commit = GroupCommit(outbox)
        # negative answers are cached too (a box holding None), so a flood to a wrong URL costs no queries
        self._environments: TtlCache[str, tuple[WebhookEnvironment | None]] = TtlCache(cache_seconds)
        self._targets: TtlCache[tuple[int, str], tuple[WebhookTarget | None]] = TtlCache(cache_seconds)
        # (integration id, prop, value): the connections a webhook identifier names
        self._connections: TtlCache[tuple[int, str, str], tuple[WebhookConnection, ...]] = TtlCache(cache_seconds)
        # (integration id, connection row id): that connection's syncs of webhook functions
        self._sync_cache: TtlCache[tuple[int, int], tuple[WebhookSync, ...]] = TtlCache(cache_seconds)

    # ---- lookups (cached)

    async def environment(self, environment_uuid: str) -> WebhookEnvironment:
        key = environment_uuid.lower()

        async def load() -> tuple[WebhookEnvironment | None]:
            found = await self.store.environment_by_uuid(key)
            return (WebhookEnvironment(found[0], key, found[1]) if found else None,)

        with _storage_errors():
            (environment,) = await self._environments.fetch(key, load)
        if environment is None:
            raise UnknownEnvironment()
        return environment

    async def target(self, environment: WebhookEnvironment, provider_config_key: str) -> WebhookTarget:
        async def load() -> tuple[WebhookTarget | None]:
            return (await self._load_target(environment, provider_config_key),)

        with _storage_errors():
            (target,) = await self._targets.fetch((environment.id, provider_config_key), load)
        if target is None:
            raise UnknownProviderConfig()
        return target

    async def _load_target(self, environment: WebhookEnvironment, provider_config_key: str) -> WebhookTarget | None:
        integration = await self.integrations.find(environment.id, provider_config_key)
        if integration is None:
            return None
        provider = self.providers.current.get(integration.provider)
        router_name = provider.webhook_routing_script if provider else None
        router = router_for(router_name)
        if router_name and router is None:
            log.warning(
                "provider names a webhook router that is not built in; its webhooks are ignored",
                extra={"provider": integration.provider, "router": router_name},
            )
        functions = await self.store.webhook_functions(integration.id) if router else []
        return WebhookTarget(
            environment=environment,
            integration_id=integration.id,
            provider_config_key=integration.unique_key,
            provider=integration.provider,
            router_name=router_name,
            router=router,
            secrets=_secrets(integration),
            forward_webhooks=integration.forward_webhooks,
            allowed_query_params=frozenset(provider.webhook_allowed_query_params or ()) if provider else frozenset(),
            functions=tuple(functions),
        )

    async def connections(self, target: WebhookTarget, event: RoutedEvent) -> tuple[WebhookConnection, ...]:
        """The connections an event names: by id, by a metadata value, by a connection_config value,
        or all of the integration's when the router says so; none when it names none."""
        identifier = event.identifier
        if identifier is None and not event.all_connections:
            return ()
        prop, value = (identifier.prop, identifier.value) if identifier else ("*", "")
        integration_id = target.integration_id

        async def load() -> tuple[WebhookConnection, ...]:
            if identifier is None:
                return tuple(await self.store.all_connections(integration_id))
            if prop == "connectionId":
                return tuple(await self.store.by_connection_id(integration_id, value))
            if prop.startswith("metadata."):
                return tuple(await self.store.by_metadata(integration_id, prop.removeprefix("metadata."), value))
            return tuple(await self.store.by_config(integration_id, prop, value))

        return await self._connections.fetch((integration_id, prop, value), load)

    async def syncs_of(self, target: WebhookTarget, connections: Sequence[WebhookConnection]) -> list[WebhookSync]:
        """The syncs of webhook functions of these connections (one query for those not cached)."""
        function_ids = [f.id for f in target.functions]
        found: list[WebhookSync] = []
        missing: list[int] = []
        for connection in connections:
            key = (target.integration_id, connection.id)
            cached = self._sync_cache.lookup(key)
            if cached is None:
                missing.append(connection.id)
                continue
            found.extend(cached[0])
            if not cached[1]:
                self._sync_cache.refresh(key, functools.partial(self._syncs_of_one, connection.id, function_ids))
        if missing:
            generation = self._sync_cache.generation
            loaded = await self.store.syncs(missing, function_ids)
            by_connection: dict[int, list[WebhookSync]] = {row_id: [] for row_id in missing}
            for sync in loaded:
                by_connection[sync.connection_row_id].append(sync)
            for row_id, syncs in by_connection.items():
                self._sync_cache.put((target.integration_id, row_id), tuple(syncs), generation)
            found.extend(loaded)
        return found

    async def _syncs_of_one(self, connection_row_id: int, function_ids: list[str]) -> tuple[WebhookSync, ...]:
        return tuple(await self.store.syncs([connection_row_id], function_ids))

    # ---- invalidation

    def forget_integration(self, environment_id: int, provider_config_key: str) -> None:
        """An integration was created, changed or deleted on this replica."""
        cached = self._targets.lookup((environment_id, provider_config_key))
        self._targets.drop((environment_id, provider_config_key))
        if cached is not None and cached[0][0] is not None:
            self._forget_connections(cached[0][0].integration_id)

    def _forget_connections(self, integration_id: int) -> None:
        self._connections.drop_where(lambda key: key[0] == integration_id)
        self._sync_cache.drop_where(lambda key: key[0] == integration_id)

    async def connection_created(self, connection: Connection) -> None:
        self._forget_connections(connection.row.integration_id)

    async def connection_deleted(self, connection: Connection) -> None:
        self._forget_connections(connection.row.integration_id)

    # ---- the work a webhook causes

    async def accept(
        self, target: WebhookTarget, request: IncomingRequest, forwarded_headers: Mapping[str, str]
    ) -> Reply:
        """Route the request and store the work it causes; answers only once that is committed.
        Raises the router's errors (InvalidSignature, InvalidBody, …)."""
        if target.router is None:
            return Reply(204)
        result = target.router(request, target.secrets)
        response = SUCCESS if result.response is None else result.response
        if result.status != 200 or (not result.events and not result.forward):
            return Reply(result.status, response)
        with _storage_errors():
            await self._store(target, request, result.events, result.forward, forwarded_headers)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "incoming webhook accepted",
                extra={"provider_config_key": target.provider_config_key, "verified": result.verified},
            )
        return Reply(result.status, response)

    async def _store(
        self,
        target: WebhookTarget,
        request: IncomingRequest,
        events: Sequence[RoutedEvent],
        forward: bool,
        forwarded_headers: Mapping[str, str],
    ) -> None:
        environment_id = target.environment.id
        items: list[Delivery | TaskToCreate] = []
        matched: dict[int, WebhookConnection] = {}
        for event in events:
            connections = await self.connections(target, event)
            for connection in connections:
                matched.setdefault(connection.id, connection)
            items.extend(await self._tasks(target, event, connections))
        if forward and target.forward_webhooks:
            settings = await self.settings.get(environment_id)
            for connection in matched.values():
                body = {
                    "from": target.provider,
                    "type": "forward",
                    "connectionId": connection.connection_id,
                    "providerConfigKey": target.provider_config_key,
                    "payload": request.payload,
                }
                items.append(
                    Delivery(
                        environment_id=environment_id,
                        type="forward",
                        body=body,
                        urls=settings.destinations(connection.webhook_url_override),
                        headers=forwarded_headers,
                        connection_id=connection.connection_id,
                        provider_config_key=target.provider_config_key,
                    )
                )
            if not matched:
                # unwrapped: the provider's body as it came (a JSON array for some providers)
                items.append(
                    Delivery(
                        environment_id=environment_id,
                        type="forward",
                        body=cast(Mapping[str, Any], request.payload),
                        urls=settings.destinations(None),
                        headers=forwarded_headers,
                        provider_config_key=target.provider_config_key,
                    )
                )
        # deliveries without a URL would be dropped by the outbox: skip the write when nothing is left
        if any(not isinstance(item, Delivery) or item.urls for item in items):
            await self.commit.add(items)

    async def _tasks(
        self, target: WebhookTarget, event: RoutedEvent, connections: Sequence[WebhookConnection]
    ) -> list[TaskToCreate]:
        functions = {f.id: f for f in target.functions if f.wants(event.event_type)}
        if not functions or not connections:
            return []
        by_row = {c.id: c for c in connections}
        tasks = []
        for sync in await self.syncs_of(target, connections):
            function = functions.get(sync.function_id)
            connection = by_row.get(sync.connection_row_id)
            if function is None or connection is None:
                continue
            tasks.append(
                TaskToCreate(
                    name=str(uuid.uuid4()),
                    group_key=f"webhook:environment:{target.environment.id}",
                    args={
                        "type": "webhook",
                        "environment_id": target.environment.id,
                        "nango_connection_id": connection.id,
                        "connection_id": connection.connection_id,
                        "provider_config_key": target.provider_config_key,
                        "function": function.name,
                        "sync_id": sync.id,
                        "variant": sync.variant,
                        "full": False,
                        "empty_cache": False,
                        "input": event.payload,
                    },
                )
            )
        return tasks

    async def close(self) -> None:
        for cache in (self._environments, self._targets, self._connections, self._sync_cache):
            await cache.close()
        await self.commit.close()


__all__ = [
    "GroupCommit",
    "IncomingWebhooks",
    "Reply",
    "TtlCache",
    "WebhookEnvironment",
    "WebhookTarget",
    "forwardable_headers",
]
