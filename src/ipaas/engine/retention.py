"""Execution retention: finished executions past the age or count limit are deleted.

Each pass walks the tenants and deletes in batches of ``BATCH`` (one short transaction
each, so intake and claims interleave), then lets the store give the space back (SQLite:
incremental vacuum and a WAL checkpoint). Queued and running executions are never
deleted. Every worker and the scheduler run it; concurrent passes delete disjoint or
already-deleted rows, which is harmless.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog

from ipaas.kit.clock import utcnow
from ipaas.kit.periodic import run_every
from ipaas.observability.metrics import EXECUTIONS_PRUNED
from ipaas.runtime import Runtime

_log = structlog.get_logger(__name__)

#: Executions one transaction deletes: small enough that a writer waiting behind it (an
#: intake commit) waits milliseconds, not seconds.
BATCH = 200
#: Batches one pass deletes at most; the rest waits for the next pass.
MAX_BATCHES_PER_PASS = 500


async def prune_once(runtime: Runtime) -> int:
    """One pass; returns how many executions were deleted."""
    settings = runtime.settings
    keep = settings.retention_max_executions
    days = settings.retention_days
    if keep is None and days is None:
        return 0
    before = utcnow() - timedelta(days=days) if days is not None else None
    store = runtime.store
    deleted = batches = 0
    for tenant_id in await store.list_tenant_ids():
        while batches < MAX_BATCHES_PER_PASS:
            batches += 1
            n = await store.prune_executions(
                tenant_id, finished_before=before, keep=keep, limit=BATCH
            )
            deleted += n
            if n < BATCH:
                break
            await asyncio.sleep(0)  # let the event loop's other work in between batches
    if deleted:
        EXECUTIONS_PRUNED.inc(deleted)
        _log.info("executions_pruned", count=deleted)
        await store.compact()
    return deleted


async def run_retention(runtime: Runtime, stop: asyncio.Event) -> None:
    await run_every(
        runtime.settings.retention_interval_s, stop, lambda: prune_once(runtime), name="retention"
    )
