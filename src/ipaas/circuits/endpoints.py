from __future__ import annotations

from ipaas.api.deps import CurrentPrincipal, StoreDep
from ipaas.api.errors import AUTHENTICATED
from ipaas.api.routing import api_router
from ipaas.circuits import service as circuit_service
from ipaas.circuits.schemas import CircuitList, CircuitRead

router = api_router(prefix="/circuits", tags=["circuits"], responses=AUTHENTICATED)


@router.get("")
async def list_circuits(principal: CurrentPrincipal, store: StoreDep) -> CircuitList:
    """The circuit breakers of the tenant's destination hosts: every host a step failed to
    reach at least once (closed circuits included)."""
    circuits = await circuit_service.list_(store, tenant_id=principal.tenant_id)
    return CircuitList(items=[CircuitRead.of(c) for c in circuits])
