"""Issue 3, item 4: a cancel through the API process stops the execution on the worker process
running it (Redis pub/sub), in-flight HTTP call included, within 100 ms; measured from the
remote side, as in the embedded cancel test."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from redis import Redis
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.process.conftest import (
    SECRET_KEY,
    TERMINAL,
    Api,
    ServerProcess,
    Standin,
    WorkerProcess,
    run_ipaas,
    wait_for,
)
from tests.process.test_cancel import CANCEL_BUDGET_S, _slow_workflow

POSTGRES_URL = os.environ.get("IPAAS_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("IPAAS_TEST_REDIS_URL")
#: The queue's stream and group names are fixed, so this test owns a Redis database of its own
#: (flushed before and after). Pub/sub channels span databases; execution ids are unique.
REDIS_DB = 14

pytestmark = [
    pytest.mark.process,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.skipif(
        not (POSTGRES_URL and REDIS_URL),
        reason="needs IPAAS_TEST_POSTGRES_URL and IPAAS_TEST_REDIS_URL",
    ),
]


async def _admin(url: str, statement: str) -> None:
    engine = create_async_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql(statement)
    finally:
        await engine.dispose()


@pytest.fixture
def database_url() -> Iterator[str]:
    """A new PostgreSQL database of this test's own (not migrated), dropped afterwards."""
    assert POSTGRES_URL is not None
    admin = sa.make_url(POSTGRES_URL)
    admin_url = admin.render_as_string(hide_password=False)
    name = f"ipaas_cancel_{os.getpid()}_{secrets.token_hex(4)}"
    asyncio.run(_admin(admin_url, f'CREATE DATABASE "{name}"'))
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The test Redis on a database index of its own, empty before and after."""
    assert REDIS_URL is not None
    url = urlsplit(REDIS_URL)._replace(path=f"/{REDIS_DB}").geturl()
    with Redis.from_url(url) as redis:
        redis.flushdb()
    try:
        yield url
    finally:
        with Redis.from_url(url) as redis:
            redis.flushdb()


def test_cancel_through_the_api_process_stops_the_worker_call_within_100_ms(
    tmp_path: Path, database_url: str, redis_url: str, standin: Standin
) -> None:
    env = {"IPAAS_DATABASE_URL": database_url, "IPAAS_REDIS_URL": redis_url}
    run_ipaas("migrate", env={**env, "IPAAS_SECRET_KEY": SECRET_KEY}, cwd=tmp_path)
    (tmp_path / "api").mkdir()
    (tmp_path / "worker").mkdir()
    api_process = ServerProcess(tmp_path / "api", env=env, args=("--no-workers", "--no-migrate"))
    worker = WorkerProcess(tmp_path / "worker", env=env)
    api: Api | None = None
    try:
        api_process.start()
        worker.start()
        api = Api(api_process.url).signup()
        workflow_id = _slow_workflow(api, standin, "cancel-scaled")
        execution_id = api.fire(workflow_id, {"n": 1})
        wait_for(
            lambda: standin.slow_call("cancel-scaled"),
            timeout_s=30,
            what="stand-in sees the worker's slow call",
        )
        assert api.execution(execution_id)["status"] == "running"

        # CLOCK_MONOTONIC is system-wide on Linux: comparable with the stand-in's record.
        sent = time.monotonic()
        response = api.post(f"/api/executions/{execution_id}/cancel")
        answered = time.monotonic()
        assert response.status_code == 200, response.text

        call = wait_for(
            lambda: standin.slow_call("cancel-scaled"),
            until=lambda c: c is not None and c["outcome"] != "running",
            timeout_s=15,
            what="stand-in sees the call end",
        )
        assert call is not None
        assert call["outcome"] == "disconnected", call
        latency = call["disconnected_monotonic"] - sent
        print(
            f"scaled-out cancel (API process -> Redis -> worker process): request->remote "
            f"disconnect {latency * 1000:.1f} ms "
            f"(cancel answered after {(answered - sent) * 1000:.1f} ms)"
        )
        assert 0 <= latency < CANCEL_BUDGET_S

        execution = wait_for(
            lambda: api.execution(execution_id),
            until=lambda e: e["status"] in TERMINAL,
            timeout_s=10,
            what="execution terminal",
        )
        assert execution["status"] == "cancelled", execution
        assert execution["finished_at"] is not None
        api_process.assert_no_errors()
        worker.assert_no_errors()
    finally:
        if api is not None:
            api.close()
        worker.stop()
        api_process.stop()
