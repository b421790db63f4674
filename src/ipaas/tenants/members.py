"""A tenant's members: the people who share its workflows, credentials and executions.

The user who signs up is the tenant's first owner. Owners invite others by email: the
invitation is a one-time token, shown once to the owner who made it (there is no e-mail
sending here; they pass on the link), valid for ``INVITE_TTL``, that sets the new member's
password and signs them in. Owners also change roles and remove members; a removed
member's tokens go with them (its sessions and the API tokens it made), so offboarding is
one call. A tenant always keeps an owner who can log in (``Store.change_member``).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

import structlog

from ipaas.errors import Conflict, IpaasError, NotFound
from ipaas.kit.clock import utcnow
from ipaas.kit.ids import new_id
from ipaas.stores.base import DuplicateError, MemberChange, Store
from ipaas.tenants.models import Role, User, canonical_email
from ipaas.tenants.service import Principal, TokenHasNoUser, hash_password, hash_token, new_token

_log = structlog.get_logger(__name__)

#: How long an invitation can be accepted.
INVITE_TTL = timedelta(days=7)
#: An invitation token's prefix (not an API token's: it authenticates nothing by itself).
INVITE_PREFIX = "ipaas_invite_"


class OwnersOnly(IpaasError):
    status_code = 403
    code = "owners_only"


class MemberNotFound(NotFound):
    code = "member_not_found"


class InviteNotFound(NotFound):
    code = "invite_not_found"


class LastOwner(Conflict):
    code = "last_owner"


async def require_owner(store: Store, principal: Principal) -> User:
    """The calling user, if an owner of the tenant; 403 otherwise."""
    if principal.user_id is None:
        raise TokenHasNoUser("This token belongs to no user; use one of an owner's tokens")
    user = await store.get_user(principal.tenant_id, principal.user_id)
    if user is None or user.role is not Role.owner:
        raise OwnersOnly("Only an owner of the tenant can manage its members")
    return user


async def list_(store: Store, *, tenant_id: str) -> list[User]:
    return await store.list_users(tenant_id)


async def invite(store: Store, *, principal: Principal, email: str, role: Role) -> tuple[User, str]:
    """A new member, invited: the user (no password yet) and the invitation token."""
    owner = await require_owner(store, principal)
    token = INVITE_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    user = User(
        id=new_id("usr"),
        tenant_id=principal.tenant_id,
        email=canonical_email(email),
        password_hash="",
        created_at=now,
        role=role,
        invite_hash=hash_token(token),
        invite_expires_at=now + INVITE_TTL,
    )
    try:
        await store.create_user(user)
    except DuplicateError as exc:
        raise Conflict("An account with this email already exists", code="email_taken") from exc
    _log.info("member_invited", tenant_id=user.tenant_id, user_id=user.id, by=owner.id)
    return user, token


async def accept(
    store: Store, *, invite_token: str, password: str, token_ttl_s: int
) -> tuple[User, str]:
    """Set the invited member's password and sign them in: the user and a session token.
    An unknown, used or expired invitation is one and the same 404."""
    if not invite_token.startswith(INVITE_PREFIX):
        raise InviteNotFound("No open invitation has this token")
    password_hash = await hash_password(password)
    now = utcnow()
    # The token's tenant and user are the invitation's; the store sets them.
    session, plaintext = new_token("", None, "invite", now, token_ttl_s, session=True)
    user = await store.accept_invite(hash_token(invite_token), password_hash, session, now=now)
    if user is None:
        raise InviteNotFound("No open invitation has this token (it may be used or expired)")
    _log.info("member_joined", tenant_id=user.tenant_id, user_id=user.id)
    return user, plaintext


async def change(
    store: Store, *, principal: Principal, user_id: str, role: Role | None
) -> User | None:
    """Set a member's role, or remove the member (``role=None``); the member as it is now
    (``None`` once removed)."""
    owner = await require_owner(store, principal)
    outcome = await store.change_member(principal.tenant_id, user_id, role=role)
    if outcome is MemberChange.not_found:
        raise MemberNotFound("No member of this tenant has this id")
    if outcome is MemberChange.last_owner:
        raise LastOwner(
            "The tenant needs an owner who can log in: make another member an owner first"
        )
    event = "member_removed" if role is None else "member_role_changed"
    _log.info(event, tenant_id=principal.tenant_id, user_id=user_id, role=role, by=owner.id)
    if role is None:
        return None
    return await store.get_user(principal.tenant_id, user_id)


def expired(user: User, now: datetime) -> bool:
    """An invitation that can no longer be accepted."""
    return user.invite_expires_at is not None and user.invite_expires_at <= now
