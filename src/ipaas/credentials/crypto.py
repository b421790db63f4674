"""Credential secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256), with key rotation."""

from __future__ import annotations

import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

#: Decrypted secrets kept in memory (by ciphertext); cleared whole when full.
PLAIN_CACHE_SIZE = 1024


class UndecryptableSecret(ValueError):
    """No key of ``IPAAS_SECRET_KEY`` decrypts the ciphertext: it was encrypted under another
    key (a process started with a different key, a development key file left behind, an
    old key removed before ``ipaas secrets rotate``)."""

    def __init__(self) -> None:
        super().__init__("credential cannot be decrypted with the configured IPAAS_SECRET_KEY")


class CredentialCipher:
    """Encrypts with the first key; decrypts with any (``IPAAS_SECRET_KEY=new,old`` rotates)."""

    def __init__(self, keys: bytes) -> None:
        fernets = [Fernet(k.strip()) for k in keys.split(b",") if k.strip()]
        if not fernets:
            msg = "no credential encryption key"
            raise ValueError(msg)
        self._fernet = MultiFernet(fernets)
        self._first = fernets[0]
        self._plain: dict[str, dict[str, Any]] = {}

    def __repr__(self) -> str:
        return "CredentialCipher(keys='**********')"

    def encrypt(self, secret: dict[str, Any]) -> str:
        return self._fernet.encrypt(json.dumps(secret).encode()).decode()

    def rotate(self, ciphertext: str) -> str | None:
        """``ciphertext`` encrypted again under the first key, or ``None`` when it already
        is; ``UndecryptableSecret`` when no configured key decrypts it."""
        token = ciphertext.encode()
        try:
            self._first.decrypt(token)
        except InvalidToken:
            pass
        else:
            return None
        try:
            return self._fernet.rotate(token).decode()
        except InvalidToken as exc:
            raise UndecryptableSecret from exc

    def decrypt(self, ciphertext: str) -> dict[str, Any]:
        # Every execution of a workflow decrypts the same ciphertext; remembering the plain
        # value by ciphertext saves the work. The store is still asked for the credential
        # each time, so a deleted credential is not used again.
        cached = self._plain.get(ciphertext)
        if cached is not None:
            return dict(cached)
        try:
            value = json.loads(self._fernet.decrypt(ciphertext.encode()))
        except InvalidToken as exc:
            raise UndecryptableSecret from exc
        if not isinstance(value, dict):
            msg = "credential secret is not an object"
            raise ValueError(msg)
        if len(self._plain) >= PLAIN_CACHE_SIZE:
            self._plain.clear()
        self._plain[ciphertext] = value
        return dict(value)
