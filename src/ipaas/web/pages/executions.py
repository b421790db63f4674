"""Executions: filtered list, detail with the step timeline, cancel, retry."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from ipaas.api.deps import RuntimeDep
from ipaas.errors import BadRequest
from ipaas.executions import service as execution_service
from ipaas.executions.models import ExecutionStatus
from ipaas.executions.schemas import ExecutionRead, StepRunRead
from ipaas.web.pages._common import Csrf, see_other
from ipaas.web.render import render
from ipaas.web.session import SessionPrincipal
from ipaas.workflows import service as workflow_service

router = APIRouter()


async def _executions(
    principal: SessionPrincipal,
    runtime: RuntimeDep,
    workflow_id: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[str, Query(max_length=20)] = "",
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    # The filter form sends ``status=`` for "any status".
    try:
        wanted = ExecutionStatus(status) if status else None
    except ValueError:
        allowed = ", ".join(s.value for s in ExecutionStatus)
        raise BadRequest(f"Unknown status {status!r}; one of {allowed}") from None
    items, next_cursor = await execution_service.list_(
        runtime.store,
        tenant_id=principal.tenant_id,
        workflow_id=workflow_id or None,
        status=wanted,
        cursor=cursor or None,
        limit=50,
    )
    names = await workflow_service.names(runtime.store, tenant_id=principal.tenant_id)
    return {
        "executions": [ExecutionRead.of(e) for e in items],
        "next_cursor": next_cursor,
        "filters": {"workflow_id": workflow_id or "", "status": status},
        "statuses": list(ExecutionStatus),
        "names": names,
    }


ExecutionsDep = Annotated[dict[str, Any], Depends(_executions)]


@router.get("/executions")
async def executions(request: Request, context: ExecutionsDep) -> HTMLResponse:
    return render(request, "executions.html", context)


@router.get("/executions/rows")
async def execution_rows(request: Request, context: ExecutionsDep) -> HTMLResponse:
    return render(request, "_execution_rows.html", context)


async def _execution(
    execution_id: str, principal: SessionPrincipal, runtime: RuntimeDep
) -> dict[str, Any]:
    execution, steps = await execution_service.get(
        runtime.store, tenant_id=principal.tenant_id, execution_id=execution_id
    )
    workflow = await runtime.store.get_workflow(principal.tenant_id, execution.workflow_id)
    return {
        "execution": ExecutionRead.of(execution),
        "trigger": execution.trigger.model_dump(mode="json"),
        "steps": [StepRunRead.of(s) for s in steps],
        "workflow": workflow,
        "retryable": execution.status in execution_service.RESUMABLE,
    }


ExecutionDep = Annotated[dict[str, Any], Depends(_execution)]


@router.get("/executions/{execution_id}")
async def execution_detail(request: Request, context: ExecutionDep) -> HTMLResponse:
    return render(request, "execution.html", context)


@router.get("/executions/{execution_id}/live")
async def execution_live(request: Request, context: ExecutionDep) -> HTMLResponse:
    return render(request, "_execution_body.html", context)


@router.post("/executions/{execution_id}/cancel", dependencies=Csrf)
async def cancel_execution(
    execution_id: str, principal: SessionPrincipal, runtime: RuntimeDep
) -> Response:
    await execution_service.cancel(
        runtime.store, runtime.cancel_bus, tenant_id=principal.tenant_id, execution_id=execution_id
    )
    return see_other(f"/executions/{execution_id}")


@router.post("/executions/{execution_id}/retry", dependencies=Csrf)
async def retry_execution(
    execution_id: str, principal: SessionPrincipal, runtime: RuntimeDep
) -> Response:
    await execution_service.retry(
        runtime.store, runtime.queue, tenant_id=principal.tenant_id, execution_id=execution_id
    )
    return see_other(f"/executions/{execution_id}")
