"""The tenant's members: the list, invitations, roles and removal (owners), and the page
where an invited member sets a password (``tenants/members.py``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from ipaas.api.deps import RuntimeDep
from ipaas.errors import Conflict, IpaasError, TooManyRequests
from ipaas.tenants import members
from ipaas.tenants.member_endpoints import invite_url, member_read
from ipaas.tenants.models import Role
from ipaas.tenants.schemas import InviteAccept, MemberInvite
from ipaas.web.pages._common import Csrf, read_form, see_other, validation_errors
from ipaas.web.render import render
from ipaas.web.session import SessionPrincipal, set_session

router = APIRouter()


async def _page(
    request: Request, runtime: RuntimeDep, principal: SessionPrincipal, **extra: Any
) -> dict[str, Any]:
    users = await members.list_(runtime.store, tenant_id=principal.tenant_id)
    me = next((u for u in users if u.id == principal.user_id), None)
    return {
        "members": [member_read(u) for u in users],
        "me": principal.user_id,
        "is_owner": me is not None and me.role is Role.owner,
        "roles": [role.value for role in Role],
        "values": {},
        "errors": {},
        "invited": None,
        **extra,
    }


@router.get("/members")
async def members_page(
    request: Request, principal: SessionPrincipal, runtime: RuntimeDep
) -> HTMLResponse:
    return render(request, "members.html", await _page(request, runtime, principal))


@router.post("/members", dependencies=Csrf)
async def invite(request: Request, principal: SessionPrincipal, runtime: RuntimeDep) -> Response:
    form = await read_form(request)
    values = {"email": form.get("email", ""), "role": form.get("role") or Role.member.value}
    try:
        body = MemberInvite.model_validate(values)
        user, token = await members.invite(
            runtime.store, principal=principal, email=str(body.email), role=body.role
        )
    except ValidationError as exc:
        context = await _page(request, runtime, principal, values=values)
        return render(request, "members.html", context | {"errors": validation_errors(exc)}, 422)
    except IpaasError as exc:
        context = await _page(request, runtime, principal, values=values)
        # The email taken is the field's matter; not being an owner is the page's.
        errors = {"email" if isinstance(exc, Conflict) else "form": exc.message}
        return render(request, "members.html", context | {"errors": errors}, exc.status_code)
    invited = {"email": user.email, "url": invite_url(request, token)}
    context = await _page(request, runtime, principal, invited=invited)
    return render(request, "members.html", context, 201)


async def _change(
    request: Request,
    runtime: RuntimeDep,
    principal: SessionPrincipal,
    user_id: str,
    role: Role | None,
) -> Response:
    try:
        await members.change(runtime.store, principal=principal, user_id=user_id, role=role)
    except IpaasError as exc:
        context = await _page(request, runtime, principal)
        return render(
            request, "members.html", context | {"errors": {"form": exc.message}}, exc.status_code
        )
    if role is None and user_id == principal.user_id:
        return see_other("/login")  # left the tenant: the session went with it
    return see_other("/members")


@router.post("/members/{user_id}/role", dependencies=Csrf)
async def change_role(
    user_id: str, request: Request, principal: SessionPrincipal, runtime: RuntimeDep
) -> Response:
    form = await read_form(request)
    role = Role(form["role"]) if form.get("role") in set(Role) else None
    if role is None:
        context = await _page(request, runtime, principal)
        errors = {"form": f"role must be one of: {', '.join(Role)}"}
        return render(request, "members.html", context | {"errors": errors}, 422)
    return await _change(request, runtime, principal, user_id, role)


@router.post("/members/{user_id}/remove", dependencies=Csrf)
async def remove(
    user_id: str, request: Request, principal: SessionPrincipal, runtime: RuntimeDep
) -> Response:
    return await _change(request, runtime, principal, user_id, None)


@router.get("/invite")
async def invite_page(request: Request) -> HTMLResponse:
    """The invitation's token comes in the URL's fragment, which only the page's script
    reads (it fills the field); without the script, it is pasted."""
    return render(request, "invite.html", {"errors": {}})


@router.post("/invite", dependencies=Csrf)
async def accept(request: Request, runtime: RuntimeDep) -> Response:
    form = await read_form(request)
    errors: dict[str, str] = {}
    status = 422
    if form.get("password", "") != form.get("confirm_password", ""):
        errors["confirm_password"] = "the two passwords differ"  # noqa: S105 - a message
    else:
        try:
            body = InviteAccept(
                invite_token=form.get("invite_token", "").strip(),
                password=form.get("password", ""),
            )
            _, token = await members.accept(
                runtime.store,
                invite_token=body.invite_token,
                password=body.password,
                token_ttl_s=runtime.settings.token_ttl_s,
            )
        except ValidationError as exc:
            errors = validation_errors(exc)
        except TooManyRequests as exc:
            page = render(request, "invite.html", {"errors": {"form": exc.message}}, 429)
            page.headers.update(exc.headers)
            return page
        except members.InviteNotFound as exc:
            errors, status = {"invite_token": exc.message}, exc.status_code
        else:
            response = see_other("/")
            set_session(request, response, token, runtime.settings.token_ttl_s)
            return response
    return render(request, "invite.html", {"errors": errors}, status)
