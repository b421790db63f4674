"""Issue 3, item 4: a cancel through the API process stops the execution on the worker process
running it (Redis pub/sub), in-flight HTTP call included, within 100 ms; measured from the
remote side, as in the embedded cancel test."""

from __future__ import annotations

from pathlib import Path

from tests.process.conftest import (
    SCALED_OUT_MARKS,
    SECRET_KEY,
    Api,
    ServerProcess,
    Standin,
    WorkerProcess,
    run_ipaas,
    wait_for,
)
from tests.process.test_cancel import _slow_workflow, assert_cancel_stops_the_call

pytestmark = SCALED_OUT_MARKS


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

        assert_cancel_stops_the_call(
            api, standin, execution_id, "cancel-scaled", where="API process -> Redis -> worker"
        )
        api_process.assert_no_errors()
        worker.assert_no_errors()
    finally:
        if api is not None:
            api.close()
        worker.stop()
        api_process.stop()
