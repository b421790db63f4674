from __future__ import annotations

from ipaas.engine.retention import prune_once
from ipaas.engine.worker import Worker
from ipaas.observability.metrics import EXECUTIONS_PRUNED
from ipaas.runtime import Runtime
from tests.engine.test_worker import Api, api, worker

__all__ = ["api", "worker"]  # the shared fixtures, re-used here


async def test_a_pass_keeps_the_newest_per_tenant(
    api: Api, worker: Worker, runtime: Runtime
) -> None:
    wf = await api.workflow(
        [{"id": "s", "type": "http_request", "config": {"url": f"{api.standin_url}/echo"}}]
    )
    ids = [await api.fire(wf, {"n": n}) for n in range(3)]
    await worker.run_until_empty()
    queued = await api.fire(wf, {"n": 3})
    runtime.settings.retention_max_executions = 1
    before = EXECUTIONS_PRUNED._value.get()
    assert await prune_once(runtime) == 2
    assert EXECUTIONS_PRUNED._value.get() - before == 2
    remaining = {
        ex_id
        for ex_id in (*ids, queued)
        if (await api.client.get(f"/api/executions/{ex_id}", headers=api.auth)).status_code == 200
    }
    assert len(remaining) == 2
    assert queued in remaining  # never a queued or running execution
    assert await prune_once(runtime) == 0


async def test_off_when_both_limits_are_unset(runtime: Runtime) -> None:
    runtime.settings.retention_max_executions = None
    runtime.settings.retention_days = None
    assert await prune_once(runtime) == 0
