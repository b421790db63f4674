"""A process started while its database is down, or before its schema is migrated, waits for
it (``Runtime._start_store``)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from ipaas.config import Settings
from ipaas.runtime import Runtime
from ipaas.stores.sql import run_migrations
from ipaas.stores.sql.tables import SCHEMA_REVISION


async def test_a_start_during_an_outage_waits_and_says_why(
    settings: Settings, logs: list[MutableMapping[str, Any]]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once it is closed
    down = settings.model_copy(
        update={"database_url": f"postgresql+asyncpg://ipaas:hunter2@127.0.0.1:{port}/ipaas"}
    )
    runtime = Runtime.build(down)
    starting = asyncio.create_task(runtime.startup())
    try:
        for _ in range(100):
            waits = [line for line in logs if line["event"] == "store_unreachable_at_startup"]
            if len(waits) >= 2:
                break
            await asyncio.sleep(0.05)
        assert not starting.done()  # still waiting, not exited
        assert [w["retry_in_s"] for w in waits[:2]] == [0.2, 0.4]
        # Why it cannot connect: the operator's clue (a typo'd port, a firewall...).
        assert waits[0]["error"].startswith("ConnectionRefusedError")
        assert "hunter2" not in repr(waits)
    finally:
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await runtime.http.aclose()


async def test_a_start_before_the_migration_waits_for_it(
    settings: Settings, tmp_path: Path, logs: list[MutableMapping[str, Any]]
) -> None:
    """A worker of a new release started before the release's ``ipaas migrate`` (or with it
    forgotten) comes up once the schema is there, instead of failing every claim."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'ipaas.db'}"
    runtime = Runtime.build(settings.model_copy(update={"database_url": url}))
    starting = asyncio.create_task(runtime.startup())
    try:
        for _ in range(100):
            waits = [line for line in logs if line["event"] == "schema_not_migrated"]
            if waits:
                break
            await asyncio.sleep(0.02)
        assert not starting.done()
        assert (waits[0]["found"], waits[0]["expected"]) == (None, SCHEMA_REVISION)
        assert "run `ipaas migrate`" in waits[0]["error"]
        await asyncio.to_thread(run_migrations, url)
        await asyncio.wait_for(starting, timeout=10)  # the next try (0.2-0.4 s) finds it
    except BaseException:
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await runtime.http.aclose()
        raise
    try:
        assert await runtime.store.ping()
    finally:
        await runtime.shutdown()
