"""SQL for the control-plane tables (schema NANGO_DB_SCHEMA), and nothing else."""

from nango.server.store.environments import EnvironmentRow, EnvironmentStore

__all__ = ["EnvironmentRow", "EnvironmentStore"]
