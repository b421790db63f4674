"""Reading the circuit breakers of a tenant's destinations (the engine keeps them)."""

from __future__ import annotations

from ipaas.circuits.models import Circuit
from ipaas.stores.base import Store


async def list_(store: Store, *, tenant_id: str) -> list[Circuit]:
    return await store.list_circuits(tenant_id)
