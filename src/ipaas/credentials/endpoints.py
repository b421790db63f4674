from __future__ import annotations

from fastapi import status

from ipaas.api.deps import CurrentPrincipal, RuntimeDep, StoreDep
from ipaas.api.errors import AUTHENTICATED, WITH_BODY, responses
from ipaas.api.routing import api_router
from ipaas.credentials import service as credential_service
from ipaas.credentials.schemas import CredentialCreate, CredentialRead, CredentialUpdate

router = api_router(prefix="/credentials", tags=["credentials"], responses=AUTHENTICATED)
_BY_ID = responses(404, 422)


def _read(credential: object) -> CredentialRead:
    return CredentialRead.model_validate(credential, from_attributes=True)


@router.post("", status_code=status.HTTP_201_CREATED, responses=WITH_BODY)
async def create_credential(
    body: CredentialCreate, principal: CurrentPrincipal, runtime: RuntimeDep
) -> CredentialRead:
    credential = await credential_service.create(
        runtime.store, runtime.cipher, tenant_id=principal.tenant_id, data=body
    )
    return _read(credential)


@router.get("")
async def list_credentials(principal: CurrentPrincipal, store: StoreDep) -> list[CredentialRead]:
    return [_read(c) for c in await credential_service.list_(store, tenant_id=principal.tenant_id)]


@router.get("/{credential_id}", responses=_BY_ID)
async def get_credential(
    credential_id: str, principal: CurrentPrincipal, store: StoreDep
) -> CredentialRead:
    return _read(
        await credential_service.get(
            store, tenant_id=principal.tenant_id, credential_id=credential_id
        )
    )


@router.patch("/{credential_id}", responses=_BY_ID | WITH_BODY)
async def update_credential(
    credential_id: str, body: CredentialUpdate, principal: CurrentPrincipal, runtime: RuntimeDep
) -> CredentialRead:
    """Rename it and/or replace its secret (whole, of its type; write-only as at creation).
    Workflows that use it send the new secret at once (other processes: within 2 s)."""
    credential = await credential_service.update(
        runtime.store,
        runtime.cipher,
        tenant_id=principal.tenant_id,
        credential_id=credential_id,
        data=body,
        forget=runtime.credential_changed,  # this process uses the new secret at once
    )
    return _read(credential)


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
