"""The queue port. It carries execution ids only; the store holds the truth, so a lost or
duplicated message costs latency, never correctness (claiming is a compare-and-set)."""

from __future__ import annotations

from typing import Protocol


class JobQueue(Protocol):
    async def startup(self) -> None: ...

    async def shutdown(self) -> None: ...

    async def ping(self) -> bool: ...

    async def enqueue(self, execution_id: str) -> None:
        """Offer an id to the workers. Never blocks on a full buffer: the id stays queued
        in the store and a worker's store poll picks it up."""

    async def receive(self, max_items: int, timeout_s: float) -> list[str]:
        """Up to ``max_items`` ids; waits at most ``timeout_s`` for the first one."""
