"""`nango up`: the whole platform on one machine, with embedded defaults for what is not configured.

Order of events: settings are checked; the encryption key and the internal token are resolved
(generated into the data directory in development mode); an embedded Postgres starts when no
database is configured; the five services start as supervised child processes (each applies its
own migrations); once all are healthy the URLs and the dev secret key are printed. Ctrl-C stops the
services first, then Postgres.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
from pathlib import Path

from nango import __version__
from nango.config import SettingsError, load
from nango.launcher.postgres import EmbeddedPostgres
from nango.launcher.settings import LauncherSettings
from nango.launcher.supervisor import Child, GaveUp, Supervisor
from nango.telemetry import register_secret

log = logging.getLogger("nango.up")


def _say(text: str) -> None:
    print(text, flush=True)


def _token(data_dir: Path) -> str:
    """The internal token shared by the services of this machine (kept across restarts)."""
    path = data_dir / "internal.token"
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


def _ports_in_use(host: str, ports: dict[str, int]) -> list[str]:
    busy = []
    for variable, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                busy.append(f"{port} ({variable})")
    return busy


async def _http_ok(host: str, port: int, path: str) -> bool:
    """True when `GET path` answers 200 within a second (plain asyncio: the launcher imports no HTTP
    client before the services are started, so they start sooner)."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(1):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode())
            await writer.drain()
            status = (await reader.readline()).split()
            return len(status) >= 2 and status[1] == b"200"
    except (OSError, TimeoutError):
        return False
    finally:
        if writer is not None:
            writer.close()


async def _grpc_healthy(target: str) -> bool:
    # imported once the services are started: grpc and its instrumentation take a while to import
    from nango.grpckit import check_health

    return await check_health(target)


async def up(settings: LauncherSettings) -> int:
    data_dir = settings.resolved_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    _, generated = settings.keyring(mode=settings.mode, data_dir=data_dir)
    key_file = data_dir / "encryption.key"
    if generated:
        _say("")
        _say("!" * 78)
        _say("!! NANGO_ENCRYPTION_KEY is not set. A new key was generated for development and stored in")
        _say(f"!!   {key_file}")
        _say("!! Everything encrypted (credentials, secrets) depends on it: back it up, and set")
        _say("!! NANGO_ENCRYPTION_KEY before running in production.")
        _say("!" * 78)
        _say("")
    encryption_key = (
        settings.encryption_key.get_secret_value() if settings.encryption_key else key_file.read_text().strip()
    )
    token = settings.internal_token.get_secret_value() if settings.internal_token else _token(data_dir)
    register_secret(token)
    register_secret(encryption_key)
    local = settings.local_host()

    ports = {
        "SERVER_PORT": settings.server_port,
        "NANGO_SERVER_GRPC_PORT": settings.server_grpc_port,
        "NANGO_JOBS_PORT": settings.jobs_port,
        "NANGO_RUNNER_PORT": settings.runner_port,
        "NANGO_PERSIST_PORT": settings.persist_port,
        "NANGO_ORCHESTRATOR_PORT": settings.orchestrator_port,
    }
    if settings.serve_connect_ui:
        ports["NANGO_CONNECT_UI_PORT"] = settings.connect_ui_port
    busy = _ports_in_use(settings.bind_host if settings.bind_host != "::" else "0.0.0.0", ports)
    if busy:
        _say(f"nango up: port already in use: {', '.join(busy)}; stop what uses it or change the variable")
        return 1

    postgres: EmbeddedPostgres | None = None
    env = dict(os.environ)
    if not settings.database_configured():
        postgres = EmbeddedPostgres(data_dir)
        _say(f"Starting embedded Postgres in {postgres.pgdata} ...")
        env["NANGO_DATABASE_URL"] = await postgres.start()
    env.update(
        {
            "NANGO_INTERNAL_TOKEN": token,
            "NANGO_ENCRYPTION_KEY": encryption_key,
            "NANGO_DATA_DIR": str(data_dir),
            "NANGO_SERVER_URL": settings.server_url or f"http://localhost:{settings.server_port}",
            "SERVER_SERVICE_URL": f"{local}:{settings.server_grpc_port}",
            "ORCHESTRATOR_SERVICE_URL": f"{local}:{settings.orchestrator_port}",
            "JOBS_SERVICE_URL": f"{local}:{settings.jobs_port}",
            "RUNNER_SERVICE_URL": f"{local}:{settings.runner_port}",
            "PERSIST_SERVICE_URL": f"{local}:{settings.persist_port}",
            "NANGO_CONNECT_UI_PORT": str(settings.connect_ui_port),
            "FLAG_SERVE_CONNECT_UI": "true" if settings.serve_connect_ui else "false",
            "NANGO_PUBLIC_CONNECT_URL": settings.connect_url(),
            "PYTHONUNBUFFERED": "1",
        }
    )

    def grpc_child(name: str, port: int) -> Child:
        return Child(name, env, lambda: _grpc_healthy(f"{local}:{port}"))

    server = Child(
        "server",
        env,
        lambda: _both(
            _http_ok(local, settings.server_port, "/health"),
            _grpc_healthy(f"{local}:{settings.server_grpc_port}"),
            *([_http_ok(local, settings.connect_ui_port, "/health")] if settings.serve_connect_ui else []),
        ),
    )
    supervisor = Supervisor(
        [
            server,
            grpc_child("orchestrator", settings.orchestrator_port),
            grpc_child("jobs", settings.jobs_port),
            grpc_child("runner", settings.runner_port),
            grpc_child("persist", settings.persist_port),
        ]
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    code = 0
    try:
        await supervisor.start_all()
        waiting = asyncio.ensure_future(supervisor.wait_healthy(settings.startup_timeout_seconds))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait([waiting, stopped], return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            waiting.cancel()
            return 0
        stopped.cancel()
        unhealthy = waiting.result()
        if unhealthy:
            _say(f"nango up: not healthy after {settings.startup_timeout_seconds:.0f}s: {', '.join(unhealthy)}")
            return 1
        await _print_banner(settings, token, local, postgres)
        watching = asyncio.ensure_future(supervisor.watch())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait([watching, stopped], return_when=asyncio.FIRST_COMPLETED)
        if watching.done() and watching.exception() is not None:
            raise watching.exception()  # type: ignore[misc]
        stopped.cancel()
    except GaveUp as exc:
        _say(f"nango up: {exc}; stopping")
        code = 1
    finally:
        _say("Stopping services ...")
        codes = await supervisor.stop_all(settings.shutdown_grace_seconds)
        log.info("services stopped", extra={"exit_codes": codes})
        if postgres is not None:
            await postgres.stop()
        _say("Stopped.")
    return code


async def _both(*checks: object) -> bool:
    results = await asyncio.gather(*checks)  # type: ignore[call-overload]
    return all(results)


async def _print_banner(settings: LauncherSettings, token: str, local: str, postgres: EmbeddedPostgres | None) -> None:
    from nango.server.client import ServerClient

    client = ServerClient(f"{local}:{settings.server_grpc_port}", token)
    try:
        environments = await client.list_environments()
    finally:
        await client.close()
    keys = {e.name: e.secret_key for e in environments}
    server_url = settings.server_url or f"http://localhost:{settings.server_port}"
    _say("")
    _say(f"Nango {__version__} is up.")
    _say(f"  REST API            {server_url}")
    if settings.serve_connect_ui:
        _say(f"  Connect UI          {settings.connect_url()}")
    _say(
        f"  Internal gRPC       server :{settings.server_grpc_port}  jobs :{settings.jobs_port}  "
        f"runner :{settings.runner_port}  persist :{settings.persist_port}  orchestrator :{settings.orchestrator_port}"
    )
    _say(f"  Database            {'embedded Postgres (' + str(postgres.pgdata) + ')' if postgres else 'configured'}")
    _say(f"  Data directory      {settings.resolved_data_dir()}")
    if "dev" in keys:
        _say(f"  dev secret key      {keys['dev']}")
    _say("Press Ctrl-C to stop.")
    _say("")


def main() -> int:
    try:
        settings = load(LauncherSettings)
    except (SettingsError, ValueError) as exc:
        print(f"nango up: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from nango.process import install_event_loop_policy

    install_event_loop_policy()
    with contextlib.suppress(KeyboardInterrupt):
        try:
            return asyncio.run(up(settings))
        except SettingsError as exc:
            print(f"nango up: {exc}", file=sys.stderr)
            return 2
    return 0
