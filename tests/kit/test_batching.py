"""LoopBatch: one ``send`` per event-loop iteration, each caller its own outcome."""

from __future__ import annotations

import asyncio

import pytest

from ipaas.kit.batching import LoopBatch


class Recorder:
    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def send(self, items: list[int]) -> list[BaseException | int]:
        self.calls.append(list(items))
        await self.release.wait()
        return [ValueError(f"odd {n}") if n % 2 else n * 10 for n in items]


async def test_one_send_per_iteration_and_each_caller_gets_its_own_outcome() -> None:
    recorder = Recorder()
    batch: LoopBatch[int, int] = LoopBatch(recorder.send)
    first = await asyncio.gather(*(batch.submit(n) for n in range(4)), return_exceptions=True)
    assert recorder.calls == [[0, 1, 2, 3]]
    assert first[0] == 0
    assert first[2] == 20
    assert [str(r) for r in first[1::2]] == ["odd 1", "odd 3"]
    assert await batch.submit(8) == 80  # a later iteration: a send of its own
    assert recorder.calls == [[0, 1, 2, 3], [8]]


async def test_an_error_of_send_itself_reaches_every_caller() -> None:
    async def broken(items: list[int]) -> list[BaseException | int]:
        raise ConnectionError("down")

    batch: LoopBatch[int, int] = LoopBatch(broken)
    results = await asyncio.gather(batch.submit(1), batch.submit(2), return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError, ConnectionError]


async def test_a_cancelled_caller_still_has_its_item_sent_and_drain_waits() -> None:
    recorder = Recorder()
    recorder.release.clear()
    batch: LoopBatch[int, int] = LoopBatch(recorder.send)
    caller = asyncio.ensure_future(batch.submit(4))
    for _ in range(10):  # a few loop iterations: submitted, flushed, the send started
        await asyncio.sleep(0)
    assert recorder.calls == [[4]]  # and waits for release
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    drained = asyncio.ensure_future(batch.drain())
    await asyncio.sleep(0.01)
    assert not drained.done()  # the send is still in flight
    recorder.release.set()
    await asyncio.wait_for(drained, 1.0)
    queued = asyncio.ensure_future(batch.submit(6))
    await asyncio.sleep(0)
    await batch.drain()  # sends what is queued, then waits for it
    assert recorder.calls == [[4], [6]]
    assert await queued == 60
