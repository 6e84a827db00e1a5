from __future__ import annotations

import socket

from pydantic import Field

from nango.config import BlobSettings, Port, ProcessSettings, ServiceUrls
from nango.outbound import OutboundSettings
from nango.providers import ProvidersSettings
from nango.proxycore import ProxySettings


class RunnerSettings(ProcessSettings, ServiceUrls, BlobSettings, ProvidersSettings, OutboundSettings, ProxySettings):
    port: Port = Field(3006, validation_alias="NANGO_RUNNER_PORT")
    # how jobs reaches this runner (host:port); unset: <hostname>:<NANGO_RUNNER_PORT>
    advertised_url: str | None = Field(None, validation_alias="NANGO_RUNNER_ADVERTISED_URL", min_length=3)
    node_id: str | None = Field(None, validation_alias="RUNNER_NODE_ID", min_length=1, max_length=255)
    capacity: int = Field(16, ge=1, le=1024, validation_alias="RUNNER_CAPACITY")
    # address space of one worker process; the Python runtime itself takes about 250 MB of it
    memory_limit_mb: int = Field(2048, ge=384, le=1_048_576, validation_alias="RUNNER_MEMORY_LIMIT_MB")
    cpu_limit_seconds: int = Field(3600, ge=1, le=7 * 86_400, validation_alias="RUNNER_CPU_LIMIT_SECONDS")
    # a task also stops when its task token expires, whichever comes first
    wall_time_limit_seconds: float = Field(
        86_400.0, gt=0, le=7 * 86_400, validation_alias="RUNNER_WALL_TIME_LIMIT_SECONDS"
    )
    inspect_timeout_seconds: float = Field(60.0, gt=0, le=3600, validation_alias="RUNNER_INSPECT_TIMEOUT_SECONDS")
    heartbeat_interval_ms: int = Field(30_000, ge=10, le=3_600_000, validation_alias="RUNNER_HEARTBEAT_INTERVAL_MS")
    bundle_cache_size: int = Field(200, ge=1, le=100_000, validation_alias="RUNNER_BUNDLE_CACHE_SIZE")
    # bundle versions kept imported in a template process to fork their workers from; 0: import per task
    template_count: int = Field(16, ge=0, le=1024, validation_alias="RUNNER_TEMPLATE_COUNT")
    max_bundle_mb: int = Field(50, ge=1, le=1024, validation_alias="RUNNER_MAX_BUNDLE_MB")

    def resolved_node_id(self) -> str:
        return self.node_id or f"{socket.gethostname()}-{self.port}"

    def resolved_advertised_url(self) -> str:
        return self.advertised_url or f"{socket.gethostname()}:{self.port}"
