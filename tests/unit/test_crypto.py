from __future__ import annotations

import base64
from pathlib import Path

import pytest

from nango.crypto import (
    DecryptionFailed,
    Keyring,
    UnknownEncryptionKey,
    generate_key,
    key_id,
    load_or_create_key_file,
    parse_key,
)


def test_sealed_value_names_its_key_and_opens() -> None:
    ring = Keyring.from_encoded(generate_key())
    sealed = ring.seal("gho_secret_token", aad="connection:1")
    version, kid, _ = sealed.split(".", 2)
    assert (version, kid) == ("v1", ring.primary_id)
    assert "gho_secret_token" not in sealed
    assert ring.open_text(sealed, aad="connection:1") == "gho_secret_token"


def test_each_seal_uses_a_fresh_nonce() -> None:
    ring = Keyring.from_encoded(generate_key())
    assert ring.seal("same") != ring.seal("same")


def test_rotation_new_key_seals_old_key_still_opens() -> None:
    old, new = generate_key(), generate_key()
    before = Keyring.from_encoded(old).seal("value")
    rotated = Keyring.from_encoded(new, previous=[old])
    assert rotated.open_text(before) == "value"
    assert not rotated.sealed_with_primary(before)
    after = rotated.seal("value")
    assert rotated.sealed_with_primary(after)
    assert after.split(".")[1] == key_id(parse_key(new))


def test_missing_key_is_named_in_the_error() -> None:
    old = Keyring.from_encoded(generate_key())
    sealed = old.seal("value")
    with pytest.raises(UnknownEncryptionKey, match=old.primary_id):
        Keyring.from_encoded(generate_key()).open(sealed)


@pytest.mark.parametrize("mutate", ["tamper", "aad", "garbage", "version"])
def test_tampering_is_detected(mutate: str) -> None:
    ring = Keyring.from_encoded(generate_key())
    sealed = ring.seal("value", aad="row:1")
    aad = "row:1"
    if mutate == "tamper":
        sealed = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    elif mutate == "aad":
        aad = "row:2"
    elif mutate == "garbage":
        sealed = "not-a-ciphertext"
    else:
        sealed = "v9" + sealed[2:]
    with pytest.raises(DecryptionFailed):
        ring.open(sealed, aad=aad)


@pytest.mark.parametrize(
    ("value", "message"),
    [("not base64!!", "base64"), (base64.b64encode(b"short").decode(), "32 bytes")],
)
def test_bad_keys_are_refused(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_key(value)


def test_key_file_is_created_private_once(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "encryption.key"
    key, created = load_or_create_key_file(path)
    assert created
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_key_file(path) == (key, False)
