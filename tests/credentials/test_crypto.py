from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from ipaas.credentials.crypto import CredentialCipher


def test_round_trip_and_rotation() -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    token = CredentialCipher(old).encrypt({"api_key": "k"})
    rotated = CredentialCipher(new + b"," + old)
    assert rotated.decrypt(token) == {"api_key": "k"}
    assert CredentialCipher(new).decrypt(rotated.encrypt({"a": "b"})) == {"a": "b"}


def test_wrong_key_is_a_clear_error() -> None:
    token = CredentialCipher(Fernet.generate_key()).encrypt({"a": "b"})
    with pytest.raises(ValueError, match="IPAAS_SECRET_KEY"):
        CredentialCipher(Fernet.generate_key()).decrypt(token)


def test_cached_plaintext_cannot_be_changed_by_a_caller() -> None:
    cipher = CredentialCipher(Fernet.generate_key())
    token = cipher.encrypt({"api_key": "sentinel-key"})
    cipher.decrypt(token)["api_key"] = "changed"
    assert cipher.decrypt(token) == {"api_key": "sentinel-key"}
    assert "sentinel-key" not in repr(cipher)


def test_rotate_re_encrypts_only_what_the_first_key_does_not_read() -> None:
    old, new, other = Fernet.generate_key(), Fernet.generate_key(), Fernet.generate_key()
    token = CredentialCipher(old).encrypt({"api_key": "k"})
    both = CredentialCipher(new + b"," + old)
    rotated = both.rotate(token)
    assert rotated is not None
    assert CredentialCipher(new).decrypt(rotated) == {"api_key": "k"}
    assert both.rotate(rotated) is None  # already under the first key
    with pytest.raises(ValueError, match="IPAAS_SECRET_KEY"):
        both.rotate(CredentialCipher(other).encrypt({"a": "b"}))
