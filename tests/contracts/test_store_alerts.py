"""The Store contract for failure alerts: every statement that records a failure marks it
pending, and settling creates each failure's alert at most once (``engine/alerts.py``)."""

from __future__ import annotations

import asyncio

import pytest

from ipaas.executions.models import Execution, ExecutionStatus, StepStatus, TriggerData
from ipaas.kit.ids import new_id
from ipaas.stores import Store
from ipaas.stores.base import PendingAlert
from ipaas.workflows.models import Workflow
from tests.contracts.test_store import (
    TIMEOUT_S,
    Account,
    Q,
    at,
    claim,
    make_step,
    make_workflow,
    new_account,
    new_execution,
    new_workflow,
)

F, TO = ExecutionStatus.failed, ExecutionStatus.timed_out


@pytest.fixture
async def acct(store: Store) -> Account:
    return await new_account(store)


@pytest.fixture
async def wf(store: Store, acct: Account) -> Workflow:
    return await new_workflow(store, acct.id)


async def finished(
    store: Store, acct: Account, wf: Workflow, status: ExecutionStatus, *, end: float = 2
) -> Execution:
    """An execution claimed at ``at(1)`` and finished ``status`` at ``at(end)``."""
    ex = await new_execution(store, acct.id, wf.id)
    assert await claim(store, ex.id, now=at(1)) is not None
    assert await store.finish_execution(
        ex.id, owner="w1", status=status, error="boom", finished_at=at(end)
    )
    return ex


def alert_of(failed: Execution, error_workflow_id: str) -> Execution:
    return Execution(
        id=new_id("ex"),
        tenant_id=failed.tenant_id,
        workflow_id=error_workflow_id,
        workflow_version=1,
        status=Q,
        trigger=TriggerData(type="error", body={"execution": {"id": failed.id}}),
        created_at=at(10),
    )


async def pending_ids(store: Store) -> list[str]:
    return [ex.id for ex in await store.pending_alerts(limit=100)]


class TestMarkedPending:
    async def test_a_failed_or_timed_out_finish_and_nothing_else(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        failed = await finished(store, acct, wf, F, end=2)
        timed_out = await finished(store, acct, wf, TO, end=3)
        for status in (ExecutionStatus.succeeded, ExecutionStatus.cancelled):
            await finished(store, acct, wf, status)
        assert await pending_ids(store) == [failed.id, timed_out.id]  # oldest first
        [read, _] = await store.pending_alerts(limit=100)
        assert (read.status, read.error, read.finished_at) == (F, "boom", at(2))

    async def test_a_finish_with_its_step(self, store: Store, acct: Account, wf: Workflow) -> None:
        ex = await new_execution(store, acct.id, wf.id)
        await claim(store, ex.id, now=at(1))
        assert await store.finish_execution(
            ex.id,
            owner="w1",
            status=F,
            error="HTTP 500",
            finished_at=at(2),
            step=make_step(ex, status=StepStatus.failed),
        )
        assert await pending_ids(store) == [ex.id]

    async def test_a_finish_that_claims_the_next(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        """PostgreSQL's finish-and-claim is a statement of its own (batched with others)."""
        ex = await new_execution(store, acct.id, wf.id)
        nxt = await new_execution(store, acct.id, wf.id, created_at=at(0.5))
        await claim(store, ex.id, now=at(1))
        written, _ = await store.finish_and_claim_next(
            ex.id,
            owner="w1",
            status=F,
            error="HTTP 500",
            finished_at=at(2),
            step=make_step(ex, status=StepStatus.failed),
            lease_until=at(32),
            timeout_s=TIMEOUT_S,
        )
        assert written
        assert await pending_ids(store) == [ex.id]
        assert nxt.id not in await pending_ids(store)

    async def test_a_timeout_by_the_reaper(self, store: Store, acct: Account, wf: Workflow) -> None:
        ex = await new_execution(store, acct.id, wf.id)
        await claim(store, ex.id, now=at(1), lease_s=5)
        reaped = await store.reap(now=at(1 + TIMEOUT_S + 1))
        assert reaped.timed_out == [ex.id]
        assert await pending_ids(store) == [ex.id]

    async def test_not_a_finish_refused_to_another_owner(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        ex = await new_execution(store, acct.id, wf.id)
        await claim(store, ex.id, now=at(1))
        assert not await store.finish_execution(
            ex.id, owner="w2", status=F, error="boom", finished_at=at(2)
        )
        assert await pending_ids(store) == []

    async def test_a_retry_before_the_alert_clears_it(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        """The retry's own failure, if any, alerts; until then nothing is pending (a pass
        could not settle a queued row by its ``finished_at``, and would read it again and
        again)."""
        failed = await finished(store, acct, wf, F)
        assert await store.requeue_execution(acct.id, failed.id, statuses=[F]) is not None
        assert await pending_ids(store) == []

    async def test_the_limit(self, store: Store, acct: Account, wf: Workflow) -> None:
        first = await finished(store, acct, wf, F, end=2)
        await finished(store, acct, wf, F, end=3)
        assert [ex.id for ex in await store.pending_alerts(limit=1)] == [first.id]


class TestSettle:
    async def test_creates_the_alert_queued_and_clears_the_failure(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        target = await new_workflow(store, acct.id)
        failed = await finished(store, acct, wf, F)
        [read] = await store.pending_alerts(limit=10)
        alert = alert_of(failed, target.id)
        assert await store.settle_alerts([PendingAlert(read, alert)]) == [alert]
        assert await pending_ids(store) == []
        stored = await store.get_execution(acct.id, alert.id)
        assert stored is not None
        assert (stored.status, stored.workflow_id, stored.trigger.type) == (Q, target.id, "error")
        assert stored.trigger.body == {"execution": {"id": failed.id}}
        # Queued like any other: a worker claims it from the store.
        assert await claim(store, alert.id, now=at(11)) is not None

    async def test_without_an_alert_only_clears(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        await finished(store, acct, wf, F)
        [read] = await store.pending_alerts(limit=10)
        assert await store.settle_alerts([PendingAlert(read, None)]) == []
        assert await pending_ids(store) == []

    async def test_a_failure_settled_twice_alerts_once(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        target = await new_workflow(store, acct.id)
        failed = await finished(store, acct, wf, F)
        [read] = await store.pending_alerts(limit=10)
        first = alert_of(failed, target.id)
        second = alert_of(failed, target.id)
        assert await store.settle_alerts([PendingAlert(read, first)]) == [first]
        assert await store.settle_alerts([PendingAlert(read, second)]) == []
        assert await store.get_execution(acct.id, second.id) is None

    async def test_passes_racing_for_the_same_failures_alert_each_once(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        """Every worker process runs the pass: both read the same pending failures."""
        target = await new_workflow(store, acct.id)
        for n in range(5):
            await finished(store, acct, wf, F, end=2 + n)
        read = await store.pending_alerts(limit=10)
        passes = [[PendingAlert(ex, alert_of(ex, target.id)) for ex in read] for _ in range(3)]
        created = await asyncio.gather(*(store.settle_alerts(p) for p in passes))
        alerted = sorted(
            alert.trigger.body["execution"]["id"] for batch in created for alert in batch
        )
        assert alerted == sorted(ex.id for ex in read)
        page = await store.list_executions(acct.id, workflow_id=target.id, limit=50)
        assert len(page.items) == 5

    async def test_a_failure_since_the_read_stays_pending(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        """Retried and failed again between the pass's read and its settle: the pass's alert
        is for the first failure; the second one is still to be dealt with."""
        target = await new_workflow(store, acct.id)
        failed = await finished(store, acct, wf, F, end=2)
        [read] = await store.pending_alerts(limit=10)
        assert await store.requeue_execution(acct.id, failed.id, statuses=[F]) is not None
        await claim(store, failed.id, now=at(3))
        assert await store.finish_execution(
            failed.id, owner="w1", status=F, error="again", finished_at=at(4)
        )
        assert await store.settle_alerts([PendingAlert(read, alert_of(failed, target.id))]) == []
        [again] = await store.pending_alerts(limit=10)
        assert (again.id, again.error, again.finished_at) == (failed.id, "again", at(4))


class TestErrorWorkflowSetting:
    async def test_saved_read_and_changed(self, store: Store, acct: Account) -> None:
        target = await new_workflow(store, acct.id)
        wf = make_workflow(acct.id).model_copy(update={"error_workflow_id": target.id})
        await store.create_workflow(wf)
        stored = await store.get_workflow(acct.id, wf.id)
        assert stored is not None
        assert stored.error_workflow_id == target.id
        [listed] = [w for w in await store.list_workflows(acct.id) if w.id == wf.id]
        assert listed.error_workflow_id == target.id
        cleared = stored.model_copy(update={"error_workflow_id": None, "updated_at": at(5)})
        assert await store.update_workflow(
            cleared, new_version=False, base_updated_at=stored.updated_at
        )
        again = await store.get_workflow(acct.id, wf.id)
        assert again is not None
        assert again.error_workflow_id is None
