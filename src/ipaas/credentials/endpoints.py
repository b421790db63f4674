from __future__ import annotations

import html

from fastapi import APIRouter, Request, status
from fastapi.responses import HTMLResponse, Response

from ipaas.api.deps import CurrentPrincipal, RuntimeDep, StoreDep
from ipaas.api.errors import AUTHENTICATED, WITH_BODY, responses
from ipaas.api.routing import api_router
from ipaas.api.urls import public_url
from ipaas.credentials import oauth2 as oauth2_service
from ipaas.credentials import service as credential_service
from ipaas.credentials import testing as credential_testing
from ipaas.credentials.models import Credential
from ipaas.credentials.schemas import (
    AuthorizeRead,
    ConnectedRead,
    CredentialCreate,
    CredentialRead,
    CredentialTestRead,
    CredentialUpdate,
)
from ipaas.runtime import Runtime

router = api_router(prefix="/credentials", tags=["credentials"], responses=AUTHENTICATED)
#: The provider's redirect back: no API token (the sealed ``state`` names the credential),
#: and any query parameters (providers add their own: ``iss``, ``session_state``...).
callback_router = APIRouter(tags=["credentials"])
_BY_ID = responses(404, 422)


def _read(credential: Credential, runtime: Runtime, request: Request) -> CredentialRead:
    read = CredentialRead.model_validate(credential, from_attributes=True)
    redirect_uri = public_url(request, oauth2_service.CALLBACK_PATH)
    read.oauth2 = oauth2_service.connection(runtime.cipher, credential, redirect_uri)
    return read


@router.post("", status_code=status.HTTP_201_CREATED, responses=WITH_BODY)
async def create_credential(
    body: CredentialCreate, principal: CurrentPrincipal, runtime: RuntimeDep, request: Request
) -> CredentialRead:
    credential = await credential_service.create(
        runtime.store, runtime.cipher, tenant_id=principal.tenant_id, data=body
    )
    return _read(credential, runtime, request)


@router.get("")
async def list_credentials(
    principal: CurrentPrincipal, runtime: RuntimeDep, request: Request
) -> list[CredentialRead]:
    listed = await credential_service.list_(runtime.store, tenant_id=principal.tenant_id)
    return [_read(c, runtime, request) for c in listed]


@router.get("/{credential_id}", responses=_BY_ID)
async def get_credential(
    credential_id: str, principal: CurrentPrincipal, runtime: RuntimeDep, request: Request
) -> CredentialRead:
    credential = await credential_service.get(
        runtime.store, tenant_id=principal.tenant_id, credential_id=credential_id
    )
    return _read(credential, runtime, request)


@router.post(
    "/{credential_id}/oauth2/authorize",
    responses=_BY_ID
    | responses(
        409,
        s409="Not an http credential with oauth2 grant_type authorization_code and an "
        "authorize_url (`not_authorization_code`)",
    ),
)
async def authorize_credential(
    credential_id: str, principal: CurrentPrincipal, runtime: RuntimeDep, request: Request
) -> AuthorizeRead:
    """Connect a user's account: send the user's browser to ``authorize_url``. The
    provider sends it back to ``redirect_uri`` (register it with the provider), which
    stores the account's tokens in the credential. The URL works for 10 minutes."""
    return await oauth2_service.authorize(
        runtime.store,
        runtime.cipher,
        tenant_id=principal.tenant_id,
        credential_id=credential_id,
        redirect_uri=public_url(request, oauth2_service.CALLBACK_PATH),
    )


def _query(name: str, description: str, *, required: bool = False) -> dict[str, object]:
    schema = {"type": "string"}
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": description,
    }


@router.post(
    "/{credential_id}/test",
    responses=_BY_ID
    | responses(
        409,
        s409="Nothing to test: an http credential without oauth2 (dry-run a step that uses "
        "it), or a webhook_secret (`nothing_to_test`)",
    ),
)
async def test_credential(
    credential_id: str, principal: CurrentPrincipal, runtime: RuntimeDep
) -> CredentialTestRead:
    """Ask the credential's service whether it takes the secret, sending no message and
    changing nothing (Slack's ``auth.test``, or an empty message Slack refuses; Discord's
    Get Webhook; one OpenWeather call; an OAuth 2.0 token). ``ok: false`` carries what the
    service said, its secrets masked."""
    return await credential_testing.check_credential(
        runtime, tenant_id=principal.tenant_id, credential_id=credential_id
    )


@callback_router.get(
    "/oauth2/callback",
    response_model=ConnectedRead,
    openapi_extra={
        "parameters": [
            _query("state", "What this server sealed into the consent page's URL", required=True),
            _query("code", "The authorization code, when the user consented"),
            _query("error", "Why not, when the user or the provider refused"),
            _query("error_description", "The provider's words for it"),
        ]
    },
    responses=responses(
        400,
        404,
        409,
        502,
        503,
        s400="No or a stale `state` (`invalid_state`), no `code` (`invalid_request`), or "
        "the user or provider refused (`oauth2_denied`)",
        s409="The credential changed meanwhile (`not_authorization_code`, `credential_changed`)",
        s502="The token endpoint gave no tokens for the code (`oauth2_exchange_failed`)",
    ),
)
async def oauth2_callback(runtime: RuntimeDep, request: Request) -> ConnectedRead | Response:
    """Where the provider sends the user's browser back (``redirect_uri``): the code is
    traded for tokens, stored encrypted in the credential. Public: its ``state``, sealed
    by this server, names the credential. A browser gets a page saying so."""
    _, connected = await oauth2_service.connect(
        runtime.store,
        runtime.cipher,
        runtime.http,
        runtime.tokens,
        query=dict(request.query_params),
    )
    if "text/html" not in request.headers.get("accept", ""):
        return connected
    return _connected_page(connected)


def _connected_page(connected: ConnectedRead) -> Response:
    name = html.escape(connected.credential_id)
    page = (
        "<!doctype html><meta charset=utf-8><title>Connected</title>"
        f"<p>Credential <code>{name}</code> is connected. You can close this window.</p>"
        '<p><a href="/credentials">Back to the credentials</a></p>'
    )
    headers = {"Cache-Control": "no-store", "Content-Security-Policy": "default-src 'none'"}
    return HTMLResponse(page, headers=headers)


@router.patch("/{credential_id}", responses=_BY_ID | WITH_BODY)
async def update_credential(
    credential_id: str,
    body: CredentialUpdate,
    principal: CurrentPrincipal,
    runtime: RuntimeDep,
    request: Request,
) -> CredentialRead:
    """Rename it and/or replace its secret (whole, of its type; write-only as at creation).
    Workflows that use it send the new secret at once (other processes: within 2 s). A
    connected account (``oauth2`` ``authorization_code``) stays connected while the new
    secret keeps its client and token endpoint and gives no other ``refresh_token``."""
    credential = await credential_service.update(
        runtime.store,
        runtime.cipher,
        tenant_id=principal.tenant_id,
        credential_id=credential_id,
        data=body,
        forget=runtime.credential_changed,  # this process uses the new secret at once
    )
    return _read(credential, runtime, request)


@router.delete(
    "/{credential_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=_BY_ID | responses(409, s409="A workflow uses it (`credential_in_use`)"),
)
async def delete_credential(
    credential_id: str, principal: CurrentPrincipal, store: StoreDep
) -> None:
    await credential_service.delete(
        store, tenant_id=principal.tenant_id, credential_id=credential_id
    )
