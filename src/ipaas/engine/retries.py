"""When a failed step runs again: backoff with full jitter, ``Retry-After``, the attempt budget.

A waiting retry lives in the store, not in a sleeping worker: the executor hands the
execution back as ``queued`` with ``next_attempt_at`` (``Store.defer_execution``), and no
worker claims it before then. ``enqueue_due_retries`` (once a second in every worker
process) makes the due ones ready (``Store.take_due_retries``: out of the waiting rows, into
the queue's index that claims read) and puts them on the queue, so a retry runs about a
second after it is due at most, whether the queue is busy or idle.

A wait the process made itself and that ends soon (``DueWakeups``: a retry's backoff, a
delay step of a few seconds) also gets a timer of its own, which runs that pass when the
wait ends: it resumes within milliseconds of its time, not up to a second later. The timer
is an accelerator, as the queue is: if the process dies, or the pass fails, the next
once-a-second pass of any process takes the execution.
"""

from __future__ import annotations

import asyncio
import heapq
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog

from ipaas.engine.connectors.base import ConnectorError, NotCalledError, RetryPolicy
from ipaas.kit.clock import utcnow

if TYPE_CHECKING:  # the runtime imports the engine, not the other way round
    from ipaas.runtime import Runtime

_log = structlog.get_logger(__name__)

#: Seconds between passes that make due retries ready and put them on the queue: the most a
#: due retry waits (claims read only ready rows).
DUE_RETRY_INTERVAL_S = 1.0
#: Due retries one pass takes; the rest wait for the next pass.
DUE_RETRY_BATCH = 500
#: Waits that end within this many seconds get a timer (``DueWakeups``); later ones are left
#: to the once-a-second pass, so a process does not hold timers for days-long delays.
WAKE_HORIZON_S = 600.0
#: The most timers a process holds; beyond, waits are left to the once-a-second pass.
MAX_WAKES = 10_000
#: A timer fires this long after the wait ends, so that the pass, which compares the
#: store's times with the wall clock, finds it due.
WAKE_SLACK_S = 0.002


def backoff_s(policy: RetryPolicy, retry: int, rand: Callable[[], float] = random.random) -> float:
    """Full jitter (AWS's "Exponential Backoff And Jitter"): a random delay between 0 and
    ``min(max_delay_s, initial_delay_s * 2 ** (retry - 1))`` before retry number ``retry``."""
    ceiling = min(policy.max_delay_s, policy.initial_delay_s * 2.0 ** (retry - 1))
    return ceiling * rand()


@dataclass(slots=True)
class RetryRules:
    """What one run of an execution needs to decide whether a failed step runs again."""

    #: Attempts each step already failed in this run of the execution (since its last
    #: ``started_at``: a manual retry starts a new budget). Waits of calls not made (circuit
    #: open, template share spent) do not count.
    made: Mapping[str, int]
    #: No attempt is scheduled at or after the execution's deadline: it would time out.
    deadline_at: datetime | None
    #: The most a remote's ``Retry-After`` may make us wait.
    max_retry_after_s: float
    rand: Callable[[], float] = field(default=random.random)

    def next_attempt_at(
        self, step_id: str, policy: RetryPolicy, error: ConnectorError, now: datetime
    ) -> datetime | None:
        """When the step runs again, or ``None`` when it will not (not retryable, out of
        attempts, or past the execution's deadline)."""
        if isinstance(error, NotCalledError):
            # The call was not made (circuit open, template share spent): waiting costs no
            # attempt.
            due = error.retry_at
        else:
            if not error.retryable:
                return None
            made = self.made.get(step_id, 0) + 1
            if made >= policy.max_attempts:
                return None
            delay = backoff_s(policy, made, self.rand)
            if error.retry_after_s is not None:
                delay = max(delay, min(error.retry_after_s, self.max_retry_after_s))
            due = now + timedelta(seconds=delay)
        if self.deadline_at is not None and due >= self.deadline_at:
            return None
        return due

    def attempts(self, step_id: str) -> int:
        """Attempts the step has made in this run, the one that just failed included."""
        return self.made.get(step_id, 0) + 1


async def enqueue_due_retries(runtime: Runtime) -> list[str]:
    """Put the executions whose retry is due on the queue (each taken by one process)."""
    ids = await runtime.store.take_due_retries(now=utcnow(), limit=DUE_RETRY_BATCH)
    for execution_id in ids:
        await runtime.queue.enqueue(execution_id)
    if ids:
        _log.info("retries_enqueued", count=len(ids))
    return ids


class DueWakeups:
    """Runs ``take`` (the due pass) when a wait this process made ends, instead of up to
    ``DUE_RETRY_INTERVAL_S`` later (module docstring). One timer, armed for the earliest
    end; passes never overlap (a wake during a pass runs one more after it)."""

    def __init__(self, take: Callable[[], Awaitable[object]]) -> None:
        self._take = take
        self._ends: list[float] = []  # a heap of loop times
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._closed = False

    def __len__(self) -> int:
        return len(self._ends)

    def wake_at(self, due: datetime) -> None:
        """Run the pass when ``due`` (the store's ``next_attempt_at``) comes."""
        delay = (due - utcnow()).total_seconds()
        if self._closed or delay > WAKE_HORIZON_S or len(self._ends) >= MAX_WAKES:
            return
        loop = asyncio.get_running_loop()
        at = loop.time() + max(0.0, delay) + WAKE_SLACK_S
        heapq.heappush(self._ends, at)
        if self._timer is None or at < self._timer.when():
            self._arm(loop)

    def close(self) -> None:
        """No more passes: the timer is cancelled, a pass under way is left to end."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._ends.clear()

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(self._ends[0], self._fire)

    def _fire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._ends and self._ends[0] <= now:
            heapq.heappop(self._ends)
        if self._task is None:
            self._task = loop.create_task(self._passes(), name="due-wakeup")
        else:
            self._again = True
        if self._ends:
            self._arm(loop)

    async def _passes(self) -> None:
        try:
            while not self._closed:
                self._again = False
                try:
                    await self._take()
                except Exception as exc:  # the once-a-second pass takes them then
                    _log.warning("due_wakeup_failed", error=repr(exc))
                if not self._again:
                    return
        finally:
            self._task = None
