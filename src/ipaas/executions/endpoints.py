from __future__ import annotations

from typing import Annotated

from fastapi import Query, status

from ipaas.api.deps import CurrentPrincipal, RuntimeDep, StoreDep
from ipaas.api.errors import AUTHENTICATED, QUEUES_WORK, WITH_BODY, responses
from ipaas.api.routing import api_router
from ipaas.executions import service as execution_service
from ipaas.executions import stats as execution_stats
from ipaas.executions.models import ExecutionStatus
from ipaas.executions.schemas import (
    BulkCancel,
    BulkCancelled,
    BulkRetried,
    BulkRetry,
    ExecutionDetail,
    ExecutionFilter,
    ExecutionList,
    ExecutionRead,
    ExecutionStats,
    StatsQuery,
    StepRunRead,
)
from ipaas.kit.clock import utcnow

router = api_router(prefix="/executions", tags=["executions"], responses=AUTHENTICATED)
stats_router = api_router(prefix="/stats", tags=["executions"], responses=AUTHENTICATED)
_BY_ID = responses(404, 422)


@stats_router.get("", responses=responses(422))
async def get_stats(
    principal: CurrentPrincipal,
    store: StoreDep,
    query: Annotated[StatsQuery, Query()],
) -> ExecutionStats:
    """Your executions that finished in the last ``window_s`` seconds: per minute by status,
    and duration percentiles."""
    return await execution_stats.for_tenant(
        store, tenant_id=principal.tenant_id, window_s=query.window_s, now=utcnow()
    )


@router.get("", responses=responses(400, 422, s400="Invalid `cursor`"))
async def list_executions(
    principal: CurrentPrincipal,
    store: StoreDep,
    query: Annotated[ExecutionFilter, Query()],
) -> ExecutionList:
    items, next_cursor = await execution_service.list_(
        store,
        tenant_id=principal.tenant_id,
        workflow_id=query.workflow_id,
        status=query.status,
        cursor=query.cursor,
        limit=query.limit,
        since=query.since,
        until=query.until,
        trigger_contains=query.q,
    )
    return ExecutionList(items=[ExecutionRead.of(e) for e in items], next_cursor=next_cursor)


@router.get("/{execution_id}", responses=_BY_ID)
async def get_execution(
    execution_id: str, principal: CurrentPrincipal, store: StoreDep
) -> ExecutionDetail:
    execution, steps = await execution_service.get(
        store, tenant_id=principal.tenant_id, execution_id=execution_id
    )
    return ExecutionDetail(
        **ExecutionRead.of(execution).model_dump(),
        trigger=execution.trigger.model_dump(mode="json"),
        steps=[StepRunRead.of(s) for s in steps],
    )


@router.post("/{execution_id}/cancel", responses=_BY_ID)
async def cancel_execution(
    execution_id: str, principal: CurrentPrincipal, runtime: RuntimeDep
) -> ExecutionRead:
    execution = await execution_service.cancel(
        runtime.store, runtime.cancel_bus, tenant_id=principal.tenant_id, execution_id=execution_id
    )
    return ExecutionRead.of(execution)


@router.post(
    "/retry",
    status_code=status.HTTP_202_ACCEPTED,
    responses=responses(422) | WITH_BODY | QUEUES_WORK,
)
async def retry_executions(
    body: BulkRetry, principal: CurrentPrincipal, runtime: RuntimeDep
) -> BulkRetried:
    """Resume many at once, as `POST /api/executions/{id}/retry` does one: your executions
    (or one workflow's) in `statuses` (default failed and timed out) created in
    `[since, until)`, after a destination's outage say. At most `limit` (100, up to 1,000)
    per call, the newest, queued again oldest first; `more` is true while others match:
    call again."""
    retried, more = await execution_service.retry_many(
        runtime.store,
        runtime.queue,
        runtime.intake,
        tenant_id=principal.tenant_id,
        since=body.since,
        until=body.until,
        workflow_id=body.workflow_id,
        statuses=[ExecutionStatus(s) for s in body.statuses],
        limit=body.limit,
    )
    return BulkRetried(retried=[e.id for e in retried], more=more)


@router.post("/cancel", responses=responses(422) | WITH_BODY)
async def cancel_executions(
    body: BulkCancel, principal: CurrentPrincipal, runtime: RuntimeDep
) -> BulkCancelled:
    """Cancel every unfinished execution of yours, or of one workflow (`workflow_id`, a
    deleted one's too), as `POST /api/executions/{id}/cancel` does one: to stop a flood of
    deliveries at once. Queued ones (retries waiting for their time too) are `cancelled`
    at once (their count); running ones stop, in-flight calls included (their ids)."""
    done = await execution_service.cancel_pending(
        runtime.store,
        runtime.cancel_bus,
        runtime.intake,
        tenant_id=principal.tenant_id,
        workflow_id=body.workflow_id,
    )
    return BulkCancelled(cancelled=done.cancelled, stopping=done.stopping)


@router.post(
    "/{execution_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    responses=_BY_ID
    | responses(409, s409="Not failed, timed out or cancelled, or its workflow is deleted")
    | QUEUES_WORK,
)
async def retry_execution(
    execution_id: str, principal: CurrentPrincipal, runtime: RuntimeDep
) -> ExecutionRead:
    """Resume a failed, timed-out or cancelled execution from the step that did not succeed
    (409 for any other status)."""
    execution = await execution_service.retry(
        runtime.store,
        runtime.queue,
        runtime.intake,
        tenant_id=principal.tenant_id,
        execution_id=execution_id,
    )
    return ExecutionRead.of(execution)


@router.post(
    "/{execution_id}/replay",
    status_code=status.HTTP_201_CREATED,
    responses=_BY_ID
    | responses(409, s409="The execution's workflow has been deleted")
    | QUEUES_WORK,
)
async def replay_execution(
    execution_id: str, principal: CurrentPrincipal, runtime: RuntimeDep
) -> ExecutionRead:
    """A new execution with the same trigger data (``replay_of`` names the original)."""
    execution = await execution_service.replay(
        runtime.store,
        runtime.queue,
        runtime.intake,
        tenant_id=principal.tenant_id,
        execution_id=execution_id,
    )
    return ExecutionRead.of(execution)
