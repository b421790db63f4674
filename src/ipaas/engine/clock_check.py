"""Clocks apart: this process's against the database's, once a minute (PostgreSQL).

Leases are written and judged with each process's own clock (``engine/reaper.py``): a worker
renews its executions' leases every ``IPAAS_LEASE_S / 3`` for ``IPAAS_LEASE_S``, so a
reaper whose clock runs more than two thirds of a lease (20 s by default) ahead of a
worker's takes that worker's live executions back to the queue, and another worker runs
them again: duplicate side effects. NTP keeps machines within milliseconds; a machine
without it drifts by seconds a day. Each process that reaps or runs executions measures its
offset from PostgreSQL's clock (one ``SELECT clock_timestamp()``), publishes it as
``ipaas_clock_offset_seconds`` and logs ``clock_skew`` while it is over
``CLOCK_SKEW_WARN_S``: long before it matters, and whatever the other machines' clocks.
"""

from __future__ import annotations

import asyncio

import structlog

from ipaas.kit.periodic import run_every
from ipaas.observability.metrics import CLOCK_OFFSET
from ipaas.runtime import Runtime

_log = structlog.get_logger(__name__)

#: An offset this large is said (a tenth of the default lease): NTP keeps clocks within
#: milliseconds, so this is a machine without it, well before it costs anything.
CLOCK_SKEW_WARN_S = 3.0
CLOCK_CHECK_INTERVAL_S = 60.0


async def check_clock(runtime: Runtime) -> float | None:
    """This process's offset from the database's clock (``None``: it has none); logged
    when it is over ``CLOCK_SKEW_WARN_S``."""
    offset = await runtime.store.clock_offset_s()
    if offset is None:
        return None
    CLOCK_OFFSET.set(offset)
    if abs(offset) >= CLOCK_SKEW_WARN_S:
        _log.warning(
            "clock_skew",
            offset_s=round(offset, 3),
            lease_s=runtime.settings.lease_s,
            error=(
                f"this machine's clock is {abs(offset):.1f} s "
                f"{'behind' if offset > 0 else 'ahead of'} the database's: leases are judged "
                "with each process's clock, so machines more than two thirds of "
                "IPAAS_LEASE_S apart run executions twice; keep them in time (NTP)"
            ),
        )
    return offset


async def run_clock_check(runtime: Runtime, stop: asyncio.Event) -> None:
    """``check_clock`` once a minute until ``stop`` (where the database has no clock of its
    own, each pass returns at once)."""
    await run_every(CLOCK_CHECK_INTERVAL_S, stop, lambda: check_clock(runtime), name="clock_check")
