"""Crash recovery: expired leases go back to the queue, overdue executions time out."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from ipaas.kit.clock import utcnow
from ipaas.runtime import Runtime
from ipaas.stores.base import Reaped

_log = structlog.get_logger(__name__)


async def reap_once(runtime: Runtime) -> Reaped:
    reaped = await runtime.store.reap(now=utcnow())
    for execution_id in reaped.requeued:
        await runtime.queue.enqueue(execution_id)
    if reaped.requeued or reaped.timed_out:
        _log.info("reaped", requeued=len(reaped.requeued), timed_out=len(reaped.timed_out))
    return reaped


async def run_reaper(runtime: Runtime, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await reap_once(runtime)
        except Exception:  # a failing database must not kill the loop; next pass retries
            _log.exception("reaper_failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), runtime.settings.reaper_interval_s)
