"""Record payloads sealed with AES-256-GCM as raw bytes: `0x01 | key id (4 bytes) | nonce (12) | ciphertext+tag`.

The same keys and key ids as `nango.crypto.Keyring` (NANGO_ENCRYPTION_KEY seals, the previous keys still
open), so a rotation covers records too. Not the keyring's text tokens: their base64 costs ~10 µs per
1 KB payload to decode on Python 3.11 against ~1 µs for AES-GCM itself, and reads are the hot path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nango.config import EncryptionSettings
from nango.crypto import DecryptionFailed, UnknownEncryptionKey, key_id, load_or_create_key_file, parse_key

_VERSION = b"\x01"
_KEY_ID_BYTES = 4
_NONCE_BYTES = 12
_HEADER = len(_VERSION) + _KEY_ID_BYTES


class PayloadSealer:
    def __init__(self, primary: bytes, previous: list[bytes] | None = None) -> None:
        self._ciphers = {bytes.fromhex(key_id(k)): AESGCM(k) for k in [*(previous or []), primary]}
        primary_id = bytes.fromhex(key_id(primary))
        self._primary = self._ciphers[primary_id]
        self._prefix = _VERSION + primary_id

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return self._prefix + nonce + self._primary.encrypt(nonce, plaintext, aad)

    def seal_many(self, plaintexts: Sequence[bytes], aads: Sequence[bytes]) -> list[bytes]:
        """`seal` for a batch, with one call for all its random nonces."""
        randomness = os.urandom(_NONCE_BYTES * len(plaintexts))
        encrypt, prefix = self._primary.encrypt, self._prefix
        sealed = []
        for index, (plaintext, aad) in enumerate(zip(plaintexts, aads, strict=True)):
            nonce = randomness[index * _NONCE_BYTES : (index + 1) * _NONCE_BYTES]
            sealed.append(prefix + nonce + encrypt(nonce, plaintext, aad))
        return sealed

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        if sealed[:1] != _VERSION:
            raise DecryptionFailed("stored record payload is not a recognised ciphertext")
        cipher = self._ciphers.get(sealed[1:_HEADER])
        if cipher is None:
            raise UnknownEncryptionKey(
                f"a record payload was sealed with key {sealed[1:_HEADER].hex()}, which is neither "
                "NANGO_ENCRYPTION_KEY nor one of NANGO_ENCRYPTION_PREVIOUS_KEYS"
            )
        try:
            return cipher.decrypt(sealed[_HEADER : _HEADER + _NONCE_BYTES], sealed[_HEADER + _NONCE_BYTES :], aad)
        except InvalidTag:
            raise DecryptionFailed(
                f"a record payload sealed with key {sealed[1:_HEADER].hex()} failed authentication"
            ) from None


def payload_sealer(settings: EncryptionSettings, *, mode: str, data_dir: Path) -> tuple[PayloadSealer, bool]:
    """The sealer over the platform's keys; `settings.keyring()` decides (and in development mode
    creates) the primary key exactly as every other service does. Returns (sealer, generated_now)."""
    _, generated = settings.keyring(mode=mode, data_dir=data_dir)
    if settings.encryption_key is not None:
        primary = parse_key(settings.encryption_key.get_secret_value())
    else:
        primary = parse_key(load_or_create_key_file(data_dir / "encryption.key")[0])
    previous = []
    if settings.previous_encryption_keys is not None:
        previous = [parse_key(k) for k in settings.previous_encryption_keys.get_secret_value().split(",") if k.strip()]
    return PayloadSealer(primary, previous), generated


__all__ = ["PayloadSealer", "payload_sealer"]
