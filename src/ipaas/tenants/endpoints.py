from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Form, Request, status

from ipaas.api.deps import CurrentPrincipal, RuntimeDep, StoreDep
from ipaas.api.errors import AUTHENTICATED, WITH_BODY, responses
from ipaas.api.routing import api_router
from ipaas.errors import UnsupportedMediaType
from ipaas.tenants import service as tenant_service
from ipaas.tenants.schemas import (
    ApiTokenCreate,
    ApiTokenCreated,
    ApiTokenRead,
    PasswordChange,
    PasswordChanged,
    SignupCreate,
    SignupRead,
    TenantRead,
    TokenRead,
)
from ipaas.tenants.throttle import LOGIN_FAILURES, LOGIN_WINDOW_S

router = api_router(tags=["auth"])

_BUSY = "Too many sign-ups and logins waiting for a password check (`too_many_logins`)"
_BUSY_OR_GUESSED = (
    f"Too many failed log-ins for this email (`too_many_attempts`: {LOGIN_FAILURES} within "
    f"{LOGIN_WINDOW_S // 60} minutes), or too many waiting for a password check "
    "(`too_many_logins`)"
)


@router.post(
    "/auth/signup",
    status_code=status.HTTP_201_CREATED,
    responses=WITH_BODY
    | responses(
        403,
        409,
        429,
        503,
        s403="Sign-up is closed on this server (`signup_closed`, IPAAS_SIGNUP)",
        s409="The email has an account (`email_taken`)",
        s429=_BUSY,
    ),
)
async def signup(body: SignupCreate, runtime: RuntimeDep) -> SignupRead:
    tenant, token = await tenant_service.signup(
        runtime.store,
        email=body.email,
        password=body.password,
        tenant_name=body.tenant_name,
        token_ttl_s=runtime.settings.token_ttl_s,
        policy=runtime.settings.signup,
    )
    return SignupRead(access_token=token, tenant_id=tenant.id)


#: The media types of a form, which the OAuth2 password flow sends.
_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


async def _a_form(request: Request) -> None:
    """The log-in is a form, as OAuth2's password flow has it. Found by hand: a JSON body
    read as a form with no fields, and was answered "Field required" for the two fields it
    held. Now a 415 that says what to send (before the form is validated)."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media not in _FORMS:
        msg = (
            "Log in with a form, as OAuth2's password flow does: Content-Type "
            "application/x-www-form-urlencoded, username=<your email>&password=<your password>"
        )
        raise UnsupportedMediaType(msg)


@router.post(
    "/auth/token",
    dependencies=[Depends(_a_form)],
    responses=WITH_BODY
    | responses(
        401,
        415,
        429,
        503,
        s401="Incorrect email or password",
        s415="The body is not a form (`unsupported_media_type`)",
        s429=_BUSY_OR_GUESSED,
    ),
)
async def login(
    # min_length: an empty form field reads as a missing one (422), so the schema says so.
    username: Annotated[str, Form(min_length=1, max_length=320)],
    password: Annotated[str, Form(min_length=1, max_length=256)],
    runtime: RuntimeDep,
) -> TokenRead:
    """OAuth2 password flow: form fields ``username`` (the email) and ``password``."""
    token = await tenant_service.login(
        runtime.store,
        email=username,
        password=password,
        token_ttl_s=runtime.settings.token_ttl_s,
        throttle=runtime.logins,
    )
    return TokenRead(access_token=token)


@router.post(
    "/auth/password",
    responses=AUTHENTICATED
    | WITH_BODY
    | responses(
        403,
        429,
        s403="The current password is wrong (`incorrect_password`), or the token belongs "
        "to no user (`token_has_no_user`)",
        s429=_BUSY_OR_GUESSED,
    ),
)
async def change_password(
    body: PasswordChange, principal: CurrentPrincipal, runtime: RuntimeDep
) -> PasswordChanged:
    """Change the caller's own password. Ends the user's other sessions (sign-up and
    log-in tokens, console sessions); the calling token and tokens made on purpose
    (`POST /api/tokens`) stay. Wrong current passwords count as failed log-ins."""
    ended = await tenant_service.change_password(
        runtime.store,
        principal=principal,
        current_password=body.current_password,
        new_password=body.new_password,
        throttle=runtime.logins,
    )
    return PasswordChanged(sessions_ended=ended)


@router.get("/tokens", tags=["tokens"], responses=AUTHENTICATED)
async def list_tokens(principal: CurrentPrincipal, store: StoreDep) -> list[ApiTokenRead]:
    """Your own tokens; an owner sees every token of the tenant, with whose it is."""
    tokens = await tenant_service.list_tokens(store, principal=principal)
    return [ApiTokenRead.model_validate(t, from_attributes=True) for t in tokens]


@router.post(
    "/tokens",
    status_code=status.HTTP_201_CREATED,
    tags=["tokens"],
    responses=AUTHENTICATED | WITH_BODY,
)
async def create_token(
    body: ApiTokenCreate, principal: CurrentPrincipal, store: StoreDep
) -> ApiTokenCreated:
    token, plaintext = await tenant_service.create_token(
        store,
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        name=body.name,
        ttl_s=body.expires_in_s,
    )
    return ApiTokenCreated(
        id=token.id,
        user_id=token.user_id,
        name=token.name,
        created_at=token.created_at,
        expires_at=token.expires_at,
        session=token.session,
        token=plaintext,
    )


@router.delete(
    "/tokens/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["tokens"],
    responses=AUTHENTICATED | responses(404, 422),
)
async def revoke_token(token_id: str, principal: CurrentPrincipal, store: StoreDep) -> None:
    """One of your tokens; an owner, any token of the tenant."""
    await tenant_service.revoke_token(store, principal=principal, token_id=token_id)


@router.get("/tenant", tags=["tenant"], responses=AUTHENTICATED)
async def get_tenant(principal: CurrentPrincipal, runtime: RuntimeDep) -> TenantRead:
    """The caller's tenant and its intake limits (set by the operator, read-only here)."""
    tenant = await tenant_service.get(runtime.store, tenant_id=principal.tenant_id)
    return TenantRead(
        id=tenant.id,
        name=tenant.name,
        created_at=tenant.created_at,
        limits=tenant_service.effective_limits(tenant.limits, runtime.intake.default_limits()),
        overrides=tenant.limits,
    )
