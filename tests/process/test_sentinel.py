"""Issue 4, item 12: a sentinel secret stored in credentials appears 0 times in the logs, API
responses, execution records and queue payloads captured over a full end-to-end run.

Scale-out processes (API + worker on PostgreSQL + Redis), so every place a secret could
travel is a real one we can read: both processes' JSON logs (debug level), every API response
body, every row of the database, and every entry of the Redis stream. The secret is in a
Slack webhook URL's path and in an http credential's bearer token and header. The run covers
deliveries that succeed, a remote that echoes the request back (secrets in its answer), a
remote error that echoes it too, dry-run and simulate, manual run, cancel, retry and replay,
and every list and detail read. The sentinel must reach one place only: the stand-in, the
real destination (checked too, so the test looks where it would be).
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from redis import Redis
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from ipaas.stores.sql.tables import metadata
from tests.process.conftest import (
    SCALED_OUT_MARKS,
    TERMINAL,
    Api,
    Fleet,
    Standin,
    wait_for,
)

pytestmark = SCALED_OUT_MARKS


class RecordingApi(Api):
    """``Api`` that keeps the text of every response it got."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.bodies: list[str] = []
        self.client.event_hooks["response"].append(self._keep)

    def _keep(self, response: httpx.Response) -> None:
        response.read()
        self.bodies.append(f"{response.request.method} {response.url}\n{response.text}")


async def _dump_database(url: str) -> str:
    """Every row of every table, as text."""
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            parts = []
            for table in metadata.sorted_tables:
                rows = (await conn.execute(sa.select(table))).all()
                parts.append(f"{table.name}: {rows!r}")
            return "\n".join(parts)
    finally:
        await engine.dispose()


def _stream_entries(redis_url: str) -> str:
    with Redis.from_url(redis_url) as redis:
        keys = [k for k in redis.scan_iter() if redis.type(k) == b"stream"]
        assert keys, "no Redis stream: the queue carried nothing"
        return repr([redis.xrange(k) for k in keys])


def test_a_sentinel_secret_never_leaves_its_credential(
    tmp_path: Path, database_url: str, redis_url: str, standin: Standin
) -> None:
    sentinel = f"SENTINEL-{secrets.token_hex(8)}"
    fleet = Fleet(
        tmp_path,
        {
            "IPAAS_DATABASE_URL": database_url,
            "IPAAS_REDIS_URL": redis_url,
            "IPAAS_LOG_LEVEL": "debug",
        },
    )
    try:
        fleet.migrate()
        api_process = fleet.start("api")
        fleet.start("worker")
        api = RecordingApi(api_process.url).signup()
        _run_everything(api, standin, sentinel)

        # The destination got it: the test looks where a secret really travels.
        received = repr(standin.requests())
        assert sentinel in received

        places = {
            "API responses": "\n".join(api.bodies),
            "logs": "\n".join(p.stderr_text() for p in fleet.processes),
            "database rows": asyncio.run(_dump_database(database_url)),
            "queue payloads": _stream_entries(redis_url),
        }
        found = {name: text.count(sentinel) for name, text in places.items()}
        print(f"sentinel occurrences: {found} (stand-in: {received.count(sentinel)})")
        assert found == dict.fromkeys(places, 0), found
        # Not vacuous: each place holds what was captured.
        assert all(len(text) > 1000 for text in places.values()), {
            name: len(text) for name, text in places.items()
        }
        # The echoed secrets were recorded, masked: the redaction ran, not a lucky miss.
        assert "tok-***" in places["database rows"] or "Bearer ***" in places["database rows"]
        assert not fleet.error_events(), fleet.error_events()[:5]
        api.close()
    finally:
        fleet.stop_all()


def _run_everything(api: RecordingApi, standin: Standin, sentinel: str) -> None:
    slack = api.credential("slack", {"webhook_url": f"{standin.url}/services/T000/B000/{sentinel}"})
    http = api.credential(
        "http",
        {
            "base_url": standin.url,
            "bearer_token": f"tok-{sentinel}",
            "headers": {"X-Api-Key": f"key-{sentinel}"},
        },
    )
    standin.add_fault("/echo/fail", status=500, count=None)
    steps: list[dict[str, Any]] = [
        {"id": "notify", "type": "slack_message", "credential_id": slack,
         "config": {"text": "order {{ trigger.body.n }}"}},
        # The echo answers with the request, bearer token and key included.
        {"id": "echo", "type": "http_request", "credential_id": http,
         "config": {"method": "POST", "path": "/echo/ok", "json": {"n": "{{ trigger.body.n }}"}}},
    ]  # fmt: skip
    ok = api.workflow(steps, name="sentinel ok")
    failing = api.workflow(
        [{"id": "fail", "type": "http_request", "credential_id": http,
          "retry": {"max_attempts": 1}, "config": {"method": "POST", "path": "/echo/fail"}}],
        name="sentinel failing",
    )  # fmt: skip
    slow = api.workflow(
        [{"id": "wait", "type": "http_request", "credential_id": http,
          "config": {"path": "/slow", "query": {"seconds": 30, "id": "sentinel"}}}],
        name="sentinel slow",
    )  # fmt: skip

    fired = [api.fire(ok, {"n": n}) for n in range(3)]
    failed = api.fire(failing, {"n": 99})
    slow_id = api.fire(slow, {})
    run = api.post(f"/api/workflows/{ok}/run", json={"body": {"n": 7}})
    assert run.status_code == 202, run.text
    fired.append(str(run.json()["id"]))

    for workflow_id in (ok, failing):
        for mode in ("run", "simulate"):
            response = api.post(
                f"/api/workflows/{workflow_id}/dry-run",
                json={"mode": mode, "trigger_sample": {"body": {"n": 1}}},
            )
            assert response.status_code == 200, response.text

    wait_for(
        lambda: standin.slow_call("sentinel"),
        timeout_s=30,
        what="the slow call reaches the stand-in",
    )
    assert api.post(f"/api/executions/{slow_id}/cancel").status_code == 200
    for execution_id in [*fired, failed, slow_id]:
        wait_for(
            lambda execution_id=execution_id: api.execution(execution_id)["status"],
            until=lambda status: status in TERMINAL,
            timeout_s=60,
            what=f"{execution_id} terminal",
        )
    assert {api.execution(e)["status"] for e in fired} == {"succeeded"}
    assert api.execution(failed)["status"] == "failed"

    retried = api.post(f"/api/executions/{failed}/retry")
    assert retried.status_code == 202, retried.text
    replayed = api.post(f"/api/executions/{fired[0]}/replay")
    assert replayed.status_code == 201, replayed.text
    for execution_id in (failed, str(replayed.json()["id"])):
        wait_for(
            lambda execution_id=execution_id: api.execution(execution_id)["status"],
            until=lambda status: status in TERMINAL,
            timeout_s=60,
            what=f"{execution_id} terminal after retry/replay",
        )

    # A new secret through PATCH (issue: credentials could not be edited): the worker
    # process sends it within its cache's 2 s, and it is never read back either.
    patched = api.patch(
        f"/api/credentials/{http}",
        json={
            "name": "http rotated",
            "secret": {
                "base_url": standin.url,
                "bearer_token": f"tok2-{sentinel}",
                "headers": {"X-Api-Key": f"key-{sentinel}"},
            },
        },
    )
    assert patched.status_code == 200, patched.text

    def rotated_token_arrived() -> bool:
        execution_id = api.fire(ok, {"n": 8})
        wait_for(
            lambda: api.execution(execution_id)["status"],
            until=lambda status: status in TERMINAL,
            timeout_s=60,
            what=f"{execution_id} terminal after the PATCH",
        )
        return f"tok2-{sentinel}" in repr(standin.requests())

    wait_for(rotated_token_arrived, timeout_s=30, what="the PATCHed token used", interval_s=0.5)

    # Every read the API offers.
    for path in ("/api/credentials", "/api/workflows", "/api/tokens", "/api/circuits",
                 "/api/tenant", "/api/stats", f"/api/credentials/{http}",
                 f"/api/credentials/{slack}", f"/api/workflows/{ok}"):  # fmt: skip
        assert api.get(path).status_code == 200, path
    for item in api.executions():
        api.execution(item["id"])
