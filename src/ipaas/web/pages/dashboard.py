"""The dashboard and its live fragment."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from ipaas.api.deps import RuntimeDep
from ipaas.circuits import service as circuit_service
from ipaas.circuits.models import CircuitState
from ipaas.executions import dashboard as stats
from ipaas.kit.clock import utcnow
from ipaas.web import charts
from ipaas.web.render import render
from ipaas.web.session import SessionPrincipal
from ipaas.workflows import service as workflow_service

router = APIRouter()


async def _dashboard(runtime: RuntimeDep, principal: SessionPrincipal) -> dict[str, Any]:
    summary = await stats.summarize(runtime.store, tenant_id=principal.tenant_id, now=utcnow())
    names = await workflow_service.names(runtime.store, tenant_id=principal.tenant_id)
    # Destinations whose circuit breaker holds calls back now: what a failing run's
    # ``circuit_open`` means, and when calls go out again.
    circuits = await circuit_service.list_(runtime.store, tenant_id=principal.tenant_id)
    paused = [c for c in circuits if c.state is not CircuitState.closed]
    return {
        "summary": summary,
        "chart": charts.per_minute(summary),
        "names": names,
        "paused_hosts": paused,
    }


DashboardDep = Annotated[dict[str, Any], Depends(_dashboard)]


@router.get("/")
async def dashboard(request: Request, context: DashboardDep) -> HTMLResponse:
    return render(request, "dashboard.html", context)


@router.get("/dashboard/live")
async def dashboard_live(request: Request, context: DashboardDep) -> HTMLResponse:
    return render(request, "_dashboard_body.html", context)
