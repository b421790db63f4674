"""Reading, cancelling, retrying and replaying executions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import structlog

from ipaas.engine.cancellation import CancelBus
from ipaas.engine.queue import JobQueue
from ipaas.errors import Conflict, NotFound
from ipaas.executions.models import MAX_PAGE, Execution, ExecutionStatus, StepRun
from ipaas.kit.clock import utcnow
from ipaas.kit.pagination import Cursor
from ipaas.stores.base import CancelledPending, Store
from ipaas.webhooks import service as webhook_service
from ipaas.webhooks.intake import Intake

_log = structlog.get_logger(__name__)

#: What ``POST /api/executions/{id}/retry`` resumes. A cancel or a timeout is resumable
#: on the user's say-so like a failure; a success is replayed instead, and a queued or
#: running execution is still under way.
RESUMABLE = (ExecutionStatus.failed, ExecutionStatus.timed_out, ExecutionStatus.cancelled)


class ExecutionNotFound(NotFound):
    code = "execution_not_found"


class ExecutionNotRetryable(Conflict):
    code = "execution_not_retryable"


class WorkflowGone(Conflict):
    code = "workflow_not_found"


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
    since: datetime | None = None,
    until: datetime | None = None,
    trigger_contains: str | None = None,
) -> tuple[list[Execution], str | None]:
    """A page, newest first; ``since`` and ``until`` bound ``created_at`` (``until``
    exclusive); ``trigger_contains`` keeps those whose trigger holds the text. The cursor
    carries the position only: pass the same filters with it."""
    before = _created_before(until)
    if cursor:
        decoded = Cursor.decode(cursor)
        position = (decoded.created_at, decoded.id)
        before = position if before is None else min(before, position)
    page = await store.list_executions(
        tenant_id,
        workflow_id=workflow_id,
        status=status,
        before=before,
        since=since,
        limit=min(limit, MAX_PAGE),
        trigger_contains=trigger_contains,
    )
    next_cursor = Cursor(*page.next_key).encode() if page.next_key else None
    return page.items, next_cursor


def _created_before(until: datetime | None) -> tuple[datetime, str] | None:
    """``until`` as the listing's exclusive keyset: ``(created_at, id) < (until, "")`` holds
    exactly for the executions created before it."""
    return None if until is None else (until, "")


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


async def cancel_pending(
    store: Store,
    cancel_bus: CancelBus,
    intake: Intake,
    *,
    tenant_id: str,
    workflow_id: str | None,
) -> CancelledPending:
    """``cancel`` for every unfinished execution of the tenant, or of one workflow: to stop a
    flood of deliveries at once, whatever its size (the store does it in two statements)."""
    done = await store.cancel_pending(tenant_id, workflow_id=workflow_id, now=utcnow())
    intake.depth.removed(tenant_id, done.cancelled)
    for execution_id in done.stopping:
        await cancel_bus.publish(execution_id)
    _log.info(
        "executions_cancelled",
        tenant_id=tenant_id,
        workflow_id=workflow_id,
        cancelled=done.cancelled,
        stopping=len(done.stopping),
    )
    return done


async def retry(
    store: Store, queue: JobQueue, intake: Intake, *, tenant_id: str, execution_id: str
) -> Execution:
    """Resume a failed, timed-out or cancelled execution from its first step that did not
    succeed: completed steps are not run again and their outputs stay available to later
    steps' templates. The retried step gets a new attempt budget and the execution a new
    deadline. Queued only where the queue has room (503 otherwise, as for a webhook). Not
    for an execution of a deleted workflow (409, as ``replay``): deleting a workflow stops
    its executions, and a retry ran its steps again."""
    await webhook_service.queue_room(store, intake, tenant_id)
    execution = await store.requeue_execution(tenant_id, execution_id, statuses=RESUMABLE)
    if execution is None:
        current = await store.get_execution(tenant_id, execution_id)
        if current is None:
            raise ExecutionNotFound("Execution not found")
        resumable = current.status in RESUMABLE
        if resumable and await store.get_workflow(tenant_id, current.workflow_id) is None:
            raise WorkflowGone("The execution's workflow has been deleted")
        allowed = ", ".join(status.value for status in RESUMABLE)
        raise ExecutionNotRetryable(
            f"Execution is {current.status.value}; only {allowed} executions can be retried"
        )
    intake.depth.added(tenant_id)
    await webhook_service.enqueue(queue, execution.id)
    return execution


#: Executions read per page while ``retry_many`` looks for the ones to resume.
_SCAN_PAGE = 200


async def retry_many(
    store: Store,
    queue: JobQueue,
    intake: Intake,
    *,
    tenant_id: str,
    since: datetime,
    until: datetime | None,
    workflow_id: str | None,
    statuses: Sequence[ExecutionStatus],
    limit: int,
) -> tuple[list[Execution], bool]:
    """``retry`` for each of the tenant's executions in ``statuses`` created in
    ``[since, until)`` (of one workflow, or all): after an outage of a destination, every
    run that failed on it. At most ``limit``, the newest ones, resumed oldest first; the
    second value says whether more matched (those retried no longer match, so calling again
    goes on). One that changed status meanwhile is skipped, and so is every execution of a
    deleted workflow. No more than the queue has room for (``more`` then says so); none, and
    it is a 503, as for a webhook."""
    room = await webhook_service.queue_room(store, intake, tenant_id)
    if room is not None:
        limit = min(limit, room)
    workflows: dict[str, bool] = {}  # workflow id -> whether it still exists

    async def of_live_workflow(execution: Execution) -> bool:
        if execution.workflow_id not in workflows:
            stored = await store.get_workflow(tenant_id, execution.workflow_id)
            workflows[execution.workflow_id] = stored is not None
        return workflows[execution.workflow_id]

    found: list[Execution] = []
    for status in dict.fromkeys(statuses):  # each once, however often it was asked for
        before = _created_before(until)
        taken = 0
        while taken <= limit:
            page = await store.list_executions(
                tenant_id,
                workflow_id=workflow_id,
                status=status,
                before=before,
                since=since,
                limit=min(_SCAN_PAGE, limit + 1 - taken),
            )
            # Left out before the limit: counted, they would come back in every call as
            # ``more`` (they are never retried, so they stay in the window).
            live = [ex for ex in page.items if await of_live_workflow(ex)]
            found += live
            taken += len(live)
            if page.next_key is None:
                break
            before = page.next_key
    found.sort(key=lambda ex: (ex.created_at, ex.id), reverse=True)
    chosen = sorted(found[:limit], key=lambda ex: (ex.created_at, ex.id))
    retried: list[Execution] = []
    for candidate in chosen:
        execution = await store.requeue_execution(tenant_id, candidate.id, statuses=statuses)
        if execution is None:
            continue  # retried, cancelled or deleted meanwhile
        retried.append(execution)
        intake.depth.added(tenant_id)
        await webhook_service.enqueue(queue, execution.id)
    _log.info(
        "executions_retried", tenant_id=tenant_id, count=len(retried), more=len(found) > limit
    )
    return retried, len(found) > limit


async def replay(
    store: Store, queue: JobQueue, intake: Intake, *, tenant_id: str, execution_id: str
) -> Execution:
    """A new execution of the workflow's current version with the original trigger data,
    linked to the original by ``replay_of``; 503 when the queue has no room."""
    original = await store.get_execution(tenant_id, execution_id)
    if original is None:
        raise ExecutionNotFound("Execution not found")
    workflow = await store.get_workflow(tenant_id, original.workflow_id)
    if workflow is None:
        raise WorkflowGone("The execution's workflow has been deleted")
    return await webhook_service.start_admitted(
        store,
        queue,
        intake,
        workflow_id=workflow.id,
        tenant_id=tenant_id,
        version=workflow.version,
        trigger=original.trigger,
        replay_of=original.id,
    )
