"""Jobs: pulls tasks from the orchestrator, dispatches them to runners, records sync-job history
and results, and sends outgoing webhooks through durable tasks."""
