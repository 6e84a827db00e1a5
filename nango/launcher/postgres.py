"""The embedded Postgres `nango up` runs when no database is configured (pgserver, from PyPI).

It lives under `<data dir>/pgdata`, listens on a unix socket only, and keeps its data across
restarts. A server left running by a crashed launcher is adopted rather than started twice.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from nango.db import connect

log = logging.getLogger(__name__)

DATABASE = "nango"


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.pgdata = data_dir / "pgdata"
        self._server: Any = None

    async def start(self) -> str:
        """Start (or adopt) the server and return the URL of the `nango` database."""
        self.pgdata.mkdir(parents=True, exist_ok=True)
        logging.getLogger("pgserver").setLevel(logging.WARNING)
        self._server = await asyncio.to_thread(self._start_blocking)
        admin_url = self._server.get_uri()
        conn = await connect(admin_url, timeout=30)
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
                await conn.execute(f"CREATE DATABASE {DATABASE}")
        finally:
            await conn.close()
        return str(self._server.get_uri(DATABASE))

    def _start_blocking(self) -> Any:
        import pgserver

        return pgserver.get_server(self.pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]

    @property
    def pid(self) -> int | None:
        return int(self._server.get_pid()) if self._server is not None else None

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await asyncio.to_thread(server.cleanup)
