"""What the routes reach: the control-plane services and a few settings, in one app key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from aiohttp import web

from nango.kv import KVStore
from nango.outbound import OutboundPolicy
from nango.providers import CatalogRef
from nango.server.actions import ActionService
from nango.server.auth.direct import DirectAuth
from nango.server.auth.flows import FlowFinisher
from nango.server.auth.oauth2_flow import OAuthFlows
from nango.server.connect_sessions import ConnectSessionService
from nango.server.connections import ConnectionService
from nango.server.environments import EnvironmentService
from nango.server.functions import FunctionService
from nango.server.integrations import IntegrationService
from nango.server.proxy import ProxyService
from nango.server.records import RecordService
from nango.server.sync_control import SyncControl
from nango.server.webhooks.incoming import IncomingWebhooks
from nango.server.webhooks.settings import WebhookSettingsService


@dataclass
class Gateway:
    environments: EnvironmentService
    integrations: IntegrationService
    connections: ConnectionService
    providers: CatalogRef
    kv: KVStore
    connect_sessions: ConnectSessionService
    finisher: FlowFinisher
    functions: FunctionService
    server_url: str
    public_connect_url: str
    websockets_path: str
    public_auth_deprecated_after: datetime
    oauth: OAuthFlows
    direct_auth: DirectAuth
    proxy: ProxyService
    records: RecordService
    sync_control: SyncControl
    actions: ActionService
    webhook_settings: WebhookSettingsService
    # what a webhook URL must pass to be saved (jobs checks it again, with DNS, when it sends)
    webhook_url_policy: OutboundPolicy
    incoming_webhooks: IncomingWebhooks
    # 0 disables the public API rate limiter
    rate_limit_per_minute: int = 200
    # incoming provider webhooks: largest body, and the per-environment limit (0: not enforced)
    webhook_max_body_bytes: int = 5 * 1024 * 1024
    webhook_ingress_rate_limit_per_minute: int = 0

    def logo_url(self, provider: str) -> str:
        return f"{self.server_url.rstrip('/')}/images/template-logos/{provider}.svg"

    def webhook_url(self, environment_uuid: str, provider_config_key: str) -> str:
        return f"{self.server_url.rstrip('/')}/webhook/{environment_uuid}/{provider_config_key}"


GATEWAY = web.AppKey("gateway", Gateway)
