"""Wiring of the runner process: the zygote, the bundle cache, the task manager, registration with
jobs and the gRPC server on NANGO_RUNNER_PORT."""

from __future__ import annotations

import asyncio
import logging

from nango.blob import open_blob_store
from nango.grpckit import ServiceBinding, serve_until
from nango.jobs.client import JobsClient
from nango.persist.client import PersistClient
from nango.runner.bundles import BundleCache
from nango.runner.daemons import Registration
from nango.runner.rpc import SERVICE_NAME, RunnerServicer
from nango.runner.settings import RunnerSettings
from nango.runner.tasks import TaskManager
from nango.runner.wire import WorkerConfig
from nango.runner.workers import Zygote
from nango.runner.zygote import harden_process
from nangopb.runner.v1 import runner_pb2_grpc

log = logging.getLogger(__name__)


def worker_config(settings: RunnerSettings) -> WorkerConfig:
    """What workers are told: service addresses and the proxy's rules, never the internal token."""
    return WorkerConfig(
        persist_url=settings.persist_url,
        server_url=settings.server_url,
        providers_file=str(settings.providers_file) if settings.providers_file else None,
        outbound_url_policy=settings.outbound_url_policy,
        override_denylist=settings.proxy_base_url_override_denylist,
        override_enabled=settings.proxy_base_url_override_enabled,
        pool=settings.outbound_pool(),
    )


async def run(settings: RunnerSettings, stop: asyncio.Event) -> None:
    # workers run customer code under our uid: they must not read this process's memory or environment
    harden_process()
    token = settings.internal_token.get_secret_value()
    data_dir = settings.resolved_data_dir()
    store = open_blob_store(settings, data_dir)
    zygote = Zygote(worker_config(settings))
    jobs = JobsClient(settings.jobs_url, token)
    persist = PersistClient(settings.persist_url, token)
    try:
        await zygote.start()
        bundles = BundleCache(
            store,
            data_dir / "runner" / "bundles",
            capacity=settings.bundle_cache_size,
            max_bytes=settings.max_bundle_mb * 1024 * 1024,
        )
        manager = TaskManager(settings, zygote, bundles, jobs, persist)
        registration = Registration(jobs, manager.node_id, settings.resolved_advertised_url(), settings.capacity)
        registration.start()
        try:
            binding = ServiceBinding(
                SERVICE_NAME, RunnerServicer(manager), runner_pb2_grpc.add_RunnerServiceServicer_to_server
            )
            await serve_until(
                stop,
                [binding],
                host=settings.bind_host,
                port=settings.port,
                token=token,
                grace=settings.shutdown_grace_seconds,
            )
        finally:
            await registration.stop()
            await manager.shutdown(settings.shutdown_grace_seconds)
    finally:
        await zygote.stop()
        await jobs.close()
        await persist.close()
        await store.close()
