"""A process started while its database is down waits for it (``Runtime._start_store``)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import MutableMapping
from typing import Any

from ipaas.config import Settings
from ipaas.runtime import Runtime


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
