from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr

from nango.config import EncryptionSettings, Port

# Any of these set means the operator brought a database; otherwise `nango up` embeds one.
DATABASE_VARIABLES = (
    "NANGO_DATABASE_URL",
    "NANGO_DB_HOST",
    "NANGO_DB_PORT",
    "NANGO_DB_USER",
    "NANGO_DB_PASSWORD",
    "NANGO_DB_NAME",
)


class LauncherSettings(EncryptionSettings):
    data_dir: Path = Field(Path("~/.nango"), validation_alias="NANGO_DATA_DIR")
    mode: Literal["development", "production"] = Field("development", validation_alias="NANGO_ENV")
    internal_token: SecretStr | None = Field(None, validation_alias="NANGO_INTERNAL_TOKEN", min_length=16)
    bind_host: str = Field("0.0.0.0", validation_alias="NANGO_BIND_HOST", min_length=1)
    server_url: str | None = Field(None, validation_alias="NANGO_SERVER_URL", pattern=r"^https?://")
    server_port: Port = Field(3003, validation_alias=AliasChoices("SERVER_PORT", "NANGO_PORT"))
    server_grpc_port: Port = Field(3004, validation_alias="NANGO_SERVER_GRPC_PORT")
    jobs_port: Port = Field(3005, validation_alias="NANGO_JOBS_PORT")
    runner_port: Port = Field(3006, validation_alias="NANGO_RUNNER_PORT")
    persist_port: Port = Field(3007, validation_alias="NANGO_PERSIST_PORT")
    orchestrator_port: Port = Field(3008, validation_alias="NANGO_ORCHESTRATOR_PORT")
    connect_ui_port: Port = Field(3009, validation_alias="NANGO_CONNECT_UI_PORT")
    serve_connect_ui: bool = Field(True, validation_alias="FLAG_SERVE_CONNECT_UI")
    public_connect_url: str | None = Field(None, validation_alias="NANGO_PUBLIC_CONNECT_URL", pattern=r"^https?://")
    startup_timeout_seconds: float = Field(90.0, gt=0, le=3600, validation_alias="NANGO_STARTUP_TIMEOUT_SECONDS")
    shutdown_grace_seconds: float = Field(10.0, ge=0, le=600, validation_alias="NANGO_SHUTDOWN_GRACE_SECONDS")

    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    def connect_url(self) -> str:
        return self.public_connect_url or f"http://localhost:{self.connect_ui_port}"

    def local_host(self) -> str:
        """Where the launcher reaches its children: loopback unless they bind one address."""
        return "127.0.0.1" if self.bind_host in ("0.0.0.0", "::", "") else self.bind_host

    @staticmethod
    def database_configured() -> bool:
        return any(os.environ.get(name) for name in DATABASE_VARIABLES)
