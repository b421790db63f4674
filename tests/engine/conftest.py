"""Fixtures shared by the engine's end-to-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ipaas.engine.worker import Worker
from ipaas.runtime import Runtime


@pytest.fixture
async def worker(runtime: Runtime) -> AsyncIterator[Worker]:
    """A worker started on ``runtime`` (feed, heartbeat and background passes), stopped
    after the test. Modules that drive a worker by hand define their own, not started."""
    worker = Worker(runtime)
    await worker.start()
    yield worker
    await worker.stop(grace_s=0)
