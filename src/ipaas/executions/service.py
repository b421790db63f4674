"""Reading and cancelling executions."""

from __future__ import annotations

from ipaas.engine.cancellation import CancelBus
from ipaas.errors import NotFound
from ipaas.executions.models import Execution, ExecutionStatus, StepRun
from ipaas.kit.clock import utcnow
from ipaas.kit.pagination import Cursor
from ipaas.stores.base import Store

MAX_PAGE = 200


class ExecutionNotFound(NotFound):
    code = "execution_not_found"


async def get(
    store: Store, *, tenant_id: str, execution_id: str
) -> tuple[Execution, list[StepRun]]:
    execution = await store.get_execution(tenant_id, execution_id)
    if execution is None:
        raise ExecutionNotFound("Execution not found")
    return execution, await store.list_step_runs(tenant_id, execution_id)


async def list_(
    store: Store,
    *,
    tenant_id: str,
    workflow_id: str | None,
    status: ExecutionStatus | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[Execution], str | None]:
    before = Cursor.decode(cursor) if cursor else None
    page = await store.list_executions(
        tenant_id,
        workflow_id=workflow_id,
        status=status,
        before=(before.created_at, before.id) if before else None,
        limit=min(limit, MAX_PAGE),
    )
    next_cursor = Cursor(*page.next_key).encode() if page.next_key else None
    return page.items, next_cursor


async def cancel(
    store: Store, cancel_bus: CancelBus, *, tenant_id: str, execution_id: str
) -> Execution:
    """Queued: cancelled at once. Running: the store flags it and the bus tells the process
    running it (this one directly in embedded mode, any worker over Redis pub/sub), which stops
    it, in-flight HTTP call included; the owner's heartbeat sees the flag if the message is
    lost. Terminal: unchanged."""
    execution = await store.request_cancel(tenant_id, execution_id, now=utcnow())
    if execution is None:
        raise ExecutionNotFound("Execution not found")
    if execution.status is ExecutionStatus.running:
        await cancel_bus.publish(execution_id)
    return execution
