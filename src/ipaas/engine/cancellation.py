"""Stopping a running execution: the reason travels with the cancellation."""

from __future__ import annotations

import asyncio
from enum import StrEnum


class StopReason(StrEnum):
    #: A user asked (``POST /api/executions/{id}/cancel``): finish as ``cancelled``.
    cancelled = "cancelled"
    #: ``IPAAS_EXECUTION_TIMEOUT_S`` ran out: finish as ``timed_out``.
    timed_out = "timed_out"
    #: The process is shutting down: give the execution back to the queue.
    shutdown = "shutdown"
    #: Another worker owns it now (our lease expired): walk away without writing.
    lease_lost = "lease_lost"


class CancelRegistry:
    """The executions running in this process, so a cancel reaches the task directly."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[object]] = {}
        self._reasons: dict[str, StopReason] = {}

    def register(self, execution_id: str, task: asyncio.Task[object]) -> None:
        self._tasks[execution_id] = task

    def unregister(self, execution_id: str) -> None:
        self._tasks.pop(execution_id, None)
        self._reasons.pop(execution_id, None)

    def running(self) -> list[str]:
        return list(self._tasks)

    def reason(self, execution_id: str) -> StopReason | None:
        return self._reasons.get(execution_id)

    def stop(self, execution_id: str, reason: StopReason) -> bool:
        """Cancel the task running ``execution_id`` here; False if it does not run here."""
        task = self._tasks.get(execution_id)
        if task is None or task.done():
            return False
        self._reasons.setdefault(execution_id, reason)
        task.cancel()
        return True
