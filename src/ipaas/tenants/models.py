from __future__ import annotations

import contextlib
from datetime import datetime
from enum import StrEnum

from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, Field

from ipaas.kit.numbers import MAX_INT32, MAX_RATE_PER_S, MIN_RATE_PER_S


def canonical_email(email: str) -> str:
    """An address as users are stored and looked up by it (sign-up, invitations, log-in, its
    throttle, the CLI): as email-validator normalizes it (the domain in Unicode, not IDNA's
    ASCII; Unicode in NFC), lowercased. Input that is not a valid address: lowercased."""
    with contextlib.suppress(EmailNotValidError):
        email = validate_email(email, check_deliverability=False).normalized
    return email.strip().lower()


class TenantLimits(BaseModel):
    """An operator's overrides of the intake guard rails for one tenant (``ipaas tenant
    limits``); ``None`` means the setting's default. Never settable by the tenant."""

    #: Sustained webhooks per second (``IPAAS_TENANT_RATE_LIMIT``).
    rate_limit: float | None = Field(default=None, ge=MIN_RATE_PER_S, le=MAX_RATE_PER_S)
    #: Webhooks that may arrive at once (``IPAAS_TENANT_RATE_BURST``).
    rate_burst: int | None = Field(default=None, ge=1, le=MAX_INT32)
    #: Queued executions at most (``IPAAS_TENANT_MAX_QUEUED``).
    max_queued: int | None = Field(default=None, ge=1, le=MAX_INT32)
    #: Executions running at once, across all workers (``IPAAS_TENANT_MAX_CONCURRENCY``).
    max_concurrency: int | None = Field(default=None, ge=1, le=MAX_INT32)


class Tenant(BaseModel):
    id: str
    name: str
    created_at: datetime
    limits: TenantLimits = Field(default_factory=TenantLimits)


class Role(StrEnum):
    """What a member of a tenant may do. Owners also manage the members (invite, change
    roles, remove); members do everything else. A tenant always keeps one owner."""

    owner = "owner"
    member = "member"


class User(BaseModel):
    id: str
    tenant_id: str
    email: str
    #: Empty while invited: no password logs in until the invitation is accepted.
    password_hash: str
    created_at: datetime
    role: Role = Role.owner
    #: SHA-256 of an open invitation's token (shown once to the owner who invited), and
    #: when it expires; both ``None`` once accepted (or for the user who signed up).
    invite_hash: str | None = None
    invite_expires_at: datetime | None = None

    @property
    def invited(self) -> bool:
        """Invited, not accepted yet."""
        return self.invite_hash is not None

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
    #: Made by signing up or logging in with the password (the console's sessions too): a
    #: new password ends it. ``False``: made on purpose (``POST /api/tokens``, ``ipaas
    #: token create``), kept when the password changes, whatever its name.
    session: bool = False
