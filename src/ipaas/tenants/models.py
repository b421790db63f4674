from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class Tenant(BaseModel):
    id: str
    name: str
    created_at: datetime


class User(BaseModel):
    id: str
    tenant_id: str
    email: str
    password_hash: str
    created_at: datetime

    def __repr__(self) -> str:
        return f"User(id={self.id!r}, tenant_id={self.tenant_id!r}, email={self.email!r})"


class ApiToken(BaseModel):
    id: str
    tenant_id: str
    user_id: str | None
    name: str
    #: SHA-256 of the token: tokens are high-entropy, so a fast hash is enough and lookups
    #: stay O(1); the plaintext is shown once and never stored.
    token_hash: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
