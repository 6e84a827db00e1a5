"""Record payloads are sealed with the platform's keys in the binary form of `nango.crypto.PayloadSealer`."""

from __future__ import annotations

from pathlib import Path

from nango.config import EncryptionSettings
from nango.crypto import PayloadSealer


def payload_sealer(settings: EncryptionSettings, *, mode: str, data_dir: Path) -> tuple[PayloadSealer, bool]:
    """The sealer over the keys `settings.keyring()` resolves (as every service does); (sealer, generated_now)."""
    keyring, generated = settings.keyring(mode=mode, data_dir=data_dir)
    return keyring.payload_sealer(), generated


__all__ = ["PayloadSealer", "payload_sealer"]
