"""PostgreSQL: the queue's dead index entries are cleared before claims wade through them.

Every claim and every finish leaves the execution's previous row version dead, and its entry
in a queue index (``ix_execution_queued``, ``ix_execution_running``), until a VACUUM. A
tenant's claim reads its queued entries oldest first, so it steps over every one claimed
since the last VACUUM: the claims' cost grows with the churn. Autovacuum comes at most once
per ``autovacuum_naptime`` (a minute) and by default only once a fifth of the table is dead;
with autovacuum off, never. So every worker and the scheduler look at the table's dead row
versions every ``IPAAS_QUEUE_VACUUM_INTERVAL_S`` and VACUUM it once
``IPAAS_QUEUE_VACUUM_MIN_DEAD`` have piled up (docs/architecture.md, "Vacuuming the queue").
With many processes one VACUUM runs at a time (the others skip it), and after it they find
few dead rows.

A VACUUM reads all of the table's indexes, so it costs more as the history grows: a process
spends at most ``MAX_DUTY`` of its time vacuuming. After one that took d seconds it waits
d * (1 / MAX_DUTY - 1) before the next.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from ipaas.kit.periodic import run_every
from ipaas.observability.metrics import QUEUE_VACUUMS
from ipaas.runtime import Runtime
from ipaas.stores.base import QueueVacuum

_log = structlog.get_logger(__name__)

#: The largest share of a process's time its VACUUMs may take.
MAX_DUTY = 0.1
#: Why a VACUUM did not run that an operator should hear of (once per process): another
#: VACUUM under way (``busy``) is nothing to tell.
TOLD_ONCE = frozenset({"not_owner"})


class QueueVacuumer:
    """One process's passes: ``once`` asks the store to vacuum the queue when due."""

    def __init__(self, runtime: Runtime, clock: Callable[[], float] = time.monotonic) -> None:
        self.runtime = runtime
        self._clock = clock
        self._not_before = 0.0
        self._warned: set[str] = set()

    async def once(self) -> QueueVacuum | None:
        started = self._clock()
        if started < self._not_before:
            return None
        min_dead = self.runtime.settings.queue_vacuum_min_dead
        result = await self.runtime.store.vacuum_queue(min_dead=min_dead)
        if result is None:
            return None
        took = self._clock() - started
        if result.vacuumed:
            QUEUE_VACUUMS.inc()
            self._not_before = started + took / MAX_DUTY
            _log.info("queue_vacuumed", dead=result.dead, duration_ms=round(took * 1000, 1))
        elif result.skipped in TOLD_ONCE and result.skipped not in self._warned:
            self._warned.add(result.skipped)
            _log.warning("queue_vacuum_skipped", reason=result.skipped, dead=result.dead)
        return result


async def run_queue_vacuum(runtime: Runtime, stop: asyncio.Event) -> None:
    interval_s = runtime.settings.queue_vacuum_interval_s
    if interval_s == 0:
        return
    vacuumer = QueueVacuumer(runtime)
    await run_every(interval_s, stop, vacuumer.once, name="queue_vacuum")
