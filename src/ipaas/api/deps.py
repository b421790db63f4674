"""Dependencies as ``Annotated`` aliases: a signature shows what a route needs."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ipaas.errors import Unauthorized
from ipaas.runtime import Runtime
from ipaas.stores.base import Store
from ipaas.tenants import service as tenant_service
from ipaas.tenants.service import Principal
from ipaas.webhooks.ratelimit import rate_for

_bearer = HTTPBearer(auto_error=False, description="An API token (`ipaas_...`)")


# Dependencies are ``async`` even when they do not await: FastAPI runs plain ``def``
# dependencies in a thread pool, a hand-off per request on the intake path.
async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_store(request: Request) -> Store:
    runtime: Runtime = request.app.state.runtime
    return runtime.store


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
StoreDep = Annotated[Store, Depends(get_store)]


async def get_principal(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized()
    principal = await tenant_service.authenticate(runtime.store, credentials.credentials)
    structlog.contextvars.bind_contextvars(tenant_id=principal.tenant_id)
    settings = runtime.settings
    if settings.tenant_api_rate_limit is not None:
        rate = rate_for(settings.tenant_api_rate_limit, settings.tenant_api_rate_burst)
        await runtime.intake.limiter.hit_api(principal.tenant_id, rate)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
