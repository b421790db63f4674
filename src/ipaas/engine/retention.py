"""Execution retention: finished executions past the age or count limit are deleted.

Each pass walks the tenants. For each it fixes a horizon once (the later of the age limit
and the finish of the ``retention_max_executions``-th newest execution) and deletes what
finished before it, oldest first, in batches of ``BATCH``: one short transaction each, so
intake and claims interleave, and a pause as long as the batch took after each, so a pass
takes at most about half of the writer's time however much it has to delete. Then the store
gives the space back (SQLite: incremental vacuum and a WAL checkpoint). Queued and running
executions are never deleted. Every worker and the scheduler run it; concurrent passes
delete disjoint or already-deleted rows, which is harmless.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

import structlog

from ipaas.kit.clock import utcnow
from ipaas.kit.periodic import run_every
from ipaas.observability.metrics import EXECUTIONS_PRUNED
from ipaas.runtime import Runtime

_log = structlog.get_logger(__name__)

#: Executions one transaction deletes: small enough that a writer waiting behind it (an
#: intake commit) waits milliseconds, not seconds.
BATCH = 200


async def prune_once(runtime: Runtime) -> int:
    """One pass; returns how many executions were deleted."""
    settings = runtime.settings
    keep = settings.retention_max_executions
    days = settings.retention_days
    if keep is None and days is None:
        return 0
    too_old = utcnow() - timedelta(days=days) if days is not None else None
    store = runtime.store
    deleted = 0
    for tenant_id in await store.list_tenant_ids():
        horizon = too_old
        if keep is not None:
            beyond_keep = await store.keep_horizon(tenant_id, keep)
            horizon = _later(horizon, beyond_keep)
        while horizon is not None:
            started = time.monotonic()
            n = await store.prune_executions(tenant_id, finished_before=horizon, limit=BATCH)
            deleted += n
            if n < BATCH:
                break
            await asyncio.sleep(time.monotonic() - started)
    if deleted:
        EXECUTIONS_PRUNED.inc(deleted)
        _log.info("executions_pruned", count=deleted)
        await store.compact()
    return deleted


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


async def run_retention(runtime: Runtime, stop: asyncio.Event) -> None:
    await run_every(
        runtime.settings.retention_interval_s, stop, lambda: prune_once(runtime), name="retention"
    )
