"""Console sessions and CSRF.

A session is an API token: logging in creates one (named ``console``), the cookie carries
it, and logging out revokes it in the store, so a copied cookie stops working everywhere
(the API's own token checks apply: expiry, revocation). CSRF is a double-submit token: a
random value in a cookie of its own that every form repeats in a hidden field (and every
script request in ``X-CSRF-Token``); a page of another origin can neither read the cookie
nor set it, and both cookies are ``SameSite=Lax`` besides.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request, Response

from ipaas.errors import IpaasError, Unauthorized
from ipaas.runtime import Runtime
from ipaas.tenants import service as tenant_service
from ipaas.tenants.service import Principal

SESSION_COOKIE = "ipaas_session"
CSRF_COOKIE = "ipaas_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


class LoginRequired(Exception):
    """No session, or one that expired or was revoked: the handler redirects to log in."""

    def __init__(self, *, expired: bool) -> None:
        super().__init__("login required")
        self.expired = expired


class CsrfFailed(IpaasError):
    status_code = 403
    code = "csrf_failed"


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_session(request: Request, response: Response, token: str, max_age_s: int) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age_s,
        httponly=True,
        secure=_secure(request),
        samesite="lax",
        path="/",
    )
    # A new session gets a new CSRF token: one fixed before login is not trusted after it.
    set_csrf(request, response, secrets.token_urlsafe(32))


def clear_session(request: Request, response: Response) -> None:
    response.delete_cookie(
        SESSION_COOKIE, httponly=True, secure=_secure(request), samesite="lax", path="/"
    )


def csrf_token(request: Request) -> str:
    """The request's CSRF token: the cookie's, or a new one (sent by ``ensure_csrf``)."""
    token = request.cookies.get(CSRF_COOKIE) or getattr(request.state, "new_csrf", None)
    if not token:
        token = secrets.token_urlsafe(32)
        request.state.new_csrf = token
    return str(token)


def set_csrf(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        CSRF_COOKIE, token, httponly=True, secure=_secure(request), samesite="lax", path="/"
    )


def ensure_csrf(request: Request, response: Response) -> None:
    """Send the token a page rendered into its forms when the browser has none yet."""
    new = getattr(request.state, "new_csrf", None)
    if new and request.cookies.get(CSRF_COOKIE) != new:
        set_csrf(request, response, new)


async def check_csrf(request: Request) -> None:
    """Every state-changing console request: the form field (or header) must match."""
    expected = request.cookies.get(CSRF_COOKIE, "")
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else ""
    if not expected or not secrets.compare_digest(expected.encode(), sent.encode()):
        raise CsrfFailed(
            "This form could not be verified (it expired or came from another site). "
            "Reload the page and try again."
        )


async def session_principal(request: Request) -> Principal:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise LoginRequired(expired=False)
    runtime: Runtime = request.app.state.runtime
    try:
        principal = await tenant_service.authenticate(runtime.store, token)
    except Unauthorized:
        raise LoginRequired(expired=True) from None
    request.state.principal = principal
    return principal


SessionPrincipal = Annotated[Principal, Depends(session_principal)]
CsrfChecked = Depends(check_csrf)
