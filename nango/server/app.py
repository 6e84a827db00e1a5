"""Wiring of the server process: database, keyring, catalog, control-plane services, the internal
gRPC API on NANGO_SERVER_GRPC_PORT and the public gateway on SERVER_PORT."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from nango.blob import open_blob_store
from nango.config import DatabaseSettings
from nango.db import create_pool, migrate_url
from nango.grpckit import ServiceBinding, start_server
from nango.jobs.client import JobsClient
from nango.kv import open_kv
from nango.oplog import migrate_logs, open_operations_log
from nango.orchestrator.client import OrchestratorClient
from nango.outbound import OutboundClient, oauth_policy
from nango.persist.client import PersistClient
from nango.providers import CatalogRef, CatalogReloader, load_catalog
from nango.proxycore import ProxyEngine
from nango.runner.client import RunnerClient
from nango.server import connect_ui
from nango.server.actions import ActionService
from nango.server.auth.direct import DirectAuth
from nango.server.auth.flows import FlowFinisher
from nango.server.auth.oauth1 import OAuth1Client
from nango.server.auth.oauth2 import OAuth2Client
from nango.server.auth.oauth2_flow import OAuthFlows
from nango.server.connect_sessions import ConnectSessionService
from nango.server.connections import ConnectionService
from nango.server.daemons import ConnectionKeepAlive, Housekeeping
from nango.server.environments import EnvironmentService
from nango.server.functions import FunctionService
from nango.server.gateway import build_app
from nango.server.gateway.context import Gateway
from nango.server.integrations import IntegrationService
from nango.server.keys import check_keys
from nango.server.proxy import ProxyService
from nango.server.records import RecordService
from nango.server.refresh import Refresher
from nango.server.rpc import SERVICE_NAME, TASK_METHODS, ServerServicer
from nango.server.settings import ServerSettings
from nango.server.store import ConnectionStore, EnvironmentStore, IntegrationStore
from nango.server.store.functions import FunctionStore
from nango.server.store.incoming_webhooks import IncomingWebhookStore
from nango.server.store.oauth_sessions import OAuthSessionStore
from nango.server.store.sessions import SessionStore
from nango.server.store.webhooks import OutboxStore, WebhookSettingsStore
from nango.server.sync_control import SyncControl
from nango.server.syncs import SyncScheduler
from nango.server.webhooks.auth import AuthWebhooks
from nango.server.webhooks.incoming import IncomingWebhooks
from nango.server.webhooks.outbox import OutboxRelay, WebhookOutbox
from nango.server.webhooks.settings import WebhookSettingsService
from nangopb.server.v1 import server_pb2_grpc

log = logging.getLogger(__name__)


async def migrate(db: DatabaseSettings) -> list[str]:
    return await migrate_url(db.main_database_url(), db.db_schema, "nango.server")


async def run(settings: ServerSettings, stop: asyncio.Event) -> None:
    data_dir = settings.resolved_data_dir()
    keyring, generated = settings.keyring(mode=settings.mode, data_dir=data_dir)
    if generated:
        log.warning(
            "NANGO_ENCRYPTION_KEY is not set: generated a development key and stored it in the data directory; "
            "set NANGO_ENCRYPTION_KEY (and keep it safe) before running in production",
            extra={"data_dir": str(data_dir)},
        )
    providers = CatalogRef(load_catalog(settings.providers_file))
    if settings.migrate_at_start:
        await migrate(settings)
        await migrate_logs(settings.main_database_url(), settings.logs_schema)
    pool = await create_pool(
        settings.main_database_url(),
        schema=settings.db_schema,
        application_name="nango-server",
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
    )
    kv = open_kv(settings.resolved_redis_url(), prefix=settings.redis_key_prefix)
    oplog = await open_operations_log(settings.main_database_url(), settings)
    reloader = CatalogReloader.from_settings(settings, providers)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(pool.close)
        stack.push_async_callback(kv.close)
        stack.push_async_callback(oplog.close, timeout=settings.shutdown_grace_seconds)
        outbound = await stack.enter_async_context(OutboundClient(settings.outbound_pool()))
        # token endpoints and credential checks: private hosts allowed (on-premise providers), loopback not
        http = outbound.session(oauth_policy(settings.outbound_url_policy, settings.outbound_url_policy_oauth))
        if reloader is not None:
            await reloader.start()
            stack.push_async_callback(reloader.stop)

        await check_keys(pool, keyring)
        environments = EnvironmentService(EnvironmentStore(pool), keyring)
        webhook_settings = WebhookSettingsService(WebhookSettingsStore(pool), keyring)
        environments.creation_hooks.append(webhook_settings.create_for)
        await environments.bootstrap(
            {
                "dev": settings.secret_key_dev.get_secret_value() if settings.secret_key_dev else None,
                "prod": settings.secret_key_prod.get_secret_value() if settings.secret_key_prod else None,
            }
        )
        # environments from before webhook settings existed get their signing key now
        await webhook_settings.ensure_all()
        outbox = WebhookOutbox(OutboxStore(pool))
        integrations = IntegrationService(IntegrationStore(pool), keyring, providers)
        oauth2 = OAuth2Client(http)
        direct_auth = DirectAuth.over(http)
        connections = ConnectionService(
            ConnectionStore(pool),
            integrations,
            keyring,
            kv,
            Refresher(oauth2, direct_auth.minters),
            oplog,
            cache_seconds=settings.proxy_connection_cache_ms / 1000,
            auth_webhooks=AuthWebhooks(webhook_settings, outbox),
        )
        token = settings.internal_token.get_secret_value()
        blobs = open_blob_store(settings, data_dir)
        stack.push_async_callback(blobs.close)
        orchestrator = OrchestratorClient(settings.orchestrator_url, token)
        stack.push_async_callback(orchestrator.close)
        runner_client = RunnerClient(settings.runner_url, token)
        stack.push_async_callback(runner_client.close)
        function_store = FunctionStore(pool)
        functions = FunctionService(
            function_store,
            integrations,
            connections,
            SyncScheduler(function_store, orchestrator, heartbeat_timeout=settings.sync_heartbeat_timeout()),
            blobs,
            runner_client,
        )
        connections.listeners.append(functions)
        incoming_webhooks = IncomingWebhooks(
            IncomingWebhookStore(pool),
            integrations,
            providers,
            webhook_settings,
            outbox,
            cache_seconds=settings.webhook_lookup_cache_ms / 1000,
        )
        connections.listeners.append(incoming_webhooks)
        stack.push_async_callback(incoming_webhooks.close)
        persist = PersistClient(settings.persist_url, token)
        stack.push_async_callback(persist.close)
        jobs = JobsClient(settings.jobs_url, token, timeout=5.0)
        stack.push_async_callback(jobs.close)
        actions = ActionService(functions, orchestrator, max_concurrency=settings.action_environment_max_concurrency)
        sessions = SessionStore(pool, connections.store)
        connect_sessions = ConnectSessionService(sessions, keyring, integrations, connections)
        finisher = FlowFinisher(connections, oplog)
        gateway = Gateway(
            environments=environments,
            integrations=integrations,
            connections=connections,
            providers=providers,
            kv=kv,
            connect_sessions=connect_sessions,
            finisher=finisher,
            functions=functions,
            server_url=settings.server_url,
            public_connect_url=settings.connect_url(),
            websockets_path=settings.websockets_path,
            public_auth_deprecated_after=settings.public_auth_deprecated_after,
            oauth=OAuthFlows(
                OAuthSessionStore(pool),
                sessions,
                keyring,
                environments,
                integrations,
                oauth2,
                finisher,
                oplog,
                oauth1=OAuth1Client(http),
                direct_auth=direct_auth,
                callback_url=settings.server_url.rstrip("/") + "/oauth/callback",
                state_cookie_enforced=settings.oauth_state_cookie_enforced,
            ),
            direct_auth=direct_auth,
            proxy=ProxyService(
                ProxyEngine(
                    outbound,
                    settings.outbound_policy(),
                    override_enabled=settings.proxy_base_url_override_enabled,
                ),
                connections,
                integrations,
                oplog,
                max_body=settings.body_limit_bytes(),
            ),
            records=RecordService(connections.store, persist),
            sync_control=SyncControl(functions, orchestrator, persist, jobs),
            actions=actions,
            webhook_settings=webhook_settings,
            webhook_url_policy=settings.outbound_policy(),
            incoming_webhooks=incoming_webhooks,
            webhook_max_body_bytes=settings.webhook_max_body_bytes,
            webhook_ingress_rate_limit_per_minute=(
                settings.webhook_ingress_rate_limit_per_min if settings.webhook_ingress_rate_limit_enforce else 0
            ),
            rate_limit_per_minute=settings.rate_limit_per_minute if settings.rate_limit_enabled else 0,
        )
        daemons: list[ConnectionKeepAlive | Housekeeping | OutboxRelay] = [
            ConnectionKeepAlive(
                connections,
                kv,
                every_seconds=settings.refresh_connections_every_min * 60,
                limit=settings.refresh_connections_limit,
            ),
            Housekeeping(
                connections.store,
                kv,
                every_seconds=settings.delete_old_data_every_min * 60,
                connections_max_days=settings.delete_old_connections_max_days,
            ),
            OutboxRelay(outbox, pool, jobs, orchestrator),
        ]
        for daemon in daemons:
            daemon.start()
            stack.push_async_callback(daemon.stop)
        if settings.serve_connect_ui:
            connect_ui_runner = await connect_ui.start(
                connect_ui.build_app(api_url=settings.server_url),
                host=settings.bind_host,
                port=settings.connect_ui_port,
                shutdown_timeout=settings.shutdown_grace_seconds,
            )
            stack.push_async_callback(connect_ui_runner.cleanup)

        servicer = ServerServicer(
            environments, integrations, connections, functions, actions, webhook_settings=webhook_settings
        )
        grpc_server = await start_server(
            [ServiceBinding(SERVICE_NAME, servicer, server_pb2_grpc.add_ServerServiceServicer_to_server)],
            host=settings.bind_host,
            port=settings.grpc_port,
            token=settings.internal_token.get_secret_value(),
            task_methods=TASK_METHODS,
        )
        runner = web.AppRunner(
            build_app(gateway, body_limit=settings.body_limit_bytes()),
            access_log=None,
            shutdown_timeout=settings.shutdown_grace_seconds,
        )
        await runner.setup()
        await web.TCPSite(runner, settings.bind_host, settings.port, reuse_address=True).start()
        log.info("listening", extra={"rest_port": settings.port, "grpc_port": grpc_server.port})
        await stop.wait()
        log.info("draining", extra={"grace_seconds": settings.shutdown_grace_seconds})
        await asyncio.gather(runner.cleanup(), grpc_server.stop(settings.shutdown_grace_seconds))
