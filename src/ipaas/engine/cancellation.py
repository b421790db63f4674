"""Stopping a running execution: the reason travels with the cancellation, and a cancel
reaches the process that runs the execution over a ``CancelBus``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from enum import StrEnum
from typing import Protocol


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


#: Called with the id of an execution a user cancelled, in every subscribed process.
OnCancel = Callable[[str], None]


class CancelBus(Protocol):
    """Carries "cancel this execution" to whichever process runs it.

    The store's ``cancel_requested`` flag stays the truth (a worker's heartbeat also polls it);
    the bus is the fast path. A message for an execution that does not run in a process is a
    no-op there.
    """

    async def publish(self, execution_id: str) -> None:
        """Tell every subscribed process; never raises for an unreachable transport."""
        ...

    async def start(self, on_cancel: OnCancel) -> None:
        """Subscribe; never raises for an unreachable transport (it retries in the background)."""
        ...

    async def stop(self) -> None: ...


class LocalCancelBus:
    """Embedded mode: one process, so publishing calls the subscriber directly."""

    def __init__(self) -> None:
        self._on_cancel: OnCancel | None = None

    async def publish(self, execution_id: str) -> None:
        if self._on_cancel is not None:
            self._on_cancel(execution_id)

    async def start(self, on_cancel: OnCancel) -> None:
        self._on_cancel = on_cancel

    async def stop(self) -> None:
        self._on_cancel = None


def create_cancel_bus(redis_url: str | None) -> CancelBus:
    """Redis pub/sub for a ``redis://`` / ``rediss://`` URL (scale-out), else the local bus."""
    if redis_url and redis_url.startswith(("redis://", "rediss://")):
        # Imported here so embedded mode never loads the Redis client.
        from ipaas.engine.cancel_redis import RedisCancelBus

        return RedisCancelBus(redis_url)
    return LocalCancelBus()
