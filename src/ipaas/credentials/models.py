from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel


class CredentialType(StrEnum):
    slack = "slack"
    discord = "discord"
    openweather = "openweather"
    http = "http"
    #: Verifies incoming webhooks (a trigger's ``auth``); no connector uses it.
    webhook_secret = "webhook_secret"  # noqa: S105 - a type name, not a secret


class Credential(BaseModel):
    id: str
    tenant_id: str
    name: str
    type: CredentialType
    #: Fernet token of the JSON secret; decrypted only by ``credentials.crypto``.
    secret_ciphertext: str
    created_at: datetime

    def __repr__(self) -> str:
        return f"Credential(id={self.id!r}, type={self.type.value!r}, secret='**********')"
