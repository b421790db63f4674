"""How a ``run_workflow`` step starts another workflow of its tenant, once.

The execution it starts holds the key ``run:<this execution>:<its run>:<step record>`` in
the column webhooks' ``Idempotency-Key`` uses (``Store.create_execution_once``), and the key
never expires: a later attempt of the same step or item in the same run (a retry, a crash
between the start and the step's record, a redelivered job) finds that execution instead of
starting another. A manual retry is a new run (its ``started_at``): after the workflow it
starts was fixed, a retry starts it again rather than find the failed execution.

Its trigger is ``type: "workflow"``, with the step's ``body`` and headers that name the
execution that started it and how deep the chain is: a workflow that starts itself, or two
that start each other, stop at ``MAX_DEPTH`` with a failed step rather than run forever.
The tenant's queue caps hold as for a manual run: over them the step waits, and costs no
attempt (``queue_full``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ipaas.engine.connectors.base import QUEUE_FULL, ConnectorError, NotCalledError, Started
from ipaas.errors import ServiceUnavailable
from ipaas.executions.models import Execution, ExecutionStatus, TriggerData
from ipaas.kit.clock import utcnow
from ipaas.webhooks import results
from ipaas.webhooks import service as webhook_service

if TYPE_CHECKING:  # the runtime imports the engine, not the other way round
    from ipaas.runtime import Runtime

#: The trigger type of an execution another workflow's step started.
TRIGGER_TYPE = "workflow"
#: Its headers: the execution that started it, that one's workflow, and the chain's depth
#: (1: started by an execution that was not itself started so).
PARENT_EXECUTION_HEADER = "x-ipaas-parent-execution-id"
PARENT_WORKFLOW_HEADER = "x-ipaas-parent-workflow-id"
DEPTH_HEADER = "x-ipaas-depth"
#: The deepest chain of workflows starting one another.
MAX_DEPTH = 10
#: How long a step waits when the tenant's queue is full, as a sender is told to.
QUEUE_FULL_WAIT_S = 5.0
#: Older than any execution: a start's key is never given up (``create_execution_once``).
_NEVER = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Starter:
    """``WorkflowStarter`` for the steps of one execution (made for every execution run,
    so it only keeps the execution: what a start needs is worked out when one is made)."""

    runtime: Runtime
    execution: Execution

    async def start(self, workflow_id: str, body: Any, *, record: str) -> Started:
        parent = self.execution
        depth = depth_of(parent.trigger)
        if depth >= MAX_DEPTH:
            msg = f"workflows started one another {MAX_DEPTH} deep: {workflow_id} not started"
            raise ConnectorError(msg, retryable=False, code="too_deep")
        store, tenant_id = self.runtime.store, parent.tenant_id
        workflow = await store.get_workflow(tenant_id, workflow_id)
        if workflow is None:
            msg = f"workflow {workflow_id} not found: not started"
            raise ConnectorError(msg, retryable=False, code="workflow_not_found")
        try:
            await webhook_service.queue_room(store, self.runtime.intake, tenant_id)
        except ServiceUnavailable as exc:
            raise NotCalledError(
                f"{exc.message}: {workflow_id} not started",
                retry_at=utcnow() + timedelta(seconds=QUEUE_FULL_WAIT_S),
                code=QUEUE_FULL,
            ) from exc
        trigger = TriggerData(
            type=TRIGGER_TYPE,
            body=body,
            headers={
                PARENT_EXECUTION_HEADER: parent.id,
                PARENT_WORKFLOW_HEADER: parent.workflow_id,
                DEPTH_HEADER: str(depth + 1),
            },
            content_type="application/json",
        )
        # This run of the parent: its ``started_at`` (a manual retry's is new).
        run = _micros(parent.started_at) if parent.started_at is not None else 0
        key = f"run:{parent.id}:{run}:{record}"
        execution = webhook_service.new_execution(
            workflow.id, tenant_id, workflow.version, trigger, dedup_key=key
        )
        first_id = await store.create_execution_once(execution, expired_before=_NEVER)
        if first_id is not None:  # started by an earlier attempt
            return Started(first_id, workflow.id, ExecutionStatus.queued, None)
        await webhook_service.enqueue(self.runtime.queue, execution.id)
        self.runtime.intake.depth.added(tenant_id)
        return Started(execution.id, workflow.id, ExecutionStatus.queued, None, age_s=0.0)

    async def state(self, started: Started) -> Started:
        store, tenant_id = self.runtime.store, self.execution.tenant_id
        execution = await store.get_execution(tenant_id, started.execution_id)
        if execution is None:
            msg = f"execution {started.execution_id} of workflow {started.workflow_id} is gone"
            raise ConnectorError(msg, retryable=False, code="workflow_failed")
        steps = None
        if execution.status is ExecutionStatus.succeeded:
            runs = await store.list_step_runs(tenant_id, execution.id)
            steps = results.step_results(runs)
        return Started(
            execution.id,
            execution.workflow_id,
            execution.status,
            execution.error,
            steps,
            age_s=(utcnow() - execution.created_at).total_seconds(),
        )


def _micros(at: datetime) -> int:
    return (at - _NEVER) // timedelta(microseconds=1)


def depth_of(trigger: TriggerData) -> int:
    """How deep an execution with ``trigger`` is in a chain of starts."""
    if trigger.type != TRIGGER_TYPE:
        return 0
    try:
        return max(0, int(trigger.headers.get(DEPTH_HEADER, "0")))
    except ValueError:
        return MAX_DEPTH
