"""Queued-execution counts for the intake's depth limits, without a query per webhook.

A count (of all queued executions, or of one tenant's) is read from the store and then
trusted for ``ttl_s``; this process's own accepts are added to it at once. So within one
``ttl_s`` a limit can be passed by what *other* API processes accepted meanwhile, and a
webhook can be refused although workers have claimed executions since the count (it is
then a 503 with ``Retry-After``, never a loss). Concurrent misses share one query.
"""

from __future__ import annotations

import asyncio
import time

from ipaas.stores.base import Store

MAX_ENTRIES = 10_000


class QueueDepth:
    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        #: ``tenant_id`` (``None``: all tenants) -> (trusted until, count).
        self._counts: dict[str | None, tuple[float, int]] = {}
        self._pending: dict[str | None, asyncio.Future[int]] = {}

    async def count(self, store: Store, tenant_id: str | None) -> int:
        hit = self._counts.get(tenant_id)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        pending = self._pending.get(tenant_id)
        if pending is None:
            pending = asyncio.ensure_future(store.count_queued(tenant_id))
            self._pending[tenant_id] = pending
            pending.add_done_callback(lambda done: self._counted(tenant_id, done))
        return await asyncio.shield(pending)

    def _counted(self, tenant_id: str | None, done: asyncio.Future[int]) -> None:
        self._pending.pop(tenant_id, None)
        if done.cancelled() or done.exception() is not None or self.ttl_s <= 0:
            return
        if len(self._counts) >= MAX_ENTRIES:
            self._counts.clear()
        self._counts[tenant_id] = (time.monotonic() + self.ttl_s, done.result())

    def added(self, tenant_id: str) -> None:
        """One execution of ``tenant_id`` was queued here."""
        for key in (None, tenant_id):
            hit = self._counts.get(key)
            if hit is not None:
                self._counts[key] = (hit[0], hit[1] + 1)

    def removed(self, tenant_id: str, count: int) -> None:
        """``count`` queued executions of ``tenant_id`` left the queue here (cancelled)."""
        for key in (None, tenant_id):
            hit = self._counts.get(key)
            if hit is not None:
                self._counts[key] = (hit[0], max(0, hit[1] - count))
