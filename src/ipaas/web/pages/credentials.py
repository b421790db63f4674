"""Credentials: list, create, edit (a new name or secret; secrets write-only), delete."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from ipaas.api.deps import RuntimeDep
from ipaas.api.urls import public_url
from ipaas.credentials import oauth2 as oauth2_service
from ipaas.credentials import service as credential_service
from ipaas.credentials import testing as credential_testing
from ipaas.credentials.models import Credential
from ipaas.credentials.schemas import (
    SECRET_MODELS,
    CredentialCreate,
    CredentialTestRead,
    CredentialUpdate,
    OAuth2Connection,
)
from ipaas.credentials.testing import NothingToTest
from ipaas.errors import ValidationFailed
from ipaas.runtime import Runtime
from ipaas.web import forms
from ipaas.web.pages._common import Csrf, read_form, see_other, validation_errors
from ipaas.web.render import render
from ipaas.web.session import SessionPrincipal

router = APIRouter()
SECRET_FIELDS = {kind.value: forms.fields_for(model) for kind, model in SECRET_MODELS.items()}


async def _credentials_page(
    request: Request,
    principal: SessionPrincipal,
    runtime: RuntimeDep,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
    tested: tuple[Credential, CredentialTestRead | str] | None = None,
) -> HTMLResponse:
    credentials = await credential_service.list_(runtime.store, tenant_id=principal.tenant_id)
    context = {
        "credentials": credentials,
        "tested": tested,
        "connections": _connections(request, runtime, credentials),
        "secret_fields": SECRET_FIELDS,
        "values": values or {"type": "slack"},
        "errors": errors or {},
    }
    return render(request, "credentials.html", context, status)


@router.get("/credentials")
async def credentials(
    request: Request, principal: SessionPrincipal, runtime: RuntimeDep
) -> HTMLResponse:
    return await _credentials_page(request, principal, runtime)


@router.post("/credentials", dependencies=Csrf)
async def create_credential(
    request: Request, principal: SessionPrincipal, runtime: RuntimeDep
) -> Response:
    form = await read_form(request)
    kind = form.get("type", "")
    # Only the name and type are ever rendered back: a secret is never put in a page.
    values = {"name": form.get("name", ""), "type": kind}
    fields = SECRET_FIELDS.get(kind, [])
    secret, errors = forms.read(fields, form, f"secret.{kind}.")
    errors = {f"secret.{k}": v for k, v in errors.items()}
    if not errors:
        try:
            data = CredentialCreate(name=form.get("name", ""), type=kind, secret=secret)
            await credential_service.create(
                runtime.store, runtime.cipher, tenant_id=principal.tenant_id, data=data
            )
        except ValidationError as exc:
            errors = validation_errors(exc)
        except ValidationFailed as exc:
            errors = forms.errors_by_field(exc.details) or {"form": exc.message}
        else:
            return see_other("/credentials")
    return await _credentials_page(
        request, principal, runtime, values=values, errors=errors, status=422
    )


def _connections(
    request: Request, runtime: Runtime, credentials: list[Credential]
) -> dict[str, OAuth2Connection]:
    """The connections of the credentials that connect a user's account, by id."""
    redirect_uri = public_url(request, oauth2_service.CALLBACK_PATH)
    found: dict[str, OAuth2Connection] = {}
    for credential in credentials:
        connection = oauth2_service.connection(runtime.cipher, credential, redirect_uri)
        if connection is not None:
            found[credential.id] = connection
    return found


@router.post("/credentials/{credential_id}/test", dependencies=Csrf)
async def test_credential(
    credential_id: str, request: Request, principal: SessionPrincipal, runtime: RuntimeDep
) -> HTMLResponse:
    """The list again, with what testing the credential found."""
    credential = await credential_service.get(
        runtime.store, tenant_id=principal.tenant_id, credential_id=credential_id
    )
    result: CredentialTestRead | str
    try:
        result = await credential_testing.check_credential(
            runtime, tenant_id=principal.tenant_id, credential_id=credential_id
        )
    except NothingToTest as exc:
        result = exc.message
    return await _credentials_page(request, principal, runtime, tested=(credential, result))


@router.post("/credentials/{credential_id}/connect", dependencies=Csrf)
async def connect_credential(
    credential_id: str, request: Request, principal: SessionPrincipal, runtime: RuntimeDep
) -> Response:
    """Off to the provider's consent page; it sends the browser back to the callback."""
    authorize = await oauth2_service.authorize(
        runtime.store,
        runtime.cipher,
        tenant_id=principal.tenant_id,
        credential_id=credential_id,
        redirect_uri=public_url(request, oauth2_service.CALLBACK_PATH),
    )
    return see_other(authorize.authorize_url)


def _edit_page(
    request: Request,
    credential: Credential,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    context = {
        "credential": credential,
        "fields": SECRET_FIELDS[credential.type.value],
        "values": values or {"name": credential.name},
        "errors": errors or {},
    }
    return render(request, "credential_edit.html", context, status)


@router.get("/credentials/{credential_id}/edit")
async def edit_credential(
    credential_id: str, request: Request, principal: SessionPrincipal, runtime: RuntimeDep
) -> HTMLResponse:
    credential = await credential_service.get(
        runtime.store, tenant_id=principal.tenant_id, credential_id=credential_id
    )
    return _edit_page(request, credential)


@router.post("/credentials/{credential_id}/edit", dependencies=Csrf)
async def update_credential(
    credential_id: str, request: Request, principal: SessionPrincipal, runtime: RuntimeDep
) -> Response:
    credential = await credential_service.get(
        runtime.store, tenant_id=principal.tenant_id, credential_id=credential_id
    )
    form = await read_form(request)
    values = {"name": form.get("name", "")}  # never the secret
    secret, errors = forms.read(SECRET_FIELDS[credential.type.value], form, "secret.")
    errors = {f"secret.{k}": v for k, v in errors.items()}
    if not errors:
        try:
            # A secret left empty keeps the stored one (left out, not null).
            data = CredentialUpdate(name=values["name"], **({"secret": secret} if secret else {}))
            await credential_service.update(
                runtime.store,
                runtime.cipher,
                tenant_id=principal.tenant_id,
                credential_id=credential_id,
                data=data,
                forget=runtime.credential_changed,
            )
        except ValidationError as exc:
            errors = validation_errors(exc)
        except ValidationFailed as exc:
            errors = forms.errors_by_field(exc.details) or {"form": exc.message}
        else:
            return see_other("/credentials")
    return _edit_page(request, credential, values=values, errors=errors, status=422)


@router.post("/credentials/{credential_id}/delete", dependencies=Csrf)
async def delete_credential(
    credential_id: str, principal: SessionPrincipal, runtime: RuntimeDep
) -> Response:
    await credential_service.delete(
        runtime.store, tenant_id=principal.tenant_id, credential_id=credential_id
    )
    return see_other("/credentials")
