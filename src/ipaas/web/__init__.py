"""The web console: server-rendered pages at ``/`` over the same services as the API."""

from __future__ import annotations

import contextlib
from importlib.resources import files

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from ipaas.web.pages import router
from ipaas.web.render import render
from ipaas.web.session import LoginRequired, clear_session, session_principal

#: Paths that belong to the API or the operator, not the console: errors there stay JSON.
_NOT_CONSOLE = ("/api/", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs")

_TITLES = {
    401: "Not signed in",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    409: "Conflict",
    413: "Too large",
    422: "Invalid request",
}


def is_console_path(path: str) -> bool:
    return not path.startswith(_NOT_CONSOLE)


async def error_page(request: Request, status: int, message: str) -> Response:
    """A plain page for an error on a console path (the API's message, never a traceback)."""
    if getattr(request.state, "principal", None) is None:
        # An unknown path runs no dependency: find out whether to show the signed-in menu.
        with contextlib.suppress(Exception):
            await session_principal(request)
    title = _TITLES.get(status, "Something went wrong")
    return render(request, "error.html", {"title": title, "message": message}, status)


async def _login_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    if request.url.path.endswith(("/live", "/rows")):
        # A polled fragment: the page's script reloads, and the reload redirects.
        return Response("session ended", status_code=401)
    target = "/login?expired=true" if exc.expired else "/login"
    response = RedirectResponse(target, status_code=303)
    if exc.expired:
        clear_session(request, response)
    return response


def add_console_routes(routes: APIRouter) -> None:
    """The console's static files and pages, added to ``routes``."""
    static = files("ipaas.web") / "static"
    routes.mount("/static", StaticFiles(directory=str(static)), name="static")
    routes.include_router(router)


def install(app: FastAPI) -> None:
    """The console's login redirect on ``app`` (its routes: ``add_console_routes``)."""
    app.add_exception_handler(LoginRequired, _login_required)


__all__ = ["add_console_routes", "error_page", "install", "is_console_path"]
