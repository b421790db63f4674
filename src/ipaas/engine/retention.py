"""Execution retention: finished executions past the age or count limit are deleted.

Each pass walks the tenants. For each it fixes a horizon once (the later of the age limit
and the finish of the ``retention_max_executions``-th newest execution) and deletes what
finished before it, oldest first, in batches of ``BATCH``: one short transaction each, so
intake and claims interleave, and a pause as long as the batch took after each, so a pass
takes at most about half of the writer's time however much it has to delete. Then the store
gives the space back (SQLite: incremental vacuum and a WAL checkpoint). Queued and running
executions are never deleted. Every worker and the scheduler run it; concurrent passes
delete disjoint or already-deleted rows, which is harmless.

Each pass also deletes API tokens a day after they expired or were revoked, whatever the
execution limits: every log-in makes a session token, so a script that logs in for each
call left a row a call for good, and the token list (which showed the expired ones) grew
with them.
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
#: How long a token stays after it expired or was revoked (it authenticates nothing then).
TOKENS_KEPT_AFTER_END = timedelta(days=1)


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


async def prune_tokens_once(runtime: Runtime) -> int:
    """Delete the tokens that ended over ``TOKENS_KEPT_AFTER_END`` ago; returns how many."""
    ended_before = utcnow() - TOKENS_KEPT_AFTER_END
    deleted = 0
    while True:
        n = await runtime.store.prune_tokens(ended_before=ended_before, limit=BATCH)
        deleted += n
        if n < BATCH:
            break
    if deleted:
        _log.info("tokens_pruned", count=deleted)
    return deleted


async def retention_pass(runtime: Runtime) -> None:
    await prune_tokens_once(runtime)
    await prune_once(runtime)


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


async def run_retention(runtime: Runtime, stop: asyncio.Event) -> None:
    await run_every(
        runtime.settings.retention_interval_s,
        stop,
        lambda: retention_pass(runtime),
        name="retention",
    )
