"""The queue's VACUUM passes (PostgreSQL's own are in tests/contracts/test_pg_vacuum.py):
when they ask the store, what they log, and how long they leave between VACUUMs."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import pytest

from ipaas.config import Settings
from ipaas.engine.queue_vacuum import MAX_DUTY, QueueVacuumer, run_queue_vacuum
from ipaas.observability.metrics import QUEUE_VACUUMS
from ipaas.runtime import Runtime
from ipaas.stores.base import QueueVacuum
from ipaas.stores.memory import MemoryStore


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _VacuumingStore(MemoryStore):
    """A memory store whose ``vacuum_queue`` answers as told and takes ``took_s`` of the
    clock: the memory store itself keeps no dead row versions and always answers None."""

    def __init__(self, clock: _Clock, answer: QueueVacuum | None, took_s: float) -> None:
        super().__init__()
        self.clock = clock
        self.answer = answer
        self.took_s = took_s
        self.asked: list[int] = []

    async def vacuum_queue(self, *, min_dead: int) -> QueueVacuum | None:
        self.asked.append(min_dead)
        self.clock.now += self.took_s
        return self.answer


def _vacuumer(
    settings: Settings, answer: QueueVacuum | None, took_s: float = 0.5
) -> tuple[QueueVacuumer, _VacuumingStore, _Clock]:
    clock = _Clock()
    store = _VacuumingStore(clock, answer, took_s)
    return QueueVacuumer(Runtime.build(settings, store=store), clock), store, clock


async def test_a_vacuum_waits_out_its_duty_before_the_next(
    settings: Settings, logs: list[MutableMapping[str, Any]]
) -> None:
    settings.queue_vacuum_min_dead = 1234
    vacuumer, store, clock = _vacuumer(settings, QueueVacuum(dead=9000, vacuumed=True))
    counted = QUEUE_VACUUMS._value.get()
    assert await vacuumer.once() is not None
    assert store.asked == [1234]
    assert QUEUE_VACUUMS._value.get() == counted + 1
    assert [(log["event"], log["dead"], log["duration_ms"]) for log in logs] == [
        ("queue_vacuumed", 9000, 500.0)
    ]
    # It took 0.5 s: at most MAX_DUTY of the time, so the next one starts 5 s after it began.
    clock.now = 100.0 + 0.5 / MAX_DUTY - 0.01
    assert await vacuumer.once() is None
    assert store.asked == [1234]
    clock.now = 100.0 + 0.5 / MAX_DUTY
    assert await vacuumer.once() is not None
    assert store.asked == [1234, 1234]


async def test_nothing_due_asks_again_at_the_next_pass(
    settings: Settings, logs: list[MutableMapping[str, Any]]
) -> None:
    vacuumer, store, _ = _vacuumer(settings, None, took_s=5.0)
    assert await vacuumer.once() is None
    assert await vacuumer.once() is None
    assert len(store.asked) == 2
    assert logs == []


@pytest.mark.parametrize(
    ("skipped", "told"),
    [
        ("busy", []),  # another VACUUM under way clears the rows: nothing to tell
        ("not_owner", [("queue_vacuum_skipped", "not_owner", "warning")]),  # once
    ],
)
async def test_a_vacuum_that_did_not_run_is_not_counted(
    settings: Settings,
    logs: list[MutableMapping[str, Any]],
    skipped: str,
    told: list[tuple[str, str, str]],
) -> None:
    answer = QueueVacuum(dead=7000, vacuumed=False, skipped=skipped)
    vacuumer, store, _ = _vacuumer(settings, answer)
    counted = QUEUE_VACUUMS._value.get()
    for _ in range(3):
        assert await vacuumer.once() == answer
    assert len(store.asked) == 3  # no duty to wait out: nothing ran
    assert QUEUE_VACUUMS._value.get() == counted
    assert [(log["event"], log["reason"], log["log_level"]) for log in logs] == told


@pytest.mark.parametrize("interval_s", [0.0, 0.01])
async def test_the_loop_runs_until_stopped_and_not_at_all_when_off(
    settings: Settings, interval_s: float
) -> None:
    settings.queue_vacuum_interval_s = interval_s
    clock = _Clock()
    store = _VacuumingStore(clock, None, took_s=0.0)
    stop = asyncio.Event()
    loop = asyncio.create_task(run_queue_vacuum(Runtime.build(settings, store=store), stop))
    await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(loop, 1)
    if interval_s == 0:
        assert store.asked == []
    else:
        assert len(store.asked) >= 3
