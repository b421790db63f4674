"""Templates: one Jinja environment (autoescaped) and the function every page renders with."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from ipaas.config import Signup
from ipaas.web.session import CSRF_FIELD, csrf_token, ensure_csrf


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, default=str, ensure_ascii=False)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "—"


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


env = Environment(
    loader=PackageLoader("ipaas.web", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
env.filters["pretty"] = _pretty
env.filters["when"] = _when
env.filters["ms"] = _ms


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    principal = getattr(request.state, "principal", None)
    runtime = getattr(request.app.state, "runtime", None)
    values = {
        "request": request,
        "path": request.url.path,
        "signed_in": principal is not None,
        # No link to a page that only says it is closed; under ``first`` the log-in and
        # sign-up pages know whether it is (``signup_link`` in their context).
        "signup_link": runtime is None or runtime.settings.signup is not Signup.closed,
        "csrf_field": CSRF_FIELD,
        "csrf": csrf_token(request),
        **context,
    }
    html = env.get_template(name).render(**values)
    response = HTMLResponse(html, status_code=status)
    # Pages are per-user and hold CSRF tokens: never cached, never framed.
    response.headers["cache-control"] = "no-store"
    response.headers["x-frame-options"] = "DENY"
    response.headers["content-security-policy"] = (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    )
    response.headers["referrer-policy"] = "same-origin"
    ensure_csrf(request, response)
    return response
