"""Outgoing webhooks in jobs: the deliveries table (`store.py`), the loop that claims, signs, sends,
retries and records them (`delivery.py`), the per-URL circuit breaker (`breaker.py`) and the
completion publisher that turns ended syncs and async actions into deliveries (`publisher.py`).
docs/webhooks.md is the contract; nango/jobs/README.md says what must stay true."""
