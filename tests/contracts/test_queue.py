"""The JobQueue contract: every adapter (the in-memory broker, Redis Streams) passes these."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from ipaas.engine.queue import JobQueue, MemoryQueue
from ipaas.engine.queue.redis import RedisQueue

BUFFER = 5
REDIS_URL = os.environ.get("IPAAS_TEST_REDIS_URL")


def redis_queue(size: int) -> RedisQueue:
    # A stream and group of its own per test; the buffer is Redis itself, so size is unused.
    assert REDIS_URL is not None
    suffix = uuid.uuid4().hex
    return RedisQueue(REDIS_URL, stream=f"ipaas-test:{suffix}", group=f"ipaas-test-{suffix}")


QueueFactory = Callable[[int], JobQueue]
QUEUES = [
    pytest.param(lambda size: MemoryQueue(size), id="memory"),
    pytest.param(
        redis_queue,
        id="redis",
        marks=[
            pytest.mark.redis,
            pytest.mark.skipif(not REDIS_URL, reason="IPAAS_TEST_REDIS_URL is not set"),
        ],
    ),
]


@pytest.fixture(params=QUEUES)
async def queue(request: pytest.FixtureRequest) -> AsyncIterator[JobQueue]:
    factory: QueueFactory = request.param
    q = factory(BUFFER)
    await q.startup()
    yield q
    await q.shutdown()
    if isinstance(q, RedisQueue):  # the stream key holds the group too: leave nothing behind
        async with Redis.from_url(REDIS_URL) as redis:
            await redis.delete(q.stream)


async def test_ids_come_out_in_order(queue: JobQueue) -> None:
    for n in range(3):
        await queue.enqueue(f"ex_{n}")
    assert await queue.receive(10, 1.0) == ["ex_0", "ex_1", "ex_2"]


async def test_concurrent_enqueues_each_arrive_once_in_order(queue: JobQueue) -> None:
    # Redis pipelines the XADDs of one event-loop iteration (MAX_PIPELINE per pipeline);
    # the memory buffer holds BUFFER ids (beyond, work waits in the store).
    n = 600 if isinstance(queue, RedisQueue) else BUFFER
    await asyncio.gather(*(queue.enqueue(f"ex_{i}") for i in range(n)))
    received: list[str] = []
    while len(received) < n:
        batch = await queue.receive(250, 1.0)
        assert batch, f"only {len(received)} of {n} ids arrived"
        received += batch
    assert received == [f"ex_{i}" for i in range(n)]
    assert await queue.receive(10, 0) == []


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
