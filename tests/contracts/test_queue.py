"""The JobQueue contract: every adapter (memory now; Redis with scale-out) passes these."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from ipaas.engine.queue import JobQueue
from ipaas.engine.queue.memory import MemoryQueue

BUFFER = 5

QueueFactory = Callable[[int], JobQueue]
QUEUES = [pytest.param(lambda size: MemoryQueue(size), id="memory")]


@pytest.fixture(params=QUEUES)
async def queue(request: pytest.FixtureRequest) -> AsyncIterator[JobQueue]:
    factory: QueueFactory = request.param
    q = factory(BUFFER)
    await q.startup()
    yield q
    await q.shutdown()


async def test_ids_come_out_in_order(queue: JobQueue) -> None:
    for n in range(3):
        await queue.enqueue(f"ex_{n}")
    assert await queue.receive(10, 1.0) == ["ex_0", "ex_1", "ex_2"]


async def test_receive_respects_max_items(queue: JobQueue) -> None:
    for n in range(4):
        await queue.enqueue(f"ex_{n}")
    assert await queue.receive(3, 1.0) == ["ex_0", "ex_1", "ex_2"]
    assert await queue.receive(3, 1.0) == ["ex_3"]


async def test_empty_receive_waits_at_most_the_timeout(queue: JobQueue) -> None:
    started = time.monotonic()
    assert await queue.receive(10, 0.1) == []
    assert 0.05 <= time.monotonic() - started < 1.0
    assert await queue.receive(10, 0) == []


async def test_receive_wakes_when_an_id_arrives(queue: JobQueue) -> None:
    waiting = asyncio.create_task(queue.receive(10, 5.0))
    await asyncio.sleep(0)  # let the receiver start waiting before the id arrives
    started = time.monotonic()
    await queue.enqueue("ex_late")
    assert await waiting == ["ex_late"]
    assert time.monotonic() - started < 1.0


async def test_a_full_buffer_never_blocks_or_fails_enqueue(queue: JobQueue) -> None:
    # Beyond the buffer the work stays queued in the store; the queue just carries less.
    async with asyncio.timeout(2):
        for n in range(BUFFER * 4):
            await queue.enqueue(f"ex_{n}")
    received = await queue.receive(100, 0.5)
    assert 1 <= len(received) <= BUFFER * 4
    assert received == sorted(received, key=lambda i: int(i.split("_")[1]))


async def test_ping(queue: JobQueue) -> None:
    assert await queue.ping() is True
