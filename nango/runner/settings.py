from __future__ import annotations

from pydantic import Field

from nango.config import Port, ProcessSettings, ServiceUrls


class RunnerSettings(ProcessSettings, ServiceUrls):
    port: Port = Field(3006, validation_alias="NANGO_RUNNER_PORT")
