"""Fixtures shared by the engine's end-to-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ipaas.engine.worker import Worker
from ipaas.runtime import Runtime
from tests.contracts.conftest import (
    BACKENDS,
    migrated_sqlite,
    postgres_url,
    sqlite_template,
    truncate_all,
)

__all__ = ["postgres_url", "sqlite_template"]  # fixtures, for ``each_store``


@pytest.fixture(params=BACKENDS)
async def each_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL: the memory store's, a migrated SQLite file's, and (when
    ``IPAAS_TEST_POSTGRES_URL`` is set) this run's PostgreSQL database, emptied. A module
    whose tests run on each takes it in its ``settings``::

        @pytest.fixture
        def settings(settings: Settings, each_store: str) -> Settings:
            return settings.model_copy(update={"database_url": each_store})
    """
    match request.param:
        case "memory":
            return "memory://"
        case "sqlite":
            template = request.getfixturevalue("sqlite_template")
            return migrated_sqlite(template, tmp_path / "engine.db")
        case _:
            url = str(request.getfixturevalue("postgres_url"))
            await truncate_all(url)
            return url


@pytest.fixture
async def worker(runtime: Runtime) -> AsyncIterator[Worker]:
    """A worker started on ``runtime`` (feed, heartbeat and background passes), stopped
    after the test. Modules that drive a worker by hand define their own, not started."""
    worker = Worker(runtime)
    await worker.start()
    yield worker
    await worker.stop(grace_s=0)
