"""Fixtures shared by the engine's end-to-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ipaas.engine.worker import Worker
from ipaas.runtime import Runtime
from tests.contracts.conftest import migrated_sqlite, sqlite_template

__all__ = ["sqlite_template"]  # a fixture, for ``each_store``


@pytest.fixture(params=["memory", "sqlite"])
def each_store(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """A database URL: the memory store's, then a migrated SQLite file's. A module whose
    tests run on both takes it in its ``settings``::

        @pytest.fixture
        def settings(settings: Settings, each_store: str) -> Settings:
            return settings.model_copy(update={"database_url": each_store})
    """
    if request.param == "memory":
        return "memory://"
    return migrated_sqlite(sqlite_template, tmp_path / "engine.db")


@pytest.fixture
async def worker(runtime: Runtime) -> AsyncIterator[Worker]:
    """A worker started on ``runtime`` (feed, heartbeat and background passes), stopped
    after the test. Modules that drive a worker by hand define their own, not started."""
    worker = Worker(runtime)
    await worker.start()
    yield worker
    await worker.stop(grace_s=0)
