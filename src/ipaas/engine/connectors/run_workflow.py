"""A run-workflow step: it starts another workflow of the tenant with a body of its own
(n8n's Execute Workflow, Zapier's Sub-Zaps), and with ``wait`` reads that workflow's result.

The start is idempotent per step and item: the new execution holds a key made of this
execution's id and the step's record (``engine/subworkflows.py``), so a retry, a crash or a
redelivery of this step finds the execution it started before rather than start another.
Waiting holds no worker slot: while the other execution runs, this one waits in the store as
a retry does, and reads it again when it comes back (the wait costs no attempt; it counts
against this execution's timeout).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import Field

from ipaas.engine.connectors.base import (
    WAITING_FOR_WORKFLOW,
    Connector,
    ConnectorError,
    NotCalledError,
    Params,
    Started,
    StepContext,
)
from ipaas.executions.models import ExecutionStatus
from ipaas.kit.clock import utcnow

#: Waiting for the execution it started, a step reads it again after a quarter of that
#: execution's age, within these bounds: soon for one that takes a second, seldom for one
#: that takes minutes.
FIRST_LOOK_S = 0.2
MAX_LOOK_S = 10.0


class RunWorkflowParams(Params):
    #: The workflow to start: one of the tenant's, by its id; no template (checked when
    #: saved, and its deletion refused while this step names it).
    workflow_id: str = Field(min_length=1, max_length=64)
    #: Its trigger's body (``trigger.body`` in its templates): any JSON, templates inside.
    body: Any = None
    #: Wait for it to end, and give its steps' results as this step's output.
    wait: bool = False


class RunWorkflow(Connector):
    type = "run_workflow"
    Params = RunWorkflowParams
    credential_type = None

    def preview(self, params: RunWorkflowParams) -> dict[str, Any]:
        return {"starts_workflow": params.workflow_id, "body": params.body, "wait": params.wait}

    async def run(self, ctx: StepContext, params: RunWorkflowParams) -> Any:
        if ctx.workflows is None:  # a dry run starts nothing
            return {**self.preview(params), "execution_id": None}
        started = await ctx.workflows.start(params.workflow_id, params.body, record=ctx.step_id)
        if not params.wait:
            return _output(started)
        started = await ctx.workflows.state(started)
        if started.status is ExecutionStatus.succeeded:
            return _output(started)
        if started.status.terminal:
            msg = f"workflow {started.workflow_id}'s execution {started.execution_id} "
            msg += f"{started.status.value}: {started.error}"
            # The same execution would be found again: trying again cannot change it.
            raise ConnectorError(msg, retryable=False, code="workflow_failed")
        raise NotCalledError(
            f"waiting for execution {started.execution_id} of workflow {started.workflow_id}"
            f" ({started.status.value})",
            retry_at=utcnow() + timedelta(seconds=_next_look_s(started)),
            code=WAITING_FOR_WORKFLOW,
        )


def _next_look_s(started: Started) -> float:
    age = started.age_s if started.age_s is not None else 0.0
    return min(MAX_LOOK_S, max(FIRST_LOOK_S, age / 4))


def _output(started: Started) -> dict[str, Any]:
    output: dict[str, Any] = {
        "execution_id": started.execution_id,
        "workflow_id": started.workflow_id,
        "status": started.status.value,
    }
    if started.steps is not None:
        output["steps"] = started.steps
    return output
