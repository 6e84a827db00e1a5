"""Built-in webhook routers, by the name a provider gives in `webhook_routing_script`.

A provider without the field, or naming a router that is not built in, has no router: its webhooks
are answered 204 and nothing runs or is forwarded (reference §7.1).
"""

from __future__ import annotations

from nango.server.webhooks.routers import github, hubspot, intercom, jira, linear, shopify, slack, stripe, zendesk
from nango.server.webhooks.routers.base import (
    ConnectionIdentifier,
    IncomingRequest,
    IntegrationSecrets,
    InvalidSignature,
    RoutedEvent,
    Router,
    RoutingResult,
)

ROUTERS: dict[str, Router] = {
    "githubWebhookRouting": github.route_oauth_app,
    "githubAppWebhookRouting": github.route_app,
    "githubAppOauthWebhookRouting": github.route_app,
    "slackWebhookRouting": slack.route,
    "hubspotWebhookRouting": hubspot.route,
    "linearWebhookRouting": linear.route,
    "jiraWebhookRouting": jira.route,
    "stripeWebhookRouting": stripe.route,
    "shopifyWebhookRouting": shopify.route,
    "zendeskWebhookRouting": zendesk.route,
    "intercomWebhookRouting": intercom.route,
}


def router_for(name: str | None) -> Router | None:
    return ROUTERS.get(name) if name else None


__all__ = [
    "ROUTERS",
    "ConnectionIdentifier",
    "IncomingRequest",
    "IntegrationSecrets",
    "InvalidSignature",
    "RoutedEvent",
    "Router",
    "RoutingResult",
    "router_for",
]
