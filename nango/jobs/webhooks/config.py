"""How the delivery loop behaves, built once from the settings (`WebhookDeliverySettings.delivery_config`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class DeliveryConfig:
    timeout: timedelta = timedelta(seconds=20)
    attempts: int = 12
    retry_base: timedelta = timedelta(seconds=3)
    retry_max_delay: timedelta = timedelta(seconds=300)
    concurrency: int = 64
    batch_size: int = 100
    poll: timedelta = timedelta(milliseconds=500)
    circuit_failures: int = 5
    circuit_window: timedelta = timedelta(seconds=10)
    circuit_cooldown: timedelta = timedelta(seconds=60)
    delivered_retention: timedelta = timedelta(hours=1)
    failed_retention: timedelta = timedelta(days=7)
    # a row whose settings (signing key) cannot be read is tried again after this long, no attempt used
    settings_retry: timedelta = timedelta(seconds=2)
    # while one replica probes an URL whose circuit cooled down, its other rows wait this long
    probe_wait: timedelta = timedelta(seconds=2)

    def backoff(self, attempts_used: int) -> timedelta:
        """The wait after the `attempts_used`-th failed attempt: base · 2^(n-1), capped."""
        exponent = min(max(attempts_used - 1, 0), 40)
        return min(self.retry_base * (1 << exponent), self.retry_max_delay)

    @property
    def lease(self) -> timedelta:
        """How long a claimed row stays with its claimer: past any send's timeout, so a live replica's
        rows are never taken from it, yet a dead replica's come back within a minute or so."""
        margin: timedelta = max(self.timeout / 2, timedelta(seconds=10))
        return self.timeout + margin


__all__ = ["DeliveryConfig"]
