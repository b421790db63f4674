"""What only the Redis Streams queue has: a consumer group shared by many workers, a server
that can be down, and entries a dead consumer read but never acknowledged."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from ipaas.config import Settings
from ipaas.engine.queue import MemoryQueue, create_queue
from ipaas.engine.queue.redis import RedisQueue

REDIS_URL = os.environ.get("IPAAS_TEST_REDIS_URL")

needs_redis = [
    pytest.mark.redis,
    pytest.mark.skipif(not REDIS_URL, reason="IPAAS_TEST_REDIS_URL is not set"),
]

QueueMaker = Callable[..., RedisQueue]


@pytest.fixture
async def make_queue() -> AsyncIterator[QueueMaker]:
    """Started RedisQueues on one stream and group of this test's own, deleted afterwards."""
    assert REDIS_URL is not None
    suffix = uuid.uuid4().hex
    stream, group = f"ipaas-test:{suffix}", f"ipaas-test-{suffix}"
    queues: list[RedisQueue] = []

    def make(**options: object) -> RedisQueue:
        q = RedisQueue(REDIS_URL, stream=stream, group=group, **options)  # type: ignore[arg-type]
        queues.append(q)
        return q

    yield make
    for q in queues:
        await q.shutdown()
    async with Redis.from_url(REDIS_URL) as redis:
        await redis.delete(stream)


async def started(q: RedisQueue) -> RedisQueue:
    await q.startup()
    return q


class TestSharedGroup:
    pytestmark = needs_redis

    async def test_two_consumers_never_receive_the_same_id(self, make_queue: QueueMaker) -> None:
        a = await started(make_queue(consumer="a"))
        b = await started(make_queue(consumer="b"))
        sent = [f"ex_{n}" for n in range(300)]
        got: dict[str, list[str]] = {"a": [], "b": []}

        async def drain(name: str, q: RedisQueue) -> None:
            while len(got["a"]) + len(got["b"]) < len(sent):
                got[name] += await q.receive(7, 0.05)

        async def send() -> None:
            for execution_id in sent:
                await a.enqueue(execution_id)

        async with asyncio.timeout(10):
            await asyncio.gather(drain("a", a), drain("b", b), send())
        assert not set(got["a"]) & set(got["b"])
        assert sorted(got["a"] + got["b"]) == sorted(sent)
        # Both took part: the group really shared the work.
        assert got["a"]
        assert got["b"]

    async def test_an_entry_a_dead_consumer_never_acked_is_taken_over(
        self, make_queue: QueueMaker
    ) -> None:
        producer = await started(make_queue(consumer="producer"))
        await producer.enqueue("ex_orphan")
        # A worker reads the entry and is killed before acknowledging it.
        async with Redis.from_url(str(REDIS_URL)) as redis:
            read = await redis.xreadgroup(
                producer.group, "killed", {producer.stream: ">"}, count=10
            )
        assert len(read[0][1]) == 1
        assert await producer.receive(10, 0) == []  # pending with its reader, not new

        survivor = await started(make_queue(consumer="survivor", reclaim_idle_s=0.05))
        await asyncio.sleep(0.1)
        assert await survivor.receive(10, 0) == ["ex_orphan"]
        assert await survivor.receive(10, 0) == []  # taken over and acknowledged: once

    async def test_consumers_of_killed_workers_are_pruned_once_idle_and_empty(
        self, make_queue: QueueMaker
    ) -> None:
        producer = await started(make_queue(consumer="producer"))
        await producer.enqueue("ex_held")
        async with Redis.from_url(str(REDIS_URL)) as redis:
            # Two SIGKILLed workers: one read nothing, one died holding an unacked entry.
            await redis.xreadgroup(producer.group, "killed-idle", {producer.stream: ">"}, count=1)
            await redis.xgroup_createconsumer(producer.stream, producer.group, "killed-empty")
            await asyncio.sleep(0.1)
            survivor = await started(
                make_queue(consumer="survivor", reclaim_idle_s=10, prune_idle_s=0.05)
            )
            assert await survivor.receive(10, 0) == []
            names = {
                c["name"] for c in await redis.xinfo_consumers(survivor.stream, survivor.group)
            }
        # The empty one is gone; the one holding an entry stays until XAUTOCLAIM takes it.
        assert b"killed-empty" not in names
        assert b"killed-idle" in names

    async def test_enqueue_writes_what_taskiq_itself_would(self, make_queue: QueueMaker) -> None:
        q = await started(make_queue())
        await q.enqueue("ex_ours")
        await q._deliver.kiq("ex_taskiq")  # the broker's own send path
        async with Redis.from_url(str(REDIS_URL)) as redis:
            entries = await redis.xrange(q.stream)
        ours, theirs = (q._broker.formatter.loads(fields[b"data"]) for _, fields in entries)
        assert (ours.task_name, ours.args) == (theirs.task_name, ["ex_ours"])
        assert theirs.args == ["ex_taskiq"]
        assert set(ours.model_dump()) == set(theirs.model_dump())
        assert await q.receive(10, 0) == ["ex_ours", "ex_taskiq"]

    async def test_a_lost_group_is_recreated(self, make_queue: QueueMaker) -> None:
        q = await started(make_queue())
        # Redis restarted without persistence: the stream and its group are gone.
        async with Redis.from_url(str(REDIS_URL)) as redis:
            await redis.delete(q.stream)
        assert await q.receive(10, 0) == []
        await q.enqueue("ex_after_restart")
        assert await q.receive(10, 1.0) == ["ex_after_restart"]

    async def test_a_cancelled_receive_leaves_the_queue_usable(
        self, make_queue: QueueMaker
    ) -> None:
        q = await started(make_queue())
        waiting = asyncio.create_task(q.receive(10, 5.0))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await q.enqueue("ex_next")
        assert await q.receive(10, 1.0) == ["ex_next"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_an_unreachable_redis_is_reported_not_fatal() -> None:
    q = RedisQueue(f"redis://127.0.0.1:{closed_port()}/0", stream=f"ipaas-test:{uuid.uuid4().hex}")
    await q.startup()  # not fatal: the store holds the work until Redis is back
    try:
        assert await q.ping() is False
        with pytest.raises(RedisConnectionError):  # the worker logs it and polls the store
            await q.receive(10, 0)
    finally:
        await q.shutdown()


def test_create_queue_picks_the_adapter_by_url(settings: Settings) -> None:
    assert isinstance(create_queue(settings), MemoryQueue)
    for url in ("redis://127.0.0.1:6379/0", "rediss://cache.example:6380/1"):
        assert isinstance(create_queue(settings.model_copy(update={"redis_url": url})), RedisQueue)
    # Settings refuse it first (tests/test_cli.py); built without their checks, the queue
    # names the scheme, never the URL and its password.
    unchecked = settings.model_copy(update={"redis_url": "amqp://guest:hunter2@localhost"})
    with pytest.raises(ValueError, match="unsupported queue URL scheme 'amqp'") as refused:
        create_queue(unchecked)
    assert "hunter2" not in str(refused.value)
