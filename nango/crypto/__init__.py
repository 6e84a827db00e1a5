"""AES-256-GCM encryption at rest, with keys that rotate.

Every ciphertext names the key that sealed it: `v1.<key id>.<base64url(nonce | ciphertext | tag)>`,
where the key id is the first 8 hex digits of SHA-256(key). A `Keyring` seals with its primary key
and opens with any key it holds, so a new primary key can be introduced while old rows are still
readable, and re-encrypted in the background (`nango keys rotate`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nango.errors import InternalError

_VERSION = "v1"
_NONCE_BYTES = 12


class DecryptionFailed(InternalError):
    code = "decryption_failed"
    default_message = "Stored data could not be decrypted"


class UnknownEncryptionKey(DecryptionFailed):
    code = "unknown_encryption_key"
    default_message = "Stored data was encrypted with a key that is not configured"


def parse_key(encoded: str) -> bytes:
    """A base64 string of exactly 32 bytes (`openssl rand -base64 32`), or ValueError."""
    try:
        raw = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64 (generate one with `openssl rand -base64 32`)") from None
    if len(raw) != 32:
        raise ValueError(f"must decode to 32 bytes for AES-256, got {len(raw)}")
    return raw


def generate_key() -> str:
    """A new random key, base64-encoded."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def sha256_hex(value: str) -> str:
    """Lookup hash for high-entropy secrets (API keys, session tokens)."""
    return hashlib.sha256(value.encode()).hexdigest()


class Keyring:
    def __init__(self, primary: bytes, previous: list[bytes] | None = None) -> None:
        self.primary_id = key_id(primary)
        self._ciphers = {key_id(k): AESGCM(k) for k in [*(previous or []), primary]}
        self._primary, self._previous = primary, list(previous or [])

    @classmethod
    def from_encoded(cls, primary: str, previous: list[str] | None = None) -> Keyring:
        return cls(parse_key(primary), [parse_key(p) for p in previous or []])

    @property
    def key_ids(self) -> list[str]:
        return list(self._ciphers)

    def seal(self, plaintext: str | bytes, aad: str = "") -> str:
        data = plaintext.encode() if isinstance(plaintext, str) else plaintext
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._ciphers[self.primary_id].encrypt(nonce, data, aad.encode() or None)
        body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{_VERSION}.{self.primary_id}.{body}"

    def open(self, token: str, aad: str = "") -> bytes:
        try:
            version, kid, body = token.split(".", 2)
        except ValueError:
            raise DecryptionFailed("stored value is not a recognised ciphertext") from None
        if version != _VERSION:
            raise DecryptionFailed(f"unsupported ciphertext version {version!r}")
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise UnknownEncryptionKey(
                f"stored data was encrypted with key {kid}, which is neither NANGO_ENCRYPTION_KEY "
                "nor one of NANGO_ENCRYPTION_PREVIOUS_KEYS"
            )
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            return cipher.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], aad.encode() or None)
        except (InvalidTag, ValueError, binascii.Error):
            raise DecryptionFailed(f"stored data sealed with key {kid} failed authentication") from None

    def open_text(self, token: str, aad: str = "") -> str:
        return self.open(token, aad).decode()

    def sealed_with_primary(self, token: str) -> bool:
        return token.split(".", 2)[1:2] == [self.primary_id]

    def payload_sealer(self) -> PayloadSealer:
        """The same keys, for bulk binary payloads (records)."""
        return PayloadSealer(self._primary, self._previous)


_PAYLOAD_VERSION = b"\x01"
_KEY_ID_BYTES = 4
_PAYLOAD_HEADER = len(_PAYLOAD_VERSION) + _KEY_ID_BYTES


class PayloadSealer:
    """Binary payloads: `0x01 | key id (4 bytes) | nonce (12) | ciphertext+tag`. The keyring's text
    tokens cost ~10 µs per KB of base64 to decode against ~1 µs for AES-GCM, too much on read paths."""

    def __init__(self, primary: bytes, previous: list[bytes] | None = None) -> None:
        self._ciphers = {bytes.fromhex(key_id(k)): AESGCM(k) for k in [*(previous or []), primary]}
        primary_id = bytes.fromhex(key_id(primary))
        self._primary = self._ciphers[primary_id]
        self._prefix = _PAYLOAD_VERSION + primary_id

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
        if sealed[:1] != _PAYLOAD_VERSION:
            raise DecryptionFailed("stored payload is not a recognised ciphertext")
        cipher = self._ciphers.get(sealed[1:_PAYLOAD_HEADER])
        if cipher is None:
            raise UnknownEncryptionKey(
                f"a payload was sealed with key {sealed[1:_PAYLOAD_HEADER].hex()}, which is neither "
                "NANGO_ENCRYPTION_KEY nor one of NANGO_ENCRYPTION_PREVIOUS_KEYS"
            )
        # views, not slices: a slice would copy the ciphertext before it is decrypted
        view = memoryview(sealed)
        try:
            return cipher.decrypt(
                view[_PAYLOAD_HEADER : _PAYLOAD_HEADER + _NONCE_BYTES], view[_PAYLOAD_HEADER + _NONCE_BYTES :], aad
            )
        except InvalidTag:
            raise DecryptionFailed(
                f"a payload sealed with key {sealed[1:_PAYLOAD_HEADER].hex()} failed authentication"
            ) from None

    def key_ids(self) -> set[str]:
        return {kid.hex() for kid in self._ciphers}

    def primary_prefix(self) -> bytes:
        """What every payload sealed with the primary key starts with."""
        return self._prefix


def load_or_create_key_file(path: Path) -> tuple[str, bool]:
    """The key stored at `path`, creating it (mode 0600) on first use. Returns (key, created)."""
    if path.exists():
        key = path.read_text().strip()
        parse_key(key)
        return key, False
    path.parent.mkdir(parents=True, exist_ok=True)
    key = generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key, True


__all__ = [
    "DecryptionFailed",
    "Keyring",
    "PayloadSealer",
    "UnknownEncryptionKey",
    "generate_key",
    "key_id",
    "load_or_create_key_file",
    "parse_key",
    "sha256_hex",
]
