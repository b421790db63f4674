"""``clock_skew``: a worker's clock apart from the database's is said (engine/clock_check.py)."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import pytest
from prometheus_client import REGISTRY

from ipaas.config import Settings
from ipaas.engine.clock_check import CLOCK_SKEW_WARN_S, check_clock
from ipaas.observability.metrics import CLOCK_OFFSET
from ipaas.runtime import Runtime
from ipaas.stores import MemoryStore


class _ClockApart(MemoryStore):
    """A store whose database clock is ``offset_s`` ahead of this process's (PostgreSQL's
    own measurement is in tests/contracts/test_store.py, ``TestClock``)."""

    def __init__(self, offset_s: float | None) -> None:
        super().__init__()
        self.offset_s = offset_s

    async def clock_offset_s(self) -> float | None:
        return self.offset_s


@pytest.mark.parametrize(
    ("offset_s", "said"),
    [
        (None, False),  # SQLite, memory: one clock
        (0.004, False),
        (-(CLOCK_SKEW_WARN_S - 0.1), False),
        (CLOCK_SKEW_WARN_S, True),
        (-25.0, True),
    ],
)
async def test_an_offset_past_the_limit_is_said_and_every_one_published(
    settings: Settings, logs: list[MutableMapping[str, Any]], offset_s: float | None, said: bool
) -> None:
    runtime = Runtime.build(settings, store=_ClockApart(offset_s))
    try:
        CLOCK_OFFSET.set(123.0)
        assert await check_clock(runtime) == offset_s
        published = REGISTRY.get_sample_value("ipaas_clock_offset_seconds")
        assert published == (123.0 if offset_s is None else offset_s)
        lines = [line for line in logs if line["event"] == "clock_skew"]
        assert len(lines) == int(said)
        if said:
            assert lines[0]["offset_s"] == offset_s
            direction = "ahead of" if offset_s is not None and offset_s < 0 else "behind"
            assert f"s {direction} the database's" in lines[0]["error"]
    finally:
        await runtime.http.aclose()
