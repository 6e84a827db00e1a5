"""SQL for the control-plane tables (schema NANGO_DB_SCHEMA), and nothing else."""

from nango.server.store.connections import ConnectionFilter, ConnectionRow, ConnectionStore, EndUserValues
from nango.server.store.environments import EnvironmentRow, EnvironmentStore
from nango.server.store.integrations import IntegrationRow, IntegrationStore, IntegrationValues

__all__ = [
    "ConnectionFilter",
    "ConnectionRow",
    "ConnectionStore",
    "EndUserValues",
    "EnvironmentRow",
    "EnvironmentStore",
    "IntegrationRow",
    "IntegrationStore",
    "IntegrationValues",
]
