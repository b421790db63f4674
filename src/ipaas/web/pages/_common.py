"""What every page module shares: the CSRF check, form reading, the redirect after a POST."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError

from ipaas.web import forms
from ipaas.web.session import CsrfChecked

#: ``dependencies=Csrf`` on every route that changes state.
Csrf = [CsrfChecked]


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


async def read_form(request: Request) -> dict[str, str]:
    data = await request.form()
    return {k: v for k, v in data.items() if isinstance(v, str)}


def validation_errors(exc: ValidationError) -> dict[str, str]:
    return forms.errors_by_field(exc.errors(include_input=False, include_url=False))
