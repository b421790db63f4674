"""The Store contract for failure alerts: every statement that records a failure marks it
pending, and settling creates each failure's alert at most once (``engine/alerts.py``)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from ipaas.executions.models import Execution, ExecutionStatus, StepStatus, TriggerData
from ipaas.kit.ids import new_id
from ipaas.stores import Store
from ipaas.stores.base import AlertWindow, PendingAlert, PendingDigest
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


async def settle(
    store: Store, alerts: list[PendingAlert], *, now: float = 10, interval_s: float = 0
) -> list[Execution]:
    return await store.settle_alerts(alerts, now=at(now), interval=timedelta(seconds=interval_s))


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
        assert await settle(store, [PendingAlert(read, alert)]) == [alert]
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
        assert await settle(store, [PendingAlert(read, None)]) == []
        assert await pending_ids(store) == []

    async def test_a_failure_settled_twice_alerts_once(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        target = await new_workflow(store, acct.id)
        failed = await finished(store, acct, wf, F)
        [read] = await store.pending_alerts(limit=10)
        first = alert_of(failed, target.id)
        second = alert_of(failed, target.id)
        assert await settle(store, [PendingAlert(read, first)]) == [first]
        assert await settle(store, [PendingAlert(read, second)]) == []
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
        created = await asyncio.gather(*(settle(store, p) for p in passes))
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
        assert await settle(store, [PendingAlert(read, alert_of(failed, target.id))]) == []
        [again] = await store.pending_alerts(limit=10)
        assert (again.id, again.error, again.finished_at) == (failed.id, "again", at(4))


class TestPacing:
    """With an interval, a workflow's failures alert at most once per interval; the ones in
    between are held in its window and sent as one digest when the interval is up."""

    async def failures(
        self, store: Store, acct: Account, wf: Workflow, n: int
    ) -> list[PendingAlert]:
        """``n`` new failures of ``wf`` (with those of it still pending), each with an
        alert."""
        target = await new_workflow(store, acct.id)
        for i in range(n):
            await finished(store, acct, wf, F, end=2 + i)
        read = [ex for ex in await store.pending_alerts(limit=100) if ex.workflow_id == wf.id]
        return [PendingAlert(ex, alert_of(ex, target.id)) for ex in read]

    async def test_the_first_alerts_at_once_the_rest_are_held(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        alerts = await self.failures(store, acct, wf, 3)
        assert await settle(store, alerts, now=10, interval_s=60) == [alerts[0].alert]
        assert await pending_ids(store) == []  # all three settled
        assert await store.due_alert_digests(last_before=at(9), limit=10) == []
        [window] = await store.due_alert_digests(last_before=at(10), limit=10)
        assert window == AlertWindow(wf.id, acct.id, at(10), 2, alerts[2].failed.id)

    async def test_the_digest_goes_out_once_and_starts_the_next_interval(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        alerts = await self.failures(store, acct, wf, 2)
        await settle(store, alerts, now=10, interval_s=60)
        [window] = await store.due_alert_digests(last_before=at(70), limit=10)
        digest = alert_of(alerts[1].failed, alerts[1].alert.workflow_id)  # type: ignore[union-attr]
        twice = alert_of(alerts[1].failed, alerts[1].alert.workflow_id)  # type: ignore[union-attr]
        assert await store.settle_alert_digests([PendingDigest(window, digest)], now=at(70)) == [
            digest
        ]
        assert await store.settle_alert_digests([PendingDigest(window, twice)], now=at(71)) == []
        assert await store.get_execution(acct.id, digest.id) is not None
        assert await store.get_execution(acct.id, twice.id) is None
        assert await store.due_alert_digests(last_before=at(1000), limit=10) == []
        # The digest was an alert: a failure within an interval of it is held ...
        [soon] = await self.failures(store, acct, wf, 1)
        assert await settle(store, [soon], now=100, interval_s=60) == []
        [held] = await store.due_alert_digests(last_before=at(70), limit=10)
        assert (held.held, held.held_execution_id) == (1, soon.failed.id)
        # ... and once its digest is out, one an interval after it alerts at once.
        assert await store.settle_alert_digests([PendingDigest(held, None)], now=at(130)) == []
        [later] = await self.failures(store, acct, wf, 1)
        assert await settle(store, [later], now=190, interval_s=60) == [later.alert]

    async def test_held_failures_go_out_in_the_digest_not_before(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        """An interval after the last alert, a new failure joins the held ones: the window
        reopens only by its digest, which then counts every one of them."""
        alerts = await self.failures(store, acct, wf, 2)
        await settle(store, alerts, now=10, interval_s=60)
        [late] = await self.failures(store, acct, wf, 1)
        assert await settle(store, [late], now=500, interval_s=60) == []
        [window] = await store.due_alert_digests(last_before=at(500), limit=10)
        assert (window.held, window.held_execution_id) == (2, late.failed.id)

    async def test_a_failure_held_since_the_read_waits_for_the_next_pass(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        alerts = await self.failures(store, acct, wf, 2)
        await settle(store, alerts, now=10, interval_s=60)
        [seen] = await store.due_alert_digests(last_before=at(70), limit=10)
        [another] = await self.failures(store, acct, wf, 1)
        assert await settle(store, [another], now=69, interval_s=60) == []
        stale = alert_of(another.failed, "wf_x")
        assert await store.settle_alert_digests([PendingDigest(seen, stale)], now=at(70)) == []
        [now_due] = await store.due_alert_digests(last_before=at(70), limit=10)
        assert (now_due.held, now_due.held_execution_id) == (2, another.failed.id)

    async def test_each_workflow_has_its_own_window(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        other = await new_workflow(store, acct.id)
        mine = await self.failures(store, acct, wf, 1)
        theirs = await self.failures(store, acct, other, 1)
        created = await settle(store, mine + theirs, now=10, interval_s=60)
        assert created == [mine[0].alert, theirs[0].alert]

    async def test_a_failure_without_an_alert_is_not_counted(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        [first, second] = await self.failures(store, acct, wf, 2)
        assert await settle(store, [PendingAlert(first.failed, None)], now=10, interval_s=60) == []
        assert await settle(store, [second], now=11, interval_s=60) == [second.alert]
        assert await store.due_alert_digests(last_before=at(1000), limit=10) == []

    async def test_passes_racing_alert_once_and_hold_the_rest(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        """Three processes' passes settle the same five failures (each with alerts of its
        own) at once: one alert in all, four failures held."""
        alerts = await self.failures(store, acct, wf, 5)
        passes = [[PendingAlert(a.failed, alert_of(a.failed, "wf_t")) for a in alerts]] * 3
        created = await asyncio.gather(
            *(settle(store, p, now=10 + i, interval_s=60) for i, p in enumerate(passes))
        )
        assert sum(len(batch) for batch in created) == 1
        [window] = await store.due_alert_digests(last_before=at(1000), limit=10)
        assert window.held == 4

    async def test_passes_racing_for_one_digest_send_it_once(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        alerts = await self.failures(store, acct, wf, 3)
        await settle(store, alerts, now=10, interval_s=60)
        [window] = await store.due_alert_digests(last_before=at(70), limit=10)
        digests = [[PendingDigest(window, alert_of(alerts[2].failed, "wf_t"))] for _ in range(3)]
        created = await asyncio.gather(
            *(store.settle_alert_digests(d, now=at(70)) for d in digests)
        )
        assert sum(len(batch) for batch in created) == 1

    async def test_oldest_first_and_the_limit(self, store: Store, acct: Account) -> None:
        workflows = [await new_workflow(store, acct.id) for _ in range(3)]
        for i, w in enumerate(reversed(workflows)):
            await settle(store, await self.failures(store, acct, w, 2), now=10 + i, interval_s=60)
        due = await store.due_alert_digests(last_before=at(100), limit=2)
        assert [w.workflow_id for w in due] == [workflows[2].id, workflows[1].id]


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
