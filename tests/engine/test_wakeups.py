"""``DueWakeups``: the due pass run when a wait this process made ends."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from ipaas.engine import retries
from ipaas.engine.retries import WAKE_HORIZON_S, DueWakeups
from ipaas.kit.clock import utcnow


class Passes:
    """A due pass that records when it ran; ``hold`` keeps a pass from ending."""

    def __init__(self) -> None:
        self.at: list[float] = []
        self.hold: asyncio.Event | None = None
        self.fail = False

    async def __call__(self) -> None:
        self.at.append(time.monotonic())
        if self.hold is not None:
            await self.hold.wait()
        if self.fail:
            raise RuntimeError("store down")


async def test_one_pass_when_the_earliest_wait_ends_and_one_when_the_next_does() -> None:
    passes = Passes()
    wakeups = DueWakeups(passes)
    start = time.monotonic()
    wakeups.wake_at(utcnow() + timedelta(seconds=0.3))
    wakeups.wake_at(utcnow() + timedelta(seconds=0.1))
    wakeups.wake_at(utcnow() + timedelta(seconds=0.1))  # the same end: the same pass
    await asyncio.sleep(0.2)
    assert len(passes.at) == 1
    assert 0.1 <= passes.at[0] - start < 0.2
    await asyncio.sleep(0.2)
    assert len(passes.at) == 2
    assert 0.3 <= passes.at[1] - start < 0.4
    assert len(wakeups) == 0


async def test_a_past_time_runs_a_pass_at_once() -> None:
    passes = Passes()
    DueWakeups(passes).wake_at(utcnow() - timedelta(seconds=5))
    await asyncio.sleep(0.05)
    assert len(passes.at) == 1


async def test_waits_past_the_horizon_are_left_to_the_regular_pass() -> None:
    wakeups = DueWakeups(Passes())
    wakeups.wake_at(utcnow() + timedelta(seconds=WAKE_HORIZON_S + 60))
    assert len(wakeups) == 0
    wakeups.wake_at(utcnow() + timedelta(seconds=WAKE_HORIZON_S - 60))
    assert len(wakeups) == 1
    wakeups.close()


async def test_at_most_max_wakes_are_held(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retries, "MAX_WAKES", 3)
    wakeups = DueWakeups(Passes())
    for n in range(5):
        wakeups.wake_at(utcnow() + timedelta(seconds=10 + n))
    assert len(wakeups) == 3
    wakeups.close()


async def test_passes_never_overlap_and_a_wake_during_one_runs_one_more() -> None:
    passes = Passes()
    passes.hold = asyncio.Event()
    wakeups = DueWakeups(passes)
    wakeups.wake_at(utcnow())
    await asyncio.sleep(0.05)
    wakeups.wake_at(utcnow())
    wakeups.wake_at(utcnow())
    await asyncio.sleep(0.05)
    assert len(passes.at) == 1  # the first is still running
    passes.hold.set()
    await asyncio.sleep(0.05)
    assert len(passes.at) == 2  # both wakes during it: one more pass


async def test_a_failing_pass_is_logged_and_the_next_wake_still_runs() -> None:
    passes = Passes()
    passes.fail = True
    wakeups = DueWakeups(passes)
    wakeups.wake_at(utcnow())
    await asyncio.sleep(0.05)
    passes.fail = False
    wakeups.wake_at(utcnow())
    await asyncio.sleep(0.05)
    assert len(passes.at) == 2


async def test_closed_it_runs_nothing() -> None:
    passes = Passes()
    wakeups = DueWakeups(passes)
    wakeups.wake_at(utcnow() + timedelta(seconds=0.05))
    wakeups.close()
    wakeups.wake_at(utcnow())
    await asyncio.sleep(0.1)
    assert passes.at == []
    assert len(wakeups) == 0
