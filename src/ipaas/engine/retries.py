"""When a failed step runs again: backoff with full jitter, ``Retry-After``, the attempt budget.

A waiting retry lives in the store, not in a sleeping worker: the executor hands the
execution back as ``queued`` with ``next_attempt_at`` (``Store.defer_execution``), and no
worker claims it before then. ``enqueue_due_retries`` (once a second in every worker
process) makes the due ones ready (``Store.take_due_retries``: out of the waiting rows, into
the queue's index that claims read) and puts them on the queue, so a retry runs about a
second after it is due at most, whether the queue is busy or idle.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
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
