from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, EmailStr, Field, field_validator

from ipaas.kit.inputs import Input
from ipaas.kit.numbers import MAX_TOKEN_TTL_S, json_int
from ipaas.kit.text import Name
from ipaas.tenants.models import Role, TenantLimits

#: What a new password must be (sign-up, a change, ``ipaas user password``).
NewPassword = Annotated[str, Field(min_length=8, max_length=256)]


class SignupCreate(Input):
    email: EmailStr
    password: NewPassword
    tenant_name: Name


class SignupRead(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    tenant_id: str


class PasswordChange(Input):
    current_password: str = Field(min_length=1, max_length=256)
    new_password: NewPassword


class PasswordChanged(BaseModel):
    #: The user's other sessions (sign-up and log-in tokens, console sessions) now ended.
    sessions_ended: int


class TokenRead(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret


class ApiTokenCreate(Input):
    name: Name = "api"
    #: At most ten years: a datetime cannot hold much more (a larger value was a 500).
    expires_in_s: int | None = Field(default=None, gt=0, le=MAX_TOKEN_TTL_S)

    _json_int = field_validator("expires_in_s", mode="before")(json_int)


class ApiTokenRead(BaseModel):
    id: str
    user_id: str | None = Field(
        description="Whose token: the id of the member it belongs to (`/api/members`). "
        "Null for a token of no user, which neither the API nor `ipaas` makes."
    )
    name: str
    created_at: datetime
    expires_at: datetime | None
    #: Made by signing up or logging in (a console session too): a new password ends it.
    session: bool


class ApiTokenCreated(ApiTokenRead):
    #: Shown once, at creation.
    token: str


class TenantRead(BaseModel):
    id: str
    name: str
    created_at: datetime
    #: What applies now: each override, else the server's default (``null``: no limit).
    limits: TenantLimits
    #: Set by the operator (``ipaas tenant limits``); read-only here.
    overrides: TenantLimits


class MemberRead(BaseModel):
    id: str
    email: str
    role: Role
    #: ``invited``: has not accepted (yet); ``expired``: the invitation can no longer be
    #: accepted (remove the member and invite again); ``active``: can log in.
    status: Literal["active", "invited", "expired"]
    created_at: datetime
    invite_expires_at: datetime | None


class MemberInvite(Input):
    email: EmailStr
    role: Role = Role.member


class MemberInvited(MemberRead):
    #: Shown once: the new member accepts with it (``POST /api/auth/invite``, or the
    #: console's ``invite_url``), within ``invite_expires_at``.
    invite_token: str
    invite_url: str


class MemberUpdate(Input):
    role: Role


class InviteAccept(Input):
    invite_token: str = Field(min_length=1, max_length=200)
    password: NewPassword


class InviteAccepted(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    tenant_id: str
