"""Failure alerts: each failure of a workflow runs its error workflow (n8n's error workflow,
Svix's operational webhooks), with the failure as the trigger body.

Every statement that records a failure (a finish ``failed`` or ``timed_out``, the reaper's
timeout) marks the row pending in the same write, so a failure is never missed whatever
crashes after it. A pass in every worker process (``alert_pass``, with the retry pass each
second) reads the pending failures, builds each one's alert execution, and settles them in
one transaction that also creates the alerts (``Store.settle_alerts``): a failure gets at
most one alert, however many processes run the pass at once, and a crash before the commit
leaves it pending for the next pass.

An alert's execution does not alert in turn (``trigger.type`` ``error``), so an error
workflow that fails, or names a workflow that names it, cannot loop.
"""

from __future__ import annotations

from typing import Any

import structlog

from ipaas.errors import StoreUnavailable
from ipaas.executions.models import (
    ALERTING_STATUSES,
    ERROR_TRIGGER,
    Execution,
    StepRun,
    StepStatus,
    TriggerData,
)
from ipaas.runtime import Runtime
from ipaas.stores.base import PendingAlert, Store
from ipaas.webhooks import service as webhook_service
from ipaas.workflows.models import Workflow

_log = structlog.get_logger(__name__)

#: Failures one batch settles; a pass takes another while a batch finds this many, up to
#: ``MAX_BATCHES`` (2,000 failures a second per process; the rest wait for the next pass).
ALERT_BATCH = 200
MAX_BATCHES = 10


async def alert_pass(runtime: Runtime) -> int:
    """Settle the pending failures; the number of alert executions created (and queued)."""
    created = 0
    for _ in range(MAX_BATCHES):
        pending = await runtime.store.pending_alerts(limit=ALERT_BATCH)
        if not pending:
            return created
        # A storm of failures is mostly one workflow's: each workflow is read once a batch.
        workflows: dict[tuple[str, str], Workflow | None] = {}
        alerts = [
            PendingAlert(failed, await _built(runtime.store, workflows, failed))
            for failed in pending
        ]
        for alert in await runtime.store.settle_alerts(alerts):
            created += 1
            _log.info(
                "failure_alert_queued",
                tenant_id=alert.tenant_id,
                execution_id=alert.id,
                failed_execution_id=alert.trigger.body["execution"]["id"],
            )
            await webhook_service.enqueue(runtime.queue, alert.id)
        if len(pending) < ALERT_BATCH:
            break
    return created


async def _built(
    store: Store, workflows: dict[tuple[str, str], Workflow | None], failed: Execution
) -> Execution | None:
    """``_alert_for``; a failure whose alert cannot be built (a bug, not an outage: the pass
    stops then, and the next one tries again) is settled without one, logged, so that it
    does not hold back every later alert."""
    try:
        return await _alert_for(store, workflows, failed)
    except StoreUnavailable:
        raise
    except Exception:
        _log.exception("failure_alert_failed", failed_execution_id=failed.id)
        return None


async def _alert_for(
    store: Store, workflows: dict[tuple[str, str], Workflow | None], failed: Execution
) -> Execution | None:
    """The execution of ``failed``'s error workflow, or ``None``: not a failure (any more),
    itself an alert, no error workflow set, or that workflow gone or paused (logged).
    ``workflows`` holds the ones read already (by tenant and id; ``None``: not found)."""
    if failed.status not in ALERTING_STATUSES or failed.trigger.type == ERROR_TRIGGER:
        return None

    async def read(workflow_id: str) -> Workflow | None:
        key = (failed.tenant_id, workflow_id)  # reads stay within the failure's tenant
        if key not in workflows:
            workflows[key] = await store.get_workflow(*key)
        return workflows[key]

    workflow = await read(failed.workflow_id)
    if workflow is None or workflow.error_workflow_id is None:
        return None
    target = await read(workflow.error_workflow_id)
    if target is None or not target.active:
        _log.warning(
            "failure_alert_skipped",
            reason="error_workflow_missing" if target is None else "error_workflow_inactive",
            tenant_id=failed.tenant_id,
            workflow_id=workflow.id,
            error_workflow_id=workflow.error_workflow_id,
            failed_execution_id=failed.id,
        )
        return None
    steps = await store.list_step_runs(failed.tenant_id, failed.id)
    body = failure_body(failed, workflow.name, steps)
    return webhook_service.new_execution(
        target.id,
        failed.tenant_id,
        target.version,
        TriggerData(type=ERROR_TRIGGER, body=body),
        dedup_key=None,
    )


def failure_body(failed: Execution, workflow_name: str, steps: list[StepRun]) -> dict[str, Any]:
    """What an error workflow's templates read as ``trigger.body``: the failed execution, its
    workflow, and the step that failed (``null`` when none did: a timeout between steps)."""
    failed_step = next((s for s in reversed(steps) if s.status is not StepStatus.succeeded), None)
    return {
        "execution": {
            "id": failed.id,
            "status": failed.status.value,
            "error": failed.error,
            "attempt": failed.attempt,
            "trigger_type": failed.trigger.type,
            "created_at": _iso(failed.created_at),
            "started_at": _iso(failed.started_at),
            "finished_at": _iso(failed.finished_at),
            "api_path": f"/api/executions/{failed.id}",
            "console_path": f"/executions/{failed.id}",
        },
        "workflow": {
            "id": failed.workflow_id,
            "name": workflow_name,
            "version": failed.workflow_version,
        },
        "failed_step": None
        if failed_step is None
        else {
            "id": failed_step.step_id,
            "type": failed_step.type,
            "attempt": failed_step.attempt,
            "error": failed_step.error,
            "error_code": failed_step.error_code,
            "status_code": failed_step.status_code,
        },
    }


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()
