"""Cron triggers -> executions: one per workflow and tick, however many processes run this.

Each pass lists the active ``schedule`` workflows and, for each, computes the latest tick at
or before ``now`` in the workflow's time zone. That tick becomes a ``queued`` execution whose
``dedup_key`` is ``schedule:<tick in UTC, ISO>``; the store's unique ``(workflow_id,
dedup_key)`` index refuses a second one, so schedulers in several processes (or two passes
of one) never create the same tick twice: the loser gets ``DuplicateError`` and moves on.

Policy (docs/architecture.md, "Schedules"):

* Only the *latest* due tick is ever created. After downtime the last missed tick runs
  once; the ones before it are skipped, never replayed as a backlog.
* A tick earlier than the workflow's ``updated_at`` is skipped: a workflow never runs a tick
  from before it existed or was last changed (created, edited, re-activated), so turning a
  paused workflow back on does not fire a stale tick at once.
* A stored schedule that no longer validates (a zone dropped from tzdata) or fails to give a
  tick (``0 0 30 2 *``, February 30, saved before the API refused it) is logged and skipped,
  again an hour later; the other workflows still run. Before, a schedule croniter could not
  tick stopped every pass, and so every tenant's schedules.
* Daylight saving time, as cron itself (cronie, Vixie cron) does it: a wall-clock time the
  clocks skip in spring fires at the first valid time after it; one they repeat in autumn
  fires once for a schedule at fixed times (neither its minute nor its hour field is a
  ``*``: ``30 2 * * *``), and in both passes for one that runs every hour or more often
  (``0 * * * *``, ``*/15 * * * *``), whose ticks are intervals of real time.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog
from croniter import croniter  # type: ignore[import-untyped]

from ipaas.engine.queue import JobQueue
from ipaas.executions.models import TriggerData
from ipaas.kit.clock import utcnow
from ipaas.kit.periodic import run_every
from ipaas.runtime import Runtime
from ipaas.stores.base import DuplicateError, ScheduledWorkflow, Store
from ipaas.webhooks import service as webhook_service
from ipaas.workflows.models import Workflow

#: A schedule workflow as the scheduler reads it (``list_scheduled_workflows``), or whole.
Scheduled = ScheduledWorkflow | Workflow

_log = structlog.get_logger(__name__)

#: Seconds between passes. Cron has minute resolution, so a tick starts at most a second
#: late. A pass is cheap: one read of the schedules' ids and ``updated_at`` (whole only the
#: new or changed ones); a schedule is computed only once its next tick has come, and an
#: insert made only for a tick not yet handled (all known from the in-process ``Memo``).
SCHEDULER_INTERVAL_S = 1.0

#: ``get_prev`` returns the tick strictly before its start, so start just after ``now`` to
#: include a tick that falls exactly on ``now`` (datetimes have microsecond resolution).
_JUST_AFTER = timedelta(microseconds=1)
#: How long a pass leaves a stored schedule that fails alone (and its warning) unless the
#: workflow changes.
INVALID_QUIET = timedelta(hours=1)


#: The aliases whose ticks are at fixed times of the day (``@hourly`` is ``0 * * * *``).
_FIXED_TIME_ALIASES = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight"}
)


def at_fixed_times(cron: str) -> bool:
    """Whether ``cron`` fires at fixed times of the day: neither its minute nor its hour
    field starts with ``*`` (cron's own test for the jobs it does not run twice when the
    clocks go back)."""
    if cron.startswith("@"):
        return cron in _FIXED_TIME_ALIASES
    minute, hour = cron.split()[:2]
    return not minute.startswith("*") and not hour.startswith("*")


def due_tick(workflow: Scheduled, now: datetime) -> datetime | None:
    """The latest tick at or before ``now`` (aware, in the workflow's zone), or ``None`` when
    that tick is older than the workflow's last change. Raises ``ValidationError`` for a
    schedule that does not validate."""
    schedule = workflow.trigger.schedule
    local_now = (now + _JUST_AFTER).astimezone(schedule.zone)
    tick: datetime = croniter(schedule.cron, local_now).get_prev(datetime)
    if tick.fold and at_fixed_times(schedule.cron):
        # The second pass of a wall-clock time the clocks went back over: the same tick as
        # the first (same key), so a schedule at fixed times fires once.
        tick = tick.replace(fold=0)
    if tick < workflow.updated_at:
        return None
    return tick


def next_tick(workflow: Scheduled, now: datetime) -> datetime:
    """The first tick after ``now``, in UTC: until then ``due_tick`` stays what it is."""
    schedule = workflow.trigger.schedule
    local_now = (now + _JUST_AFTER).astimezone(schedule.zone)
    following: datetime = croniter(schedule.cron, local_now).get_next(datetime)
    return following.astimezone(UTC)


@dataclass(slots=True)
class Memo:
    """What ``run_scheduler`` keeps across passes. Correctness never depends on it: the
    store's unique key makes one execution per tick whatever it holds."""

    #: Workflow id -> key of the last tick handled: saves the insert, and its refusal, for
    #: a tick already handled. Keys, not datetimes: two datetimes of one zone that differ
    #: only in ``fold`` (02:00 before and after the clocks go back) compare equal.
    ticks: dict[str, str] = field(default_factory=dict)
    #: Workflow id -> (its ``updated_at``, its next tick in UTC): no pass computes the
    #: schedule again before that tick, unless the workflow changed. Computing every
    #: schedule at every pass (croniter, a second apart) took 165 ms a pass for 1,000
    #: schedules, on the event loop of every worker.
    quiet_until: dict[str, tuple[datetime, datetime]] = field(default_factory=dict)
    #: Workflow id -> the schedule as last read. A pass reads only each schedule's id and
    #: ``updated_at``, then whole only those new or changed since: reading 10,000 schedules
    #: whole took 0.1-0.2 s a pass, every second, in every process that schedules.
    workflows: dict[str, Scheduled] = field(default_factory=dict)

    def forget_all_but(self, live: set[str]) -> None:
        """Forget workflows that are no longer scheduled (deleted, paused, re-triggered)."""
        for memo in (self.ticks, self.quiet_until, self.workflows):
            for workflow_id in [w for w in memo if w not in live]:
                del memo[workflow_id]

    def quiet(self, workflow: Scheduled, now: datetime) -> bool:
        """Whether ``workflow``'s due tick cannot have changed since it was last computed."""
        known = self.quiet_until.get(workflow.id)
        return known is not None and known[0] == workflow.updated_at and now < known[1]


def dedup_key(tick: datetime) -> str:
    """The execution's unique key for one tick: the same instant gives the same key in
    every process, whatever zone it was computed in."""
    return f"schedule:{tick.astimezone(UTC).isoformat()}"


async def schedule_once(
    store: Store,
    queue: JobQueue,
    *,
    now: datetime,
    memo: Memo | None = None,
) -> list[str]:
    """One pass: create the due tick's execution for every scheduled workflow.

    Returns the ids of the executions this call created (ticks another process or an earlier
    pass created already are not included). ``memo`` is kept across passes by
    ``run_scheduler`` (``Memo``).
    """
    created: list[str] = []
    workflows = await _scheduled(store, memo)
    if memo is not None:
        memo.forget_all_but({wf.id for wf in workflows})
    for workflow in workflows:
        if memo is not None and memo.quiet(workflow, now):
            continue
        try:
            tick = due_tick(workflow, now)
            if memo is not None:
                memo.quiet_until[workflow.id] = (workflow.updated_at, next_tick(workflow, now))
        except Exception:  # one tenant's schedule must not stop the others' (a bug too)
            _log.warning(
                "schedule_invalid",
                workflow_id=workflow.id,
                tenant_id=workflow.tenant_id,
                exc_info=True,
            )
            if memo is not None:  # said again in an hour, or once the workflow changes
                memo.quiet_until[workflow.id] = (workflow.updated_at, now + INVALID_QUIET)
            continue
        if tick is None:
            continue
        key = dedup_key(tick)
        if memo is not None and memo.ticks.get(workflow.id) == key:
            continue
        try:
            execution = await webhook_service.start(
                store,
                queue,
                workflow_id=workflow.id,
                tenant_id=workflow.tenant_id,
                version=workflow.version,
                trigger=TriggerData(type="schedule", body={"scheduled_for": tick.isoformat()}),
                dedup_key=key,
            )
        except DuplicateError:
            pass  # another process, or an earlier pass, created this tick
        else:
            created.append(execution.id)
            _log.info(
                "schedule_fired",
                workflow_id=workflow.id,
                execution_id=execution.id,
                scheduled_for=tick.isoformat(),
            )
        if memo is not None:
            memo.ticks[workflow.id] = key
    return created


#: More new or changed schedules than this in one pass are read all at once (start-up).
READ_BY_ID_MAX = 500


async def _scheduled(store: Store, memo: Memo | None) -> list[Scheduled]:
    """The active schedules, oldest first: read whole without a memo; with one, the ones
    whose ``updated_at`` differs from what the memo holds (every save changes it)."""
    if memo is None:
        return list(await store.list_scheduled_workflows())
    stamps = await store.scheduled_workflow_stamps()
    known = memo.workflows
    stale = [
        workflow_id
        for workflow_id, updated_at in stamps
        if (held := known.get(workflow_id)) is None or held.updated_at != updated_at
    ]
    if stale:
        fresh = await store.list_scheduled_workflows(
            ids=stale if len(stale) <= READ_BY_ID_MAX else None
        )
        known.update((workflow.id, workflow) for workflow in fresh)
    # A schedule paused or deleted between the two reads is skipped this pass.
    return [known[workflow_id] for workflow_id, _ in stamps if workflow_id in known]


async def run_scheduler(runtime: Runtime, stop: asyncio.Event) -> None:
    """Run ``schedule_once`` every ``SCHEDULER_INTERVAL_S`` until ``stop`` is set."""
    memo = Memo()
    await run_every(
        SCHEDULER_INTERVAL_S,
        stop,
        lambda: schedule_once(runtime.store, runtime.queue, now=utcnow(), memo=memo),
        name="scheduler",
    )
