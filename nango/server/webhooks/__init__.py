"""Outgoing webhooks on the server's side (docs/webhooks.md): per-environment settings and signing
keys (`settings`), the outbox that hands events to jobs and the orchestrator durably (`outbox`), the
auth webhooks (`auth`), and incoming provider webhooks (`incoming`, `routers`)."""
