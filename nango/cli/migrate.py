"""`nango migrate`: every service's migrations, each into its own schema (and database)."""

from __future__ import annotations

import sys

from nango.config import DatabaseSettings, LogsSettings, SettingsError, load
from nango.errors import NangoError


async def migrate_all() -> int:
    from nango.jobs.app import migrate as migrate_jobs
    from nango.jobs.settings import JobsDatabaseSettings
    from nango.oplog import migrate_logs
    from nango.orchestrator.app import migrate as migrate_orchestrator
    from nango.orchestrator.settings import OrchestratorDatabaseSettings
    from nango.persist.app import migrate as migrate_persist
    from nango.persist.settings import RecordsDatabaseSettings
    from nango.server.app import migrate as migrate_server

    try:
        steps = [
            ("server", migrate_server(load(DatabaseSettings))),
            ("orchestrator", migrate_orchestrator(load(OrchestratorDatabaseSettings))),
            ("jobs", migrate_jobs(load(JobsDatabaseSettings))),
            ("persist", migrate_persist(load(RecordsDatabaseSettings))),
            ("logs", migrate_logs(load(DatabaseSettings).main_database_url(), load(LogsSettings).logs_schema)),
        ]
    except SettingsError as exc:
        print(f"nango migrate: {exc}", file=sys.stderr)
        return 2
    for name, step in steps:
        try:
            applied = await step
        except NangoError as exc:
            print(f"nango migrate: {name}: {exc.message}", file=sys.stderr)
            return 1
        print(f"{name}: {', '.join(applied) if applied else 'up to date'}")
    return 0
