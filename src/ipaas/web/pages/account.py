"""Sign up, log in, log out, and the API tokens page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import TypeAdapter, ValidationError

from ipaas.api.deps import RuntimeDep
from ipaas.errors import Conflict, TooManyRequests, Unauthorized
from ipaas.kit.text import Name
from ipaas.runtime import Runtime
from ipaas.tenants import service as tenant_service
from ipaas.tenants.schemas import PasswordChange, SignupCreate
from ipaas.tenants.service import IncorrectPassword, SignupClosed, TokenHasNoUser
from ipaas.web.pages._common import Csrf, read_form, see_other, validation_errors
from ipaas.web.render import render
from ipaas.web.session import SessionPrincipal, clear_session, set_session

router = APIRouter()
#: A token's name, as the API takes it (``ApiTokenCreate``).
_TOKEN_NAME = TypeAdapter(Name)


@router.get("/signup")
async def signup_page(request: Request, runtime: RuntimeDep) -> HTMLResponse:
    try:
        await tenant_service.check_signup_open(runtime.store, runtime.settings.signup)
    except SignupClosed as exc:
        return _signup_closed(request, exc)
    return render(request, "signup.html", {"values": {}, "errors": {}})


def _signup_closed(request: Request, exc: SignupClosed) -> HTMLResponse:
    context = {"closed": exc.message, "signup_link": False}
    return render(request, "signup.html", context, exc.status_code)


async def _signup_offered(runtime: Runtime) -> bool:
    """Whether the log-in page links to the sign-up page (not once it is closed)."""
    try:
        await tenant_service.check_signup_open(runtime.store, runtime.settings.signup)
    except SignupClosed:
        return False
    return True


@router.post("/signup", dependencies=Csrf)
async def signup(request: Request, runtime: RuntimeDep) -> Response:
    form = await read_form(request)
    values = {k: form.get(k, "") for k in ("email", "tenant_name")}
    try:
        await tenant_service.check_signup_open(runtime.store, runtime.settings.signup)
    except SignupClosed as exc:  # said before the form's fields are judged
        return _signup_closed(request, exc)
    try:
        body = SignupCreate(
            email=form.get("email", ""),
            password=form.get("password", ""),
            tenant_name=form.get("tenant_name", ""),
        )
        _, token = await tenant_service.signup(
            runtime.store,
            email=body.email,
            password=body.password,
            tenant_name=body.tenant_name,
            token_ttl_s=runtime.settings.token_ttl_s,
            policy=runtime.settings.signup,
        )
    except ValidationError as exc:
        errors = validation_errors(exc)
        return render(request, "signup.html", {"values": values, "errors": errors}, 422)
    except SignupClosed as exc:  # closed meanwhile (``first``: another sign-up got in)
        return _signup_closed(request, exc)
    except Conflict as exc:
        errors = {"email": exc.message}
        return render(request, "signup.html", {"values": values, "errors": errors}, 409)
    response = see_other("/")
    set_session(request, response, token, runtime.settings.token_ttl_s)
    return response


@router.get("/login")
async def login_page(request: Request, runtime: RuntimeDep, expired: bool = False) -> HTMLResponse:
    notice = "Your session has expired or was ended. Please log in again." if expired else ""
    context = {"values": {}, "errors": {}, "notice": notice}
    return render(request, "login.html", context | {"signup_link": await _signup_offered(runtime)})


@router.post("/login", dependencies=Csrf)
async def login(request: Request, runtime: RuntimeDep) -> Response:
    form = await read_form(request)
    email = form.get("email", "")
    try:
        token = await tenant_service.login(
            runtime.store,
            email=email,
            password=form.get("password", ""),
            token_ttl_s=runtime.settings.token_ttl_s,
            throttle=runtime.logins,
        )
    except (Unauthorized, TooManyRequests) as exc:
        context = {
            "values": {"email": email},
            "errors": {"form": exc.message},
            "notice": "",
            "signup_link": await _signup_offered(runtime),
        }
        page = render(request, "login.html", context, exc.status_code)
        page.headers.update(exc.headers)
        return page
    response = see_other("/")
    set_session(request, response, token, runtime.settings.token_ttl_s)
    return response


@router.post("/logout", dependencies=Csrf)
async def logout(request: Request, principal: SessionPrincipal, runtime: RuntimeDep) -> Response:
    await tenant_service.revoke_token(
        runtime.store, principal=principal, token_id=principal.token_id
    )
    response = see_other("/login")
    clear_session(request, response)
    return response


@router.get("/password")
async def password_page(request: Request, principal: SessionPrincipal) -> HTMLResponse:
    return render(request, "password.html", {"errors": {}, "changed": None})


@router.post("/password", dependencies=Csrf)
async def change_password(
    request: Request, principal: SessionPrincipal, runtime: RuntimeDep
) -> HTMLResponse:
    form = await read_form(request)
    errors: dict[str, str] = {}
    status = 422
    if form.get("new_password", "") != form.get("confirm_password", ""):
        errors["confirm_password"] = "the two new passwords differ"  # noqa: S105 - a message
    else:
        try:
            body = PasswordChange(
                current_password=form.get("current_password", ""),
                new_password=form.get("new_password", ""),
            )
            ended = await tenant_service.change_password(
                runtime.store,
                principal=principal,
                current_password=body.current_password,
                new_password=body.new_password,
                throttle=runtime.logins,
            )
        except ValidationError as exc:
            errors = validation_errors(exc)
        except (IncorrectPassword, TokenHasNoUser) as exc:
            errors, status = {"current_password": exc.message}, exc.status_code
        except TooManyRequests as exc:
            page = render(
                request, "password.html", {"errors": {"form": exc.message}, "changed": None}, 429
            )
            page.headers.update(exc.headers)
            return page
        else:
            return render(request, "password.html", {"errors": {}, "changed": ended})
    return render(request, "password.html", {"errors": errors, "changed": None}, status)


async def _tokens_page(
    request: Request,
    principal: SessionPrincipal,
    runtime: RuntimeDep,
    *,
    created: str | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    tokens = await tenant_service.list_tokens(runtime.store, principal=principal)
    # An owner sees the others' tokens too: whose each is.
    emails = (
        {user.id: user.email for user in await runtime.store.list_users(principal.tenant_id)}
        if any(t.user_id != principal.user_id for t in tokens)
        else None
    )
    context = {
        "tokens": tokens,
        "emails": emails,
        "current": principal.token_id,
        "created": created,
        "errors": errors or {},
    }
    return render(request, "tokens.html", context, status)


@router.get("/tokens")
async def tokens(
    request: Request, principal: SessionPrincipal, runtime: RuntimeDep
) -> HTMLResponse:
    return await _tokens_page(request, principal, runtime)


@router.post("/tokens", dependencies=Csrf)
async def create_token(
    request: Request, principal: SessionPrincipal, runtime: RuntimeDep
) -> HTMLResponse:
    form = await read_form(request)
    name = form.get("name", "").strip()
    days = form.get("expires_in_days", "").strip()
    errors = {}
    try:
        _TOKEN_NAME.validate_python(name)
    except ValidationError:
        errors["name"] = "give a name of 1 to 200 characters, without NUL"
    if days and (not days.isdigit() or int(days) < 1):
        errors["expires_in_days"] = "a whole number of days, 1 or more (or empty: no expiry)"
    if errors:
        return await _tokens_page(request, principal, runtime, errors=errors, status=422)
    _, plaintext = await tenant_service.create_token(
        runtime.store,
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        name=name,
        ttl_s=int(days) * 86400 if days else None,
    )
    return await _tokens_page(request, principal, runtime, created=plaintext)


@router.post("/tokens/{token_id}/revoke", dependencies=Csrf)
async def revoke_token(
    token_id: str, request: Request, principal: SessionPrincipal, runtime: RuntimeDep
) -> Response:
    await tenant_service.revoke_token(runtime.store, principal=principal, token_id=token_id)
    if token_id == principal.token_id:  # this very session: it has just ended
        response = see_other("/login?expired=true")
        clear_session(request, response)
        return response
    return see_other("/tokens")
