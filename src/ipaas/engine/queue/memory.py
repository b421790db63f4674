"""Embedded queue: taskiq's ``InMemoryBroker`` delivers into a bounded in-process buffer."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from taskiq import InMemoryBroker

_log = structlog.get_logger(__name__)

DELIVER_TASK = "ipaas.deliver"


class MemoryQueue:
    def __init__(self, buffer_size: int) -> None:
        self._buffer: asyncio.Queue[str] = asyncio.Queue(maxsize=buffer_size)
        self.dropped = 0
        # await_inplace: the kick hands the id straight to the buffer, no extra task per job.
        self._broker = InMemoryBroker(await_inplace=True, propagate_exceptions=True)

        async def accept(execution_id: str) -> None:
            try:
                self._buffer.put_nowait(execution_id)
            except asyncio.QueueFull:
                # Not lost: it is queued in the store and the next store poll claims it.
                self.dropped += 1

        self._deliver: Any = self._broker.register_task(accept, task_name=DELIVER_TASK)

    async def startup(self) -> None:
        await self._broker.startup()

    async def shutdown(self) -> None:
        await self._broker.shutdown()

    async def ping(self) -> bool:
        return True

    async def enqueue(self, execution_id: str) -> None:
        if self._buffer.full():
            # It would be dropped on delivery: spare the broker's round (a burst beyond the
            # buffer is most of a storm's webhooks).
            self.dropped += 1
            return
        await self._deliver.kiq(execution_id)

    async def receive(self, max_items: int, timeout_s: float) -> list[str]:
        if self._buffer.empty():
            try:
                first = await asyncio.wait_for(self._buffer.get(), timeout_s)
            except TimeoutError:
                return []
            items = [first]
        else:
            items = []
        while len(items) < max_items and not self._buffer.empty():
            items.append(self._buffer.get_nowait())
        return items

    def depth(self) -> int:
        return self._buffer.qsize()
