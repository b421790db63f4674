from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from ipaas.engine import retention
from ipaas.engine.retention import prune_once
from ipaas.engine.worker import Worker
from ipaas.observability.metrics import EXECUTIONS_PRUNED
from ipaas.runtime import Runtime
from tests.contracts.test_store import new_account, new_workflow
from tests.contracts.test_store_retention import new_finished
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


async def test_a_pass_deletes_ended_tokens_with_the_execution_limits_off(
    runtime: Runtime,
) -> None:
    runtime.settings.retention_max_executions = None
    runtime.settings.retention_days = None
    store = runtime.store
    account = await new_account(store)  # its token expired at T0 + 1 h, months ago
    live = account.token.model_copy(
        update={"id": "tok_live", "token_hash": "live-hash", "expires_at": None}
    )
    await store.create_token(live)
    await retention.retention_pass(runtime)
    assert await store.get_token_by_hash(account.token.token_hash) is None
    assert await store.get_token_by_hash("live-hash") is not None


async def test_a_pass_deletes_all_beyond_the_limit_pausing_between_batches(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However much is due, one pass deletes it, and pauses after each full batch as long as
    the batch took: the store spends at most about half of the pass's time on it."""
    store = runtime.store
    account = await new_account(store)
    workflow = await new_workflow(store, account.id)
    await new_finished(store, account, workflow, 9)
    monkeypatch.setattr(retention, "BATCH", 2)
    runtime.settings.retention_max_executions = 2
    runtime.settings.retention_days = None
    busy: list[float] = []
    prune = store.prune_executions

    async def slow_prune(*args: Any, **kwargs: Any) -> int:
        started = time.monotonic()
        await asyncio.sleep(0.02)  # a store under load
        deleted = await prune(*args, **kwargs)
        busy.append(time.monotonic() - started)
        return deleted

    monkeypatch.setattr(store, "prune_executions", slow_prune)
    started = time.monotonic()
    assert await prune_once(runtime) == 7
    took = time.monotonic() - started
    assert len(busy) == 4  # 2 + 2 + 2 + 1
    assert took >= sum(busy) + sum(busy[:-1]) - 0.001, (took, busy)
    assert await store.keep_horizon(account.id, 2) is None  # exactly the newest two are left
