"""The embedded server's disk fills up (SQLite): intake answers 503 + ``Retry-After``, never
a 500; ``/readyz`` says the store is not ready; an execution whose outcome could not be
written waits for room, and is neither lost nor run again, once the disk has room.

The full disk is SQLite's own ``SQLITE_FULL`` ("database or disk is full"), caused with
``max_page_count`` on the writer's connection (``sqlite_room``): the same error, raised by
the same statements, as on a full file system.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from ipaas.api.app import create_app
from ipaas.config import Settings
from ipaas.errors import STORE_RETRY_AFTER_S
from ipaas.stores.sql import SqlStore, run_migrations
from ipaas.stores.sql import engine as sql_engine
from tests.conftest import signup
from tests.contracts.conftest import in_thread, sqlite_room
from tests.standins.server import StandinServer

#: Rendered into the Slack text, so the step's record needs overflow pages: room the
#: database no longer has.
LARGE = "x" * 20_000


@pytest.fixture
async def app_client(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[httpx.AsyncClient, SqlStore]]:
    # How long the store stays not ready after a failed write (5 s): longer than the
    # Slack call below, so that the outage is one from the first failure to the last.
    monkeypatch.setattr(sql_engine, "STORE_RETRY_AFTER_S", 2.0)
    url = f"sqlite+aiosqlite:///{tmp_path / 'full.db'}"
    in_thread(lambda: run_migrations(url))
    app = create_app(settings.model_copy(update={"database_url": url}), workers=True)
    async with app.router.lifespan_context(app):
        store = app.state.runtime.store
        assert isinstance(store, SqlStore)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ipaas.test") as c:
            yield c, store


async def _status(client: httpx.AsyncClient, auth: dict[str, str], execution_id: str) -> str:
    response = await client.get(f"/api/executions/{execution_id}", headers=auth)
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


async def _wait_for(condition: Any, what: str, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, f"{what} not reached in time"
        await asyncio.sleep(0.02)


async def test_a_full_disk_answers_503_and_loses_nothing(
    app_client: tuple[httpx.AsyncClient, SqlStore],
    clean_standin: StandinServer,
    logs: list[MutableMapping[str, Any]],
) -> None:
    client, store = app_client
    auth = await signup(client)
    auth.pop("tenant_id")
    credential = await client.post(
        "/api/credentials",
        json={
            "name": "slack",
            "type": "slack",
            "secret": {"webhook_url": f"{clean_standin.url}/services/T000/B000/FULL"},
        },
        headers=auth,
    )
    assert credential.status_code == 201, credential.text
    workflow = await client.post(
        "/api/workflows",
        json={
            "name": "notify",
            "steps": [
                {
                    "id": "notify",
                    "type": "slack_message",
                    "credential_id": credential.json()["id"],
                    "config": {"text": "{{ trigger.body.n }} {{ trigger.body.pad }}"},
                }
            ],
        },
        headers=auth,
    )
    assert workflow.status_code == 201, workflow.text
    hook = f"/api/webhooks/{workflow.json()['id']}"

    # The first execution's Slack call is in flight when the disk fills up.
    clean_standin.add_fault("/services/", delay_s=0.5)
    first = await client.post(hook, json={"n": 0, "pad": LARGE})
    assert first.status_code == 202, first.text
    first_id = first.json()["execution_id"]

    async def running() -> bool:
        return await _status(client, auth, first_id) == "running"

    await _wait_for(running, "the first execution running")
    await sqlite_room(store._db, 0)

    refused = await client.post(hook, json={"n": 1, "pad": LARGE})
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == str(STORE_RETRY_AFTER_S)
    assert refused.json()["error"]["code"] == "store_unavailable"
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["store"] == "down"

    # The Slack message went out; recording it found no room: the worker waits.
    async def waiting() -> bool:
        return any(e["event"] == "store_write_waiting" for e in logs)

    await _wait_for(waiting, "the finish waiting for room")
    assert [e["reason"] for e in logs if e["event"] == "sqlite_writes_failing"] == ["disk_full"]
    assert await _status(client, auth, first_id) == "running"

    await sqlite_room(store._db, None)  # the operator frees the disk

    async def succeeded() -> bool:
        return await _status(client, auth, first_id) == "succeeded"

    await _wait_for(succeeded, "the first execution recorded")
    second = await client.post(hook, json={"n": 2, "pad": "small"})
    assert second.status_code == 202, second.text

    async def delivered() -> bool:
        return await _status(client, auth, second.json()["execution_id"]) == "succeeded"

    await _wait_for(delivered, "the second execution")
    texts = [r["body"]["text"].split(" ")[0] for r in clean_standin.requests("slack_webhook")]
    assert sorted(texts) == ["0", "2"]  # each once: nothing lost, nothing repeated

    async def ready_again() -> bool:
        return (await client.get("/readyz")).status_code == 200

    await _wait_for(ready_again, "/readyz ready again")
    await client.post(hook, json={"n": 3, "pad": "small"})  # a write after the quiet time
    told = [(e["event"], e["reason"]) for e in logs if e["event"].startswith("sqlite_writes")]
    assert told == [
        ("sqlite_writes_failing", "disk_full"),
        ("sqlite_writes_recovered", "disk_full"),
    ]
