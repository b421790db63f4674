"""Store methods behind /metrics and /api/stats, and the stored trace context."""

from __future__ import annotations

from ipaas.executions.models import ExecutionStatus
from ipaas.stores import Store
from ipaas.workflows.models import Workflow
from tests.contracts.test_store import (
    T0,
    Account,
    acct,
    at,
    claim,
    new_account,
    new_execution,
    new_workflow,
    wf,
)

__all__ = ["acct", "wf"]  # the shared fixtures, re-used here

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def test_trace_context_round_trips(store: Store, acct: Account, wf: Workflow) -> None:
    execution = await new_execution(store, acct.id, wf.id)
    assert execution.trace_context is None
    traced = execution.model_copy(update={"id": execution.id + "t", "trace_context": TRACEPARENT})
    await store.create_execution(traced)
    got = await store.get_execution(acct.id, traced.id)
    assert got is not None
    assert got.trace_context == TRACEPARENT
    claimed = await claim(store, traced.id)
    assert claimed is not None
    assert claimed.trace_context == TRACEPARENT


class TestQueueStats:
    async def test_empty(self, store: Store) -> None:
        stats = await store.queue_stats(now=T0)
        assert (stats.queued, stats.oldest_due_at, stats.lease_expired) == (0, None, 0)

    async def test_counts_every_tenant(self, store: Store, acct: Account, wf: Workflow) -> None:
        other = await new_account(store)
        wf_other = await new_workflow(store, other.id)
        await new_execution(store, acct.id, wf.id, created_at=at(5))
        await new_execution(store, other.id, wf_other.id, created_at=at(3))
        running = await new_execution(store, acct.id, wf.id, created_at=at(1))
        await claim(store, running.id, now=at(1), lease_s=10)
        stats = await store.queue_stats(now=at(20))
        assert stats.queued == 2
        assert stats.oldest_due_at == at(3)
        assert stats.lease_expired == 1
        assert (await store.queue_stats(now=at(2))).lease_expired == 0


class TestListFinished:
    async def test_scoped_window_newest_first(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        other = await new_account(store)
        wf_other = await new_workflow(store, other.id)
        for n, (tenant, workflow) in enumerate(
            [(acct.id, wf.id), (acct.id, wf.id), (other.id, wf_other.id), (acct.id, wf.id)]
        ):
            ex = await new_execution(store, tenant, workflow)
            await claim(store, ex.id, now=at(n))
            status = ExecutionStatus.failed if n == 1 else ExecutionStatus.succeeded
            assert await store.finish_execution(
                ex.id, owner="w1", status=status, error=None, finished_at=at(n + 2)
            )
        queued = await new_execution(store, acct.id, wf.id)
        await store.request_cancel(acct.id, queued.id, now=at(10))
        got = await store.list_finished(acct.id, since=at(3), limit=10)
        assert [(f.status, f.finished_at, f.duration_s) for f in got] == [
            (ExecutionStatus.cancelled, at(10), 0.0),
            (ExecutionStatus.succeeded, at(5), 2.0),
            (ExecutionStatus.failed, at(3), 2.0),
        ]
        assert len(await store.list_finished(acct.id, since=at(0), limit=2)) == 2
        assert [
            f.finished_at for f in await store.list_finished(other.id, since=at(0), limit=9)
        ] == [at(4)]
