"""Queue -> claim -> executor, with at most ``concurrency`` executions at once.

Work beyond the queue's buffer is not dropped: it stays ``queued`` in the store, and the
worker claims it from there whenever the queue is empty and a slot is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from datetime import datetime, timedelta

import structlog

from ipaas.engine.alerts import alert_pass
from ipaas.engine.cancellation import StopReason
from ipaas.engine.clock_check import run_clock_check
from ipaas.engine.executor import Executor
from ipaas.engine.queue_vacuum import run_queue_vacuum
from ipaas.engine.reaper import run_reaper
from ipaas.engine.retention import run_retention
from ipaas.engine.retries import (
    DUE_RETRY_BATCH,
    DUE_RETRY_INTERVAL_S,
    DueWakeups,
    enqueue_due_retries,
)
from ipaas.engine.scheduler import run_scheduler
from ipaas.errors import StoreUnavailable
from ipaas.executions.models import Execution
from ipaas.kit.clock import utcnow
from ipaas.kit.ids import new_id
from ipaas.kit.periodic import run_every
from ipaas.observability import tracing
from ipaas.observability.metrics import EXECUTIONS_RUNNING
from ipaas.runtime import Runtime

_log = structlog.get_logger(__name__)

#: While everything queued is at its tenant's cap: how soon the store is asked again if none
#: of our executions ends first (another tenant's new work waits at most this long; 5 ms:
#: make bench-fairness's ratio went from ~3.1x at 20 ms to 2.4x, docs/benchmarks.md).
CAPPED_RECHECK_S = 0.005


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{new_id('w')[-6:]}"


def _traced_claims(claimed: list[Execution], start_ns: int) -> None:
    if tracing.enabled():
        end_ns = time.time_ns()
        for execution in claimed:
            tracing.record(
                "claim",
                execution.trace_context,
                start_ns,
                end_ns,
                **{tracing.EXECUTION_ID: execution.id},
            )


class Worker:
    def __init__(self, runtime: Runtime, *, concurrency: int | None = None) -> None:
        self.runtime = runtime
        self.concurrency = concurrency or runtime.settings.workers
        self.owner = worker_name()
        #: Waits this process made resume when they end (run by ``start``'s due pass).
        self.wakeups = DueWakeups(lambda: enqueue_due_retries(runtime))
        self._wake_waits = False
        self.executor = Executor(
            runtime,
            self.owner,
            on_settled=self._settled,
            on_claimed=self._claimed_on_finish,
            on_waiting=self._waiting,
        )
        self._tasks: dict[str, asyncio.Task[object]] = {}
        #: Executions whose outcome is decided and being written: their slot is free.
        self._settling: set[str] = set()
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._releases: set[asyncio.Future[bool]] = set()
        #: Executions whose slot a finish gave to the execution it claimed in their place.
        self._replaced: set[str] = set()
        #: Outages are logged when they start and end, not on every poll.
        self._queue_down = False
        self._store_down = False
        #: Claim from the store (fair across tenants) before reading the queue.
        self._prefer_store = False
        #: The last claim from the store got fewer executions than it asked for.
        self._store_short = False

    @property
    def running(self) -> int:
        """Executions holding a slot: claimed, and not yet settled."""
        return len(self._tasks) - len(self._settling)

    def _settled(self, execution_id: str) -> None:
        """The executor's word that the execution's outcome is decided and its write handed
        over (where the store applies writes in order: the next claim, applied after it,
        counts the tenant's running executions correctly) or done (elsewhere). Its slot
        goes to the next execution now, so claiming overlaps the rest of the write."""
        if execution_id in self._tasks and execution_id not in self._settling:
            self._settling.add(execution_id)
            if execution_id not in self._replaced:
                self._slot_freed.set()

    def _waiting(self, next_attempt_at: datetime) -> None:
        """An execution waits in the store until ``next_attempt_at``: where this process runs
        the due pass, it runs one then too."""
        if self._wake_waits:
            self.wakeups.wake_at(next_attempt_at)

    def _claimed_on_finish(self, finished_id: str, execution: Execution) -> None:
        """An execution the finish of ``finished_id`` claimed in its place: it takes that
        slot, so the feed loop is not woken for it (no slot came free). While stopping (a
        finish under way when it began) it goes back to the queue at once."""
        if self._stopping.is_set():
            release = asyncio.ensure_future(
                self.runtime.store.release_execution(execution.id, owner=self.owner)
            )
            self._releases.add(release)
            release.add_done_callback(self._releases.discard)
            return
        _traced_claims([execution], time.time_ns())
        self._replaced.add(finished_id)
        self._spawn(execution)

    async def start(self, *, reaper: bool = True) -> None:
        _log.info("worker_started", owner=self.owner, concurrency=self.concurrency)
        self._loops = [
            asyncio.create_task(self._feed(), name="worker-feed"),
            asyncio.create_task(self._heartbeat(), name="worker-heartbeat"),
            # Its leases are judged by other processes' clocks: said when it is apart.
            asyncio.create_task(run_clock_check(self.runtime, self._stopping), name="clock"),
        ]
        if reaper:
            # Every worker process also reaps and schedules: both are safe with many
            # processes (compare-and-set updates, one execution per tick by a unique key).
            self._loops.append(
                asyncio.create_task(run_reaper(self.runtime, self._stopping), name="reaper")
            )
            self._loops.append(
                asyncio.create_task(run_scheduler(self.runtime, self._stopping), name="scheduler")
            )
            self._loops.append(
                asyncio.create_task(run_retention(self.runtime, self._stopping), name="retention")
            )
            self._loops.append(
                asyncio.create_task(
                    run_queue_vacuum(self.runtime, self._stopping), name="queue-vacuum"
                )
            )
            self._loops.append(
                asyncio.create_task(
                    run_every(
                        DUE_RETRY_INTERVAL_S, self._stopping, self._retry_pass, name="retry_pass"
                    ),
                    name="retry-pass",
                )
            )
            self._wake_waits = True

    async def stop(self, grace_s: float | None = None) -> None:
        """Claim nothing more; let running executions finish within ``grace_s``, then hand
        the rest back to the queue (they resume on the next start)."""
        grace_s = self.runtime.settings.shutdown_grace_s if grace_s is None else grace_s
        self._stopping.set()
        self._wake_waits = False
        self.wakeups.close()
        self.executor.claim_on_finish = False
        self._slot_freed.set()
        feed = self._loops[0] if self._loops else None
        if feed is not None:
            feed.cancel()
            await asyncio.gather(feed, return_exceptions=True)
        tasks = list(self._tasks.values())
        if tasks:
            _log.info("worker_draining", running=len(tasks), grace_s=grace_s)
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for execution_id in list(self._tasks):
                self.runtime.cancels.stop(execution_id, StopReason.shutdown)
            if pending:
                await asyncio.wait(pending)
        # Claimed by a finish that was under way when stopping began: handed back at once.
        await asyncio.gather(*self._releases, return_exceptions=True)
        for loop in self._loops[1:]:
            loop.cancel()
        await asyncio.gather(*self._loops[1:], return_exceptions=True)
        self._loops = []

    async def _retry_pass(self) -> None:
        """Due retries onto the queue; this process's view of unhealthy circuits refreshed;
        failures' alerts created (``engine/alerts.py``)."""
        await enqueue_due_retries(self.runtime)
        await self.runtime.breaker.refresh()
        await alert_pass(self.runtime)

    # -- claiming ----------------------------------------------------------------------------
    async def _claim(self, execution_ids: list[str]) -> list[Execution]:
        settings = self.runtime.settings
        read = len(execution_ids)
        if read > 1 and self.executor.finishes_claim:
            # Finishes claim their tenant's next execution in their place (PostgreSQL:
            # ``Store.finish_and_claim_next``), so under load most ids read from the queue
            # belong to executions already taken from the store (the queue is an
            # accelerator: a job stays there after its row is claimed). One read drops
            # those, instead of a refused claim statement per id.
            queued = await self.runtime.store.queued_among(execution_ids)
            execution_ids = [eid for eid in execution_ids if eid in queued]
        now = utcnow()
        start_ns = time.time_ns()
        # Concurrent claims share one commit in the SQLite store's group commit.
        results = await asyncio.gather(
            *(
                self.runtime.store.claim_execution(
                    execution_id,
                    owner=self.owner,
                    now=now,
                    lease_until=now + timedelta(seconds=settings.lease_s),
                    timeout_s=settings.execution_timeout_s,
                    tenant_cap=settings.default_tenant_concurrency,
                )
                for execution_id in execution_ids
            ),
            return_exceptions=True,
        )
        claimed = [execution for execution in results if isinstance(execution, Execution)]
        failed = [result for result in results if isinstance(result, BaseException)]
        # The executions whose claim went through are ours to run even if another claim
        # failed (PostgreSQL: each is a statement of its own); dropping them would leave
        # them running with nobody to run them until their lease expires.
        if failed and not claimed:
            raise failed[0]
        _traced_claims(claimed, start_ns)
        # Ids refused: their tenant is at its cap (or another worker had them). The queue is
        # FIFO over every tenant, so another tenant's id may wait behind many more of those;
        # the feed loop claims fairly from the store first while that yields.
        if len(claimed) < read:
            self._prefer_store = True
            self._store_short = False  # ask the store at once
        else:
            self._prefer_store = False
        return claimed

    async def _claim_from_store(self, limit: int) -> list[Execution]:
        settings = self.runtime.settings
        now = utcnow()
        start_ns = time.time_ns()
        claimed = await self.runtime.store.claim_next(
            owner=self.owner,
            now=now,
            lease_until=now + timedelta(seconds=settings.lease_s),
            timeout_s=settings.execution_timeout_s,
            limit=limit,
            tenant_cap=settings.default_tenant_concurrency,
        )
        _traced_claims(claimed, start_ns)
        return claimed

    async def _receive(self, limit: int, wait_s: float) -> list[str]:
        """Ids from the queue; none while it is unreachable (the store still has every
        queued execution, and ``_feed`` claims from it)."""
        try:
            ids = await self.runtime.queue.receive(limit, wait_s)
        except Exception as exc:
            if not self._queue_down:
                _log.warning("queue_unreachable", error=repr(exc))
                self._queue_down = True
            if wait_s:
                await asyncio.sleep(wait_s)
            return []
        if self._queue_down:
            _log.info("queue_reachable")
            self._queue_down = False
        return ids

    async def _wait_freed(self, timeout_s: float) -> None:
        """Until one of our executions ends, or ``timeout_s``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._slot_freed.wait(), timeout_s)

    async def _wait_for_work(self, limit: int, wait_s: float) -> list[str]:
        """Ids from the queue, or none as soon as one of our executions ends.

        A tenant at its cap has its ids refused by ``claim_execution`` and its queued work
        waits in the store; the end of one of its executions is what makes room, so the
        store is asked again then rather than after up to a poll interval. A read cut short
        can leave an id unacknowledged in the Redis stream: a harmless duplicate later, the
        row itself being claimed from the store.
        """
        if not self._tasks:
            return await self._receive(limit, wait_s)
        receive = asyncio.ensure_future(self._receive(limit, wait_s))
        freed = asyncio.ensure_future(self._slot_freed.wait())
        try:
            await asyncio.wait((receive, freed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            freed.cancel()
            if not receive.done():
                receive.cancel()
            await asyncio.gather(receive, freed, return_exceptions=True)
        if receive.cancelled() or receive.exception() is not None:
            return []
        return receive.result()

    async def _feed(self) -> None:
        poll_s = self.runtime.settings.poll_interval_s
        while not self._stopping.is_set():
            free = self.concurrency - self.running
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                claimed = []
                if self._prefer_store:
                    if self._store_short and self._tasks and not self._slot_freed.is_set():
                        # The last store claim got less than it asked for, and none of our
                        # executions has settled since: the rest of what is queued belongs
                        # to tenants at their cap (or nothing is), and their room comes
                        # back when an execution settles. Asking again now, or reading the
                        # queue (a refused claim per id), would be a busy loop: look again
                        # then, or shortly.
                        await self._wait_freed(CAPPED_RECHECK_S)
                        free = self.concurrency - self.running
                    # Set by every execution that settles from here on: its tenant may be
                    # under its cap again, and its queued work only ``claim_next`` can see
                    # (see ``_wait_for_work``).
                    self._slot_freed.clear()
                    claimed = await self._claim_from_store(free)
                    self._store_short = len(claimed) < free
                    if not claimed and self._tasks:
                        continue
                    self._prefer_store = bool(claimed)
                else:
                    self._slot_freed.clear()
                if not claimed:
                    claimed = await self._claim(await self._receive(free, 0))
                if not claimed:
                    claimed = await self._claim_from_store(free)
                if not claimed:
                    claimed = await self._claim(await self._wait_for_work(free, poll_s))
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as exc:  # wait for the database; the reaper recovers
                if not self._store_down:
                    _log.warning("store_unreachable", reason=exc.reason)
                    self._store_down = True
                await asyncio.sleep(poll_s)
                continue
            except Exception:
                _log.exception("worker_claim_failed")
                await asyncio.sleep(poll_s)
                continue
            if self._store_down:
                _log.info("store_reachable")
                self._store_down = False
            for execution in claimed:
                self._spawn(execution)

    def _spawn(self, execution: Execution) -> None:
        task: asyncio.Task[object] = asyncio.create_task(self._run(execution))
        self._tasks[execution.id] = task
        self.runtime.cancels.register(execution.id, task)
        EXECUTIONS_RUNNING.inc()

    async def _run(self, execution: Execution) -> None:
        cancels = self.runtime.cancels
        loop = asyncio.get_running_loop()
        timer = None
        if execution.deadline_at is not None:
            remaining = (execution.deadline_at - utcnow()).total_seconds()
            timer = loop.call_later(
                max(remaining, 0), cancels.stop, execution.id, StopReason.timed_out
            )
        try:
            with tracing.continued(
                "execution",
                execution.trace_context,
                **{tracing.EXECUTION_ID: execution.id, "ipaas.attempt": execution.attempt},
            ) as span:
                status = await self.executor.execute(execution)
                if span is not None and status is not None:
                    span.set_attribute("ipaas.status", status.value)
        except StoreUnavailable:  # stopping it could not be recorded: the reaper will
            _log.warning("execution_abandoned", execution_id=execution.id)
        finally:
            if timer is not None:
                timer.cancel()
            cancels.unregister(execution.id)
            self._tasks.pop(execution.id, None)
            self._settling.discard(execution.id)
            EXECUTIONS_RUNNING.dec()
            if execution.id in self._replaced:
                self._replaced.discard(execution.id)
            else:
                self._slot_freed.set()

    # -- leases ------------------------------------------------------------------------------
    async def _heartbeat(self) -> None:
        interval = self.runtime.settings.lease_s / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self._renew()
            except StoreUnavailable:  # the feed loop logs the outage
                continue
            except Exception:
                _log.exception("heartbeat_failed")

    async def _renew(self) -> None:
        """Renew the leases of the executions running here. One not renewed was taken over
        (its lease ran out and the reaper handed it on) and is stopped; one whose outcome
        was written meanwhile simply ended: it was not renewed because it no longer runs.
        Stopping those too logged ``lease_lost`` for executions that had succeeded (a few
        in a 10-minute soak) and skipped their metrics."""
        ids = list(self._tasks)
        if not ids:
            return
        # Still renewed while its outcome is written: a write that waits out an outage
        # (``Executor._outlasting``) keeps its lease meanwhile.
        settling = self.executor.settling
        store = self.runtime.store
        lease_until = utcnow() + timedelta(seconds=self.runtime.settings.lease_s)
        renewed = await store.renew_leases(ids, owner=self.owner, lease_until=lease_until)
        for execution_id in set(ids) - renewed:
            if execution_id not in settling:
                self.runtime.cancels.stop(execution_id, StopReason.lease_lost)
        # Cancels requested through another process reach us here.
        for execution_id in await store.cancel_requested(list(renewed)):
            self.runtime.cancels.stop(execution_id, StopReason.cancelled)

    # -- tests and one-shot runs -----------------------------------------------------------
    async def run_until_empty(self) -> None:
        """Claim and run queued executions until none are left (arq's burst mode); waits
        that have come are made ready first, as the due pass does."""
        while True:
            await self.runtime.store.take_due_retries(now=utcnow(), limit=DUE_RETRY_BATCH)
            free = self.concurrency - len(self._tasks)
            claimed = await self._claim_from_store(free) if free > 0 else []
            for execution in claimed:
                self._spawn(execution)
            if not claimed and not self._tasks:
                return
            if not claimed or free <= len(claimed):
                await asyncio.wait(list(self._tasks.values()), return_when=asyncio.FIRST_COMPLETED)
