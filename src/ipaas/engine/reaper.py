"""Crash recovery: expired leases go back to the queue, overdue executions time out."""

from __future__ import annotations

import asyncio

import structlog

from ipaas.kit.clock import utcnow
from ipaas.kit.periodic import run_every
from ipaas.observability.metrics import REAPER_REQUEUED, REAPER_TIMED_OUT
from ipaas.runtime import Runtime
from ipaas.stores.base import Reaped

_log = structlog.get_logger(__name__)


async def reap_once(runtime: Runtime) -> Reaped:
    reaped = await runtime.store.reap(now=utcnow())
    REAPER_REQUEUED.inc(len(reaped.requeued))
    REAPER_TIMED_OUT.inc(len(reaped.timed_out))
    try:
        for execution_id in reaped.requeued:
            await runtime.queue.enqueue(execution_id)
    except Exception as exc:  # queued in the store: workers claim them from there
        _log.warning("reaper_enqueue_failed", error=repr(exc))
    if reaped.requeued or reaped.timed_out:
        _log.info("reaped", requeued=len(reaped.requeued), timed_out=len(reaped.timed_out))
    return reaped


async def run_reaper(runtime: Runtime, stop: asyncio.Event) -> None:
    await run_every(
        runtime.settings.reaper_interval_s, stop, lambda: reap_once(runtime), name="reaper"
    )
