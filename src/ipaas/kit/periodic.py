"""A background loop: one pass every few seconds until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from ipaas.errors import ServiceUnavailable

_log = structlog.get_logger(__name__)


async def run_every(
    interval_s: float, stop: asyncio.Event, pass_: Callable[[], Awaitable[object]], *, name: str
) -> None:
    """Await ``pass_()`` every ``interval_s`` until ``stop`` is set. A failing pass is logged
    as ``<name>_failed`` and the next one runs: a database outage must not end the loop."""
    while not stop.is_set():
        try:
            await pass_()
        except ServiceUnavailable as exc:  # an outage, not a bug: no traceback per pass
            _log.warning(f"{name}_failed", error=exc.message)
        except Exception:
            _log.exception(f"{name}_failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
