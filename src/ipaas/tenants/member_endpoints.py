"""``/api/members`` and ``POST /api/auth/invite``: a tenant's members (``tenants/members.py``)."""

from __future__ import annotations

from fastapi import Request, status

from ipaas.api.deps import CurrentPrincipal, RuntimeDep, StoreDep
from ipaas.api.errors import AUTHENTICATED, WITH_BODY, responses
from ipaas.api.routing import api_router
from ipaas.api.urls import public_url
from ipaas.kit.clock import utcnow
from ipaas.tenants import members
from ipaas.tenants.models import User
from ipaas.tenants.schemas import (
    InviteAccept,
    InviteAccepted,
    MemberInvite,
    MemberInvited,
    MemberRead,
    MemberUpdate,
)

router = api_router(tags=["members"])

_OWNERS = responses(
    403,
    s403="Only an owner manages members (`owners_only`; a token of no user: `token_has_no_user`)",
)
_LAST_OWNER = responses(409, s409="The tenant would have no owner who can log in (`last_owner`)")


def member_read(user: User) -> MemberRead:
    invited = "expired" if members.expired(user, utcnow()) else "invited"
    return MemberRead(
        id=user.id,
        email=user.email,
        role=user.role,
        status=invited if user.invited else "active",
        created_at=user.created_at,
        invite_expires_at=user.invite_expires_at,
    )


def invite_url(request: Request, token: str) -> str:
    """The console's page that accepts it; the token rides in the fragment, which browsers
    never send to a server (so no access log or proxy sees it)."""
    return public_url(request, f"/invite#{token}")


@router.get("/members", responses=AUTHENTICATED)
async def list_members(principal: CurrentPrincipal, store: StoreDep) -> list[MemberRead]:
    """Everyone in the tenant, invited members too, oldest first."""
    return [member_read(u) for u in await members.list_(store, tenant_id=principal.tenant_id)]


@router.post(
    "/members",
    status_code=status.HTTP_201_CREATED,
    responses=AUTHENTICATED
    | WITH_BODY
    | _OWNERS
    | responses(409, s409="The email has an account (`email_taken`)"),
)
async def invite_member(
    body: MemberInvite, request: Request, principal: CurrentPrincipal, store: StoreDep
) -> MemberInvited:
    """Invite someone (owners only). The answer holds the invitation's token and link,
    shown this once: pass them on; they set a password with it within 7 days."""
    user, token = await members.invite(
        store, principal=principal, email=str(body.email), role=body.role
    )
    return MemberInvited(
        **member_read(user).model_dump(),
        invite_token=token,
        invite_url=invite_url(request, token),
    )


@router.patch(
    "/members/{user_id}",
    responses=AUTHENTICATED | WITH_BODY | _OWNERS | responses(404) | _LAST_OWNER,
)
async def update_member(
    user_id: str, body: MemberUpdate, principal: CurrentPrincipal, store: StoreDep
) -> MemberRead:
    """Change a member's role (owners only)."""
    user = await members.change(store, principal=principal, user_id=user_id, role=body.role)
    if user is None:  # removed meanwhile
        raise members.MemberNotFound("No member of this tenant has this id")
    return member_read(user)


@router.delete(
    "/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=AUTHENTICATED | _OWNERS | responses(404, 422) | _LAST_OWNER,
)
async def remove_member(user_id: str, principal: CurrentPrincipal, store: StoreDep) -> None:
    """Remove a member (owners only), an invited one too, with every token the member
    holds: its sessions end and the API tokens it made stop working at once."""
    await members.change(store, principal=principal, user_id=user_id, role=None)


@router.post(
    "/auth/invite",
    tags=["auth"],
    responses=WITH_BODY
    | responses(
        404,
        429,
        503,
        s404="No open invitation has this token (unknown, used or expired: `invite_not_found`)",
        s429="Too many sign-ups and logins waiting for a password check (`too_many_logins`)",
    ),
)
async def accept_invite(body: InviteAccept, runtime: RuntimeDep) -> InviteAccepted:
    """Accept an invitation: set your password; the answer signs you in."""
    user, token = await members.accept(
        runtime.store,
        invite_token=body.invite_token,
        password=body.password,
        token_ttl_s=runtime.settings.token_ttl_s,
    )
    return InviteAccepted(access_token=token, tenant_id=user.tenant_id)
