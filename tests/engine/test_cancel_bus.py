"""The cancel bus: direct in embedded mode, Redis pub/sub between processes when scaled out."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from ipaas.config import Settings
from ipaas.engine.cancel_redis import RedisCancelBus
from ipaas.engine.cancellation import LocalCancelBus, StopReason, create_cancel_bus
from ipaas.runtime import Runtime
from ipaas.stores import MemoryStore

REDIS_URL = os.environ.get("IPAAS_TEST_REDIS_URL")

needs_redis = [
    pytest.mark.redis,
    pytest.mark.skipif(not REDIS_URL, reason="IPAAS_TEST_REDIS_URL is not set"),
]

BusMaker = Callable[..., RedisCancelBus]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_local_bus_calls_back_directly() -> None:
    bus = LocalCancelBus()
    seen: list[str] = []
    await bus.publish("ex_before")  # nobody subscribed yet: dropped, no error
    await bus.start(seen.append)
    await bus.publish("ex_1")
    assert seen == ["ex_1"]  # synchronously, before publish returned
    await bus.stop()
    await bus.publish("ex_after")
    assert seen == ["ex_1"]


def test_the_bus_follows_the_redis_url() -> None:
    assert isinstance(create_cancel_bus(None), LocalCancelBus)
    assert isinstance(create_cancel_bus("memory://"), LocalCancelBus)
    assert isinstance(create_cancel_bus("redis://127.0.0.1:1/0"), RedisCancelBus)


async def test_embedded_runtime_cancels_its_own_task_through_the_bus(settings: Settings) -> None:
    runtime = Runtime.build(settings, store=MemoryStore())
    await runtime.startup()
    try:
        task: asyncio.Task[object] = asyncio.create_task(asyncio.sleep(30))
        runtime.cancels.register("ex_1", task)
        await runtime.cancel_bus.publish("ex_1")
        assert runtime.cancels.reason("ex_1") is StopReason.cancelled
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await runtime.shutdown()


async def test_a_bus_against_a_closed_port_starts_and_publishes_without_raising() -> None:
    bus = RedisCancelBus(
        f"redis://127.0.0.1:{closed_port()}/0", connect_timeout_s=0.5, retry_s=0.05
    )
    seen: list[str] = []
    await bus.start(seen.append)
    assert not bus.subscribed.is_set()
    # Redis unreachable: the execution still stops if it runs here; the heartbeat does the rest.
    await bus.publish("ex_1")
    assert seen == ["ex_1"]
    await asyncio.sleep(0.2)  # a few retries in the background, none of them fatal
    await bus.stop()


@pytest.fixture
async def make_bus() -> AsyncIterator[BusMaker]:
    """Started-on-demand RedisCancelBuses on a channel of this test's own; stopped afterwards."""
    assert REDIS_URL is not None
    channel = f"ipaas-test:cancel:{uuid.uuid4().hex}"
    buses: list[RedisCancelBus] = []

    def make(**options: object) -> RedisCancelBus:
        bus = RedisCancelBus(REDIS_URL, channel=channel, **options)  # type: ignore[arg-type]
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        await bus.stop()


async def _received(seen: list[str], count: int, timeout_s: float = 2.0) -> list[str]:
    async with asyncio.timeout(timeout_s):
        while len(seen) < count:
            await asyncio.sleep(0.005)
    return seen


class TestRedisBus:
    pytestmark = needs_redis

    async def test_publish_reaches_every_subscriber(self, make_bus: BusMaker) -> None:
        a_seen: list[str] = []
        b_seen: list[str] = []
        a, b = make_bus(), make_bus()
        await a.start(a_seen.append)
        await b.start(b_seen.append)
        assert a.subscribed.is_set()
        assert b.subscribed.is_set()
        await a.publish("ex_1")
        assert await _received(a_seen, 1) == ["ex_1"]
        assert await _received(b_seen, 1) == ["ex_1"]

    async def test_a_cancel_in_one_runtime_stops_the_task_in_another(
        self, settings: Settings, make_bus: BusMaker
    ) -> None:
        api = Runtime.build(settings, store=MemoryStore(), cancel_bus=make_bus())
        worker = Runtime.build(settings, store=MemoryStore(), cancel_bus=make_bus())
        await api.startup()
        await worker.startup()
        try:
            task: asyncio.Task[object] = asyncio.create_task(asyncio.sleep(30))
            worker.cancels.register("ex_1", task)
            started = asyncio.get_running_loop().time()
            await api.cancel_bus.publish("ex_1")
            with pytest.raises(asyncio.CancelledError):
                async with asyncio.timeout(2):
                    await task
            assert asyncio.get_running_loop().time() - started < 0.1
            assert worker.cancels.reason("ex_1") is StopReason.cancelled
            # Where the execution does not run, the message is a no-op.
            assert api.cancels.running() == []
        finally:
            await api.shutdown()
            await worker.shutdown()

    async def test_the_subscription_comes_back_after_the_connection_drops(
        self, make_bus: BusMaker
    ) -> None:
        assert REDIS_URL is not None
        name = f"ipaas-test-{uuid.uuid4().hex[:12]}"
        seen: list[str] = []
        bus = make_bus(retry_s=0.05, client_name=name)
        await bus.start(seen.append)
        assert bus.subscribed.is_set()
        async with Redis.from_url(REDIS_URL) as admin:
            clients = [c for c in await admin.client_list() if c.get("name") == name]
            assert clients
            for client in clients:
                await admin.client_kill_filter(_id=client["id"])
            # Re-subscribed on a new connection; a publish reaches it again.
            old_ids = {client["id"] for client in clients}
            async with asyncio.timeout(5):
                while True:
                    ours = [c for c in await admin.client_list() if c.get("name") == name]
                    numsub = dict(await admin.pubsub_numsub(bus.channel))
                    if any(c["id"] not in old_ids for c in ours) and numsub.get(
                        bus.channel.encode()
                    ):
                        break
                    await asyncio.sleep(0.02)
        publisher = make_bus()
        await publisher.publish("ex_again")
        assert await _received(seen, 1) == ["ex_again"]
