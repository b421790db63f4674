"""Credential secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256), with key rotation."""

from __future__ import annotations

import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class CredentialCipher:
    """Encrypts with the first key; decrypts with any (``IPAAS_SECRET_KEY=new,old`` rotates)."""

    def __init__(self, keys: bytes) -> None:
        fernets = [Fernet(k.strip()) for k in keys.split(b",") if k.strip()]
        if not fernets:
            msg = "no credential encryption key"
            raise ValueError(msg)
        self._fernet = MultiFernet(fernets)

    def __repr__(self) -> str:
        return "CredentialCipher(keys='**********')"

    def encrypt(self, secret: dict[str, Any]) -> str:
        return self._fernet.encrypt(json.dumps(secret).encode()).decode()

    def decrypt(self, ciphertext: str) -> dict[str, Any]:
        try:
            value = json.loads(self._fernet.decrypt(ciphertext.encode()))
        except InvalidToken as exc:
            msg = "credential cannot be decrypted with the configured IPAAS_SECRET_KEY"
            raise ValueError(msg) from exc
        if not isinstance(value, dict):
            msg = "credential secret is not an object"
            raise ValueError(msg)
        return value
