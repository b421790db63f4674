"""Issue 3, item 9: ``ipaas worker`` shuts down gracefully on SIGTERM. Running executions
finish within ``IPAAS_SHUTDOWN_GRACE_S``; what is still running then goes back to ``queued``
(and resumes on the next start); queued work is left for the next worker; it exits 0."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipaas.stores.sql import run_migrations
from tests.contracts.conftest import in_thread
from tests.process.conftest import (
    SCALED_OUT_MARKS,
    TERMINAL,
    Api,
    ServerProcess,
    Standin,
    WorkerProcess,
    wait_for,
)
from tests.process.test_cancel import _slow_workflow

#: SIGTERM -> exit, beyond the grace: stopping the loops, closing pools, interpreter exit.
EXIT_MARGIN_S = 3.0
DELIVERY_DELAY_S = 1.5

pytestmark = SCALED_OUT_MARKS


@pytest.fixture
def scaled_out(
    tmp_path: Path, database_url: str, redis_url: str
) -> Iterator[tuple[ServerProcess, Api]]:
    """``ipaas serve --no-workers`` on the test's database and Redis, with a signed-up client."""
    in_thread(lambda: run_migrations(database_url))
    env = {"IPAAS_DATABASE_URL": database_url, "IPAAS_REDIS_URL": redis_url}
    (tmp_path / "api").mkdir()
    api_process = ServerProcess(tmp_path / "api", env=env, args=("--no-workers", "--no-migrate"))
    api: Api | None = None
    try:
        api_process.start()
        api = Api(api_process.url).signup()
        yield api_process, api
        api_process.assert_no_errors()
    finally:
        if api is not None:
            api.close()
        api_process.stop()


def _worker(api_process: ServerProcess, grace_s: float) -> WorkerProcess:
    data_dir = api_process.data_dir.with_name("worker")
    data_dir.mkdir()
    env = {
        "IPAAS_DATABASE_URL": api_process.env["IPAAS_DATABASE_URL"],
        "IPAAS_REDIS_URL": api_process.env["IPAAS_REDIS_URL"],
        "IPAAS_WORKERS": "1",
        "IPAAS_SHUTDOWN_GRACE_S": str(grace_s),
    }
    return WorkerProcess(data_dir, env=env)


def _sigterm(worker: WorkerProcess, *, within_s: float) -> float:
    """SIGTERM the worker; assert it exits 0 within ``within_s``; the seconds it took."""
    sent = time.monotonic()
    worker.terminate()
    code = worker.wait(within_s)
    took = time.monotonic() - sent
    assert code == 0, worker.stderr_text()[-4000:]
    return took


def test_sigterm_finishes_the_running_delivery_and_leaves_the_queued_ones(
    scaled_out: tuple[ServerProcess, Api], standin: Standin
) -> None:
    grace_s = 5.0
    api_process, api = scaled_out
    worker = _worker(api_process, grace_s)
    try:
        workflow_id = api.slack_workflow(standin.slack_hook(), "shutdown {{ trigger.body.n }}")
        # Only the first delivery is slow; the stand-in uses the fault up when it arrives.
        standin.add_fault("/services/", delay_s=DELIVERY_DELAY_S, count=1)
        ids = [api.fire(workflow_id, {"n": n}) for n in range(3)]
        worker.start()
        wait_for(
            lambda: standin.client.get("/_standin/faults").json(),
            until=lambda faults: faults == [],
            timeout_s=30,
            what="the first delivery reaches the stand-in",
        )
        statuses = [api.execution(i)["status"] for i in ids]
        assert sorted(statuses) == ["queued", "queued", "running"], statuses

        took = _sigterm(worker, within_s=grace_s + EXIT_MARGIN_S)
        print(f"worker drained one {DELIVERY_DELAY_S} s delivery and exited in {took:.2f} s")
        worker.assert_no_errors()
        after = {i: api.execution(i) for i in ids}
        assert sorted(e["status"] for e in after.values()) == ["queued", "queued", "succeeded"]
        assert standin.stats()["slack_messages"] == 1

        worker.start()
        done = wait_for(
            lambda: [api.execution(i) for i in ids],
            until=lambda executions: all(e["status"] in TERMINAL for e in executions),
            timeout_s=30,
            what="all three terminal after the restart",
        )
        assert [e["status"] for e in done] == ["succeeded"] * 3, done
        stats = standin.stats()
        assert (stats["slack_messages"], stats["slack_duplicate_texts"]) == (3, 0), stats
        # The drained one ran once; the queued ones were first claimed by the new worker.
        assert [e["attempt"] for e in done] == [1, 1, 1], done
        worker.assert_no_errors()
    finally:
        worker.stop()


def test_sigterm_hands_a_long_running_execution_back_after_the_grace(
    scaled_out: tuple[ServerProcess, Api], standin: Standin
) -> None:
    grace_s = 1.0
    api_process, api = scaled_out
    worker = _worker(api_process, grace_s)
    try:
        workflow_id = _slow_workflow(api, standin, "shutdown-slow", seconds=30)
        execution_id = api.fire(workflow_id, {"n": 1})
        worker.start()
        wait_for(
            lambda: standin.slow_call("shutdown-slow"),
            timeout_s=30,
            what="the stand-in sees the slow call",
        )
        assert api.execution(execution_id)["status"] == "running"

        took = _sigterm(worker, within_s=grace_s + EXIT_MARGIN_S)
        print(f"worker handed back a 30 s step and exited in {took:.2f} s (grace {grace_s} s)")
        assert took >= grace_s
        worker.assert_no_errors()
        execution = api.execution(execution_id)
        assert (execution["status"], execution["finished_at"]) == ("queued", None), execution
        call = wait_for(
            lambda: standin.slow_call("shutdown-slow"),
            until=lambda c: c is not None and c["outcome"] != "running",
            timeout_s=5,
            what="the stand-in sees the call end",
        )
        assert call is not None
        assert call["outcome"] == "disconnected", call

        # The next worker resumes it as the second attempt of the same run.
        worker.start()
        resumed = wait_for(
            lambda: api.execution(execution_id),
            until=lambda e: e["status"] != "queued",
            timeout_s=30,
            what="the execution resumes on the next worker",
        )
        assert (resumed["status"], resumed["attempt"]) == ("running", 2), resumed
    finally:
        worker.stop()
