"""Failure alerts: each failure of a workflow runs its error workflow (n8n's error workflow,
Svix's operational webhooks), with the failure as the trigger body.

Every statement that records a failure (a finish ``failed`` or ``timed_out``, the reaper's
timeout) marks the row pending in the same write, so a failure is never missed whatever
crashes after it. A pass in every worker process (``alert_pass``, with the retry pass each
second) reads the pending failures, builds each one's alert execution, and settles them in
one transaction that also creates the alerts (``Store.settle_alerts``): a failure gets at
most one alert, however many processes run the pass at once, and a crash before the commit
leaves it pending for the next pass.

Alerts are paced per failed workflow (``IPAAS_ALERT_INTERVAL_S``, 60 s): a destination that
is down fails every execution, and one Slack message per failure would bury the channel
(and meet Slack's own limit of one message a second). The first failure after a quiet spell
alerts at once; the ones after it within the interval are held (counted in the store, with
the latest) and go out as one alert when it is up, a digest: the latest failure, and
``failures.count``. The store decides which, in the settle's transaction, so two processes
never both alert inside one interval.

An alert's execution does not alert in turn (``trigger.type`` ``error``), so an error
workflow that fails, or names a workflow that names it, cannot loop.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import timedelta
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
from ipaas.kit.clock import utcnow
from ipaas.runtime import Runtime
from ipaas.stores.base import AlertWindow, PendingAlert, PendingDigest, Store
from ipaas.webhooks import service as webhook_service
from ipaas.workflows.models import Workflow

_log = structlog.get_logger(__name__)

#: Failures one batch settles; a pass takes another while a batch finds this many, up to
#: ``MAX_BATCHES`` (2,000 failures a second per process; the rest wait for the next pass).
#: A pass sends at most this many digests (one per workflow) too.
ALERT_BATCH = 200
MAX_BATCHES = 10


async def alert_pass(runtime: Runtime) -> int:
    """Settle the pending failures, then send the digests that are due; the number of alert
    executions created (and queued). Digests come second, so a failure held in this pass
    goes out with the digest it joined, not an interval later."""
    store = runtime.store
    interval = timedelta(seconds=runtime.settings.alert_interval_s)
    created: list[Execution] = []
    for _ in range(MAX_BATCHES):
        pending = await store.pending_alerts(limit=ALERT_BATCH)
        if not pending:
            break
        reads = _Reads(store, runtime.settings.public_url)
        alerts = [PendingAlert(failed, await reads.alert_of(failed)) for failed in pending]
        created += await store.settle_alerts(alerts, now=utcnow(), interval=interval)
        if len(pending) < ALERT_BATCH:
            break
    if interval:
        now = utcnow()
        due = await store.due_alert_digests(last_before=now - interval, limit=ALERT_BATCH)
        if due:
            reads = _Reads(store, runtime.settings.public_url)
            digests = [PendingDigest(window, await reads.digest_of(window)) for window in due]
            created += await store.settle_alert_digests(digests, now=now)
    for alert in created:
        body = alert.trigger.body
        _log.info(
            "failure_alert_queued",
            tenant_id=alert.tenant_id,
            execution_id=alert.id,
            failed_execution_id=body["execution"]["id"],
            failures=body["failures"]["count"],
        )
        await webhook_service.enqueue(runtime.queue, alert.id)
    return len(created)


class _Reads:
    """What one batch reads to build its alerts: each workflow once, by tenant and id (a
    storm of failures is mostly one workflow's). An alert that cannot be built (a bug, not
    an outage: the pass stops then, and the next one tries again) is settled without one,
    logged, so that it does not hold back every later alert."""

    def __init__(self, store: Store, public_url: str | None) -> None:
        self.store = store
        self.public_url = public_url
        self.workflows: dict[tuple[str, str], Workflow | None] = {}

    async def alert_of(self, failed: Execution) -> Execution | None:
        """The execution of ``failed``'s error workflow, or ``None``: not a failure (any
        more), itself an alert, no error workflow set, or that workflow gone or paused."""
        if failed.status not in ALERTING_STATUSES or failed.trigger.type == ERROR_TRIGGER:
            return None
        alert = self._alert(failed, failed.workflow_id, {"count": 1, "since": None})
        return await _unless_broken(alert, failed.id)

    async def digest_of(self, window: AlertWindow) -> Execution | None:
        """The alert for the failures ``window`` holds: the latest of them, and their count
        since the last alert; ``None`` when there is nobody to alert any more (the error
        workflow unset, gone or paused; the latest failure deleted)."""
        return await _unless_broken(self._digest(window), window.held_execution_id)

    async def _digest(self, window: AlertWindow) -> Execution | None:
        if window.held_execution_id is None:
            return None
        failed = await self.store.get_execution(window.tenant_id, window.held_execution_id)
        if failed is None:
            return None
        failures = {"count": window.held, "since": _iso(window.last_alert_at)}
        return await self._alert(failed, window.workflow_id, failures)

    async def _alert(
        self, failed: Execution, workflow_id: str, failures: dict[str, Any]
    ) -> Execution | None:
        workflow = await self._workflow(failed.tenant_id, workflow_id)
        if workflow is None or workflow.error_workflow_id is None:
            return None
        target = await self._workflow(failed.tenant_id, workflow.error_workflow_id)
        if target is None or not target.active:
            _log.warning(
                "failure_alert_skipped",
                reason="error_workflow_missing" if target is None else "error_workflow_inactive",
                tenant_id=failed.tenant_id,
                workflow_id=workflow.id,
                error_workflow_id=workflow.error_workflow_id,
                failed_execution_id=failed.id,
                failures=failures["count"],
            )
            return None
        steps = await self.store.list_step_runs(failed.tenant_id, failed.id)
        body = failure_body(failed, workflow.name, steps, self.public_url)
        body["failures"] = failures
        return webhook_service.new_execution(
            target.id,
            failed.tenant_id,
            target.version,
            TriggerData(type=ERROR_TRIGGER, body=body),
            dedup_key=None,
        )

    async def _workflow(self, tenant_id: str, workflow_id: str) -> Workflow | None:
        key = (tenant_id, workflow_id)  # reads stay within the failure's tenant
        if key not in self.workflows:
            self.workflows[key] = await self.store.get_workflow(*key)
        return self.workflows[key]


async def _unless_broken(
    build: Awaitable[Execution | None], failed_execution_id: str | None
) -> Execution | None:
    """``build``'s alert; ``None``, logged, when building it fails for any reason but the
    store's outage (which stops the pass: the next one tries again)."""
    try:
        return await build
    except StoreUnavailable:
        raise
    except Exception:
        _log.exception("failure_alert_failed", failed_execution_id=failed_execution_id)
        return None


def failure_body(
    failed: Execution, workflow_name: str, steps: list[StepRun], public_url: str | None = None
) -> dict[str, Any]:
    """What an error workflow's templates read as ``trigger.body`` (with ``failures``, which
    the pass adds): the failed execution, its workflow, and the step that failed (``null``
    when none did: a timeout between steps). With ``public_url`` (``IPAAS_PUBLIC_URL``) the
    execution's console page and API resource also as absolute URLs, for a link in the
    message; without it, where a worker cannot know the server's address, ``null``."""
    console_path, api_path = f"/executions/{failed.id}", f"/api/executions/{failed.id}"
    failed_step = next(
        (s for s in reversed(steps) if s.status not in (StepStatus.succeeded, StepStatus.skipped)),
        None,
    )
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
            "api_path": api_path,
            "console_path": console_path,
            "api_url": public_url + api_path if public_url else None,
            "console_url": public_url + console_path if public_url else None,
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
