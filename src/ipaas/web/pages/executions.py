"""Executions: filtered list (and retrying what it shows), detail with the step timeline,
cancel, retry."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from ipaas.api.deps import RuntimeDep
from ipaas.engine.subworkflows import PARENT_EXECUTION_HEADER
from ipaas.engine.subworkflows import TRIGGER_TYPE as SUBWORKFLOW_TRIGGER
from ipaas.errors import BadRequest
from ipaas.executions import service as execution_service
from ipaas.executions.models import ERROR_TRIGGER, ExecutionStatus, TriggerData
from ipaas.executions.schemas import (
    MAX_BULK_RETRY,
    MAX_SEARCH,
    MIN_SEARCH,
    ExecutionRead,
    StepRunRead,
)
from ipaas.kit.clock import utcnow
from ipaas.web.pages._common import Csrf, read_form, see_other
from ipaas.web.render import render
from ipaas.web.session import SessionPrincipal
from ipaas.workflows import service as workflow_service

router = APIRouter()
RESUMABLE_VALUES = frozenset(status.value for status in execution_service.RESUMABLE)
#: The filters under which the page offers to cancel every unfinished execution.
_PENDING_VALUES = frozenset({ExecutionStatus.queued.value, ExecutionStatus.running.value})
#: The list's "created in the last" filter, in hours.
PERIODS_H = (1, 6, 24, 72, 168)
#: The console's "retry them all" windows, in hours.
RETRY_WINDOWS_H = (1, 6, 24, 72)


async def _executions(
    principal: SessionPrincipal,
    runtime: RuntimeDep,
    workflow_id: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[str, Query(max_length=20)] = "",
    hours: Annotated[str, Query(max_length=4)] = "",
    q: Annotated[str, Query(max_length=MAX_SEARCH)] = "",
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    # The filter form sends ``status=`` for "any status" and ``hours=`` for "any time".
    try:
        wanted = ExecutionStatus(status) if status else None
    except ValueError:
        allowed = ", ".join(s.value for s in ExecutionStatus)
        raise BadRequest(f"Unknown status {status!r}; one of {allowed}") from None
    if hours and (not hours.isdigit() or int(hours) not in PERIODS_H):
        raise BadRequest(f"Unknown period {hours!r} hours; one of {', '.join(map(str, PERIODS_H))}")
    q = q.strip()
    if q and len(q) < MIN_SEARCH:
        raise BadRequest(f"Search for at least {MIN_SEARCH} characters")
    items, next_cursor = await execution_service.list_(
        runtime.store,
        tenant_id=principal.tenant_id,
        workflow_id=workflow_id or None,
        status=wanted,
        cursor=cursor or None,
        limit=50,
        since=utcnow() - timedelta(hours=int(hours)) if hours else None,
        trigger_contains=q or None,
    )
    names = await workflow_service.names(runtime.store, tenant_id=principal.tenant_id)
    return {
        "executions": [ExecutionRead.of(e) for e in items],
        "next_cursor": next_cursor,
        "filters": {"workflow_id": workflow_id or "", "status": status, "hours": hours, "q": q},
        "statuses": list(ExecutionStatus),
        "periods_h": PERIODS_H,
        "names": names,
        "retryable": status in RESUMABLE_VALUES,
        "retry_windows_h": RETRY_WINDOWS_H,
        "cancellable": status in _PENDING_VALUES,
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
        # Not once its workflow is deleted: the retry would be refused (409).
        "retryable": workflow is not None and execution.status in execution_service.RESUMABLE,
        # An error workflow's run: the execution whose failure it reports, and how many
        # failures it stands for (a digest: that one is the latest).
        "alert_of": _alert_of(execution.trigger, "execution", "id"),
        "alert_failures": _alert_of(execution.trigger, "failures", "count"),
        # Started by another execution's ``run_workflow`` step: that execution.
        "started_by": execution.trigger.headers.get(PARENT_EXECUTION_HEADER)
        if execution.trigger.type == SUBWORKFLOW_TRIGGER
        else None,
    }


def _alert_of(trigger: TriggerData, part: str, field: str) -> Any:
    """``trigger.body[part][field]`` of an alert's execution, else ``None``."""
    if trigger.type != ERROR_TRIGGER or not isinstance(trigger.body, dict):
        return None
    value = trigger.body.get(part)
    return value.get(field) if isinstance(value, dict) else None


ExecutionDep = Annotated[dict[str, Any], Depends(_execution)]


@router.get("/executions/{execution_id}")
async def execution_detail(request: Request, context: ExecutionDep) -> HTMLResponse:
    return render(request, "execution.html", context)


@router.get("/executions/{execution_id}/live")
async def execution_live(request: Request, context: ExecutionDep) -> HTMLResponse:
    return render(request, "_execution_body.html", context)


@router.post("/executions/retry", dependencies=Csrf)
async def retry_executions(
    request: Request, principal: SessionPrincipal, runtime: RuntimeDep
) -> Response:
    """Every execution in the filter's status (failed, timed out or cancelled; of the
    filter's workflow or all) from the last hours chosen: up to ``MAX_BULK_RETRY``."""
    form = await read_form(request)
    status, workflow_id = form.get("status", ""), form.get("workflow_id", "")
    hours = form.get("hours", "")
    if status not in RESUMABLE_VALUES or not hours.isdigit() or int(hours) not in RETRY_WINDOWS_H:
        raise BadRequest("Choose failed, timed_out or cancelled executions and a window")
    retried, more = await execution_service.retry_many(
        runtime.store,
        runtime.queue,
        runtime.intake,
        tenant_id=principal.tenant_id,
        since=utcnow() - timedelta(hours=int(hours)),
        until=None,
        workflow_id=workflow_id or None,
        statuses=[ExecutionStatus(status)],
        limit=MAX_BULK_RETRY,
    )
    query = urlencode(
        {"workflow_id": workflow_id, "status": status, "retried": len(retried), "more": int(more)}
    )
    return see_other(f"/executions?{query}")


@router.post("/executions/cancel", dependencies=Csrf)
async def cancel_executions(
    request: Request, principal: SessionPrincipal, runtime: RuntimeDep
) -> Response:
    """Every queued and running execution (of the filter's workflow, or all) cancelled, as
    ``POST /api/executions/cancel`` does: to stop a flood from the page that shows it."""
    form = await read_form(request)
    status, workflow_id = form.get("status", ""), form.get("workflow_id", "")
    if status not in _PENDING_VALUES:
        raise BadRequest("Choose queued or running executions")
    done = await execution_service.cancel_pending(
        runtime.store,
        runtime.cancel_bus,
        runtime.intake,
        tenant_id=principal.tenant_id,
        workflow_id=workflow_id or None,
    )
    query = urlencode(
        {
            "workflow_id": workflow_id,
            "status": status,
            "cancelled": done.cancelled,
            "stopping": len(done.stopping),
        }
    )
    return see_other(f"/executions?{query}")


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
        runtime.store,
        runtime.queue,
        runtime.intake,
        tenant_id=principal.tenant_id,
        execution_id=execution_id,
    )
    return see_other(f"/executions/{execution_id}")
