"""The Store contract for schedules: ``dedup_key`` uniqueness and the scheduled-workflow list."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from ipaas.executions.models import Execution, TriggerData
from ipaas.kit.ids import new_id
from ipaas.stores import DuplicateError, Store
from ipaas.stores.base import ScheduledWorkflow
from ipaas.workflows.models import Trigger, Workflow
from tests.contracts.test_store import T0, Account, Q, at, new_account, new_workflow

SCHEDULE = {"type": "schedule", "cron": "*/5 * * * *", "timezone": "Europe/Berlin"}


def keyed(tenant_id: str, workflow_id: str, key: str | None) -> Execution:
    return Execution(
        id=new_id("ex"),
        tenant_id=tenant_id,
        workflow_id=workflow_id,
        workflow_version=1,
        status=Q,
        trigger=TriggerData(type="schedule", body={"scheduled_for": "x"}),
        created_at=T0,
        dedup_key=key,
    )


async def scheduled(
    store: Store, tenant_id: str, *, active: bool = True, created_at: datetime = T0
) -> Workflow:
    workflow = await new_workflow(store, tenant_id, created_at=created_at)
    workflow.trigger = Trigger.model_validate(SCHEDULE)
    workflow.active = active
    assert await store.update_workflow(workflow, new_version=False)
    return workflow


@pytest.fixture
async def acct(store: Store) -> Account:
    return await new_account(store)


class TestDedupKey:
    async def test_round_trip(self, store: Store, acct: Account) -> None:
        wf = await new_workflow(store, acct.id)
        ex = keyed(acct.id, wf.id, "schedule:2026-03-01T12:00:00+00:00")
        await store.create_execution(ex)
        got = await store.get_execution(acct.id, ex.id)
        assert got is not None
        assert got.dedup_key == "schedule:2026-03-01T12:00:00+00:00"
        assert got.model_dump() == ex.model_dump()

    async def test_same_key_same_workflow_is_refused(self, store: Store, acct: Account) -> None:
        wf = await new_workflow(store, acct.id)
        first = keyed(acct.id, wf.id, "k1")
        await store.create_execution(first)
        second = keyed(acct.id, wf.id, "k1")
        with pytest.raises(DuplicateError):
            await store.create_execution(second)
        # Nothing of the refused one was written; the first is untouched.
        assert await store.get_execution(acct.id, second.id) is None
        page = await store.list_executions(acct.id, workflow_id=wf.id)
        assert [ex.id for ex in page.items] == [first.id]
        assert await store.count_queued() == 1

    async def test_refused_even_when_the_first_is_terminal(
        self, store: Store, acct: Account
    ) -> None:
        wf = await new_workflow(store, acct.id)
        first = keyed(acct.id, wf.id, "k1")
        await store.create_execution(first)
        assert await store.request_cancel(acct.id, first.id, now=at(1)) is not None
        with pytest.raises(DuplicateError):
            await store.create_execution(keyed(acct.id, wf.id, "k1"))

    async def test_same_key_other_workflow_or_tenant_is_fine(
        self, store: Store, acct: Account
    ) -> None:
        other = await new_account(store)
        wf_a = await new_workflow(store, acct.id)
        wf_b = await new_workflow(store, acct.id)
        wf_c = await new_workflow(store, other.id)
        await store.create_execution(keyed(acct.id, wf_a.id, "k1"))
        await store.create_execution(keyed(acct.id, wf_b.id, "k1"))
        await store.create_execution(keyed(other.id, wf_c.id, "k1"))
        await store.create_execution(keyed(acct.id, wf_a.id, "k2"))
        assert await store.count_queued() == 4

    async def test_null_keys_never_collide(self, store: Store, acct: Account) -> None:
        wf = await new_workflow(store, acct.id)
        for _ in range(3):
            await store.create_execution(keyed(acct.id, wf.id, None))
        assert await store.count_queued(acct.id) == 3

    async def test_concurrent_inserts_have_one_winner(self, store: Store, acct: Account) -> None:
        wf = await new_workflow(store, acct.id)
        attempts = [keyed(acct.id, wf.id, "k1") for _ in range(5)]
        results = await asyncio.gather(
            *(store.create_execution(ex) for ex in attempts), return_exceptions=True
        )
        assert sum(r is None for r in results) == 1
        assert all(isinstance(r, DuplicateError) for r in results if r is not None)
        assert await store.count_queued(acct.id) == 1


class TestListScheduledWorkflows:
    async def test_active_schedules_of_every_tenant_oldest_first(
        self, store: Store, acct: Account
    ) -> None:
        other = await new_account(store)
        first = await scheduled(store, acct.id, created_at=at(1))
        second = await scheduled(store, other.id, created_at=at(2))
        await scheduled(store, acct.id, active=False, created_at=at(3))  # paused
        await new_workflow(store, acct.id, created_at=at(4))  # a webhook workflow
        manual = await new_workflow(store, other.id, created_at=at(5))
        manual.trigger = Trigger(type="manual")
        assert await store.update_workflow(manual, new_version=False)

        found = await store.list_scheduled_workflows()

        assert [wf.id for wf in found] == [first.id, second.id]
        assert [wf.tenant_id for wf in found] == [acct.id, other.id]
        # What the scheduler needs, not the steps.
        assert found[0] == ScheduledWorkflow(
            first.id, first.tenant_id, first.version, first.trigger, first.updated_at
        )
        assert found[0].trigger.schedule.cron == "*/5 * * * *"
        assert found[0].trigger.schedule.timezone == "Europe/Berlin"

    async def test_deleted_and_deactivated_drop_out(self, store: Store, acct: Account) -> None:
        gone = await scheduled(store, acct.id)
        paused = await scheduled(store, acct.id)
        assert await store.delete_workflow(acct.id, gone.id)
        paused.active = False
        assert await store.update_workflow(paused, new_version=False)
        assert await store.list_scheduled_workflows() == []

    async def test_empty(self, store: Store) -> None:
        assert await store.list_scheduled_workflows() == []
        assert await store.scheduled_workflow_stamps() == []
        assert await store.list_scheduled_workflows(ids=["wf_nope"]) == []

    async def test_stamps_and_reads_by_id(self, store: Store, acct: Account) -> None:
        """What the scheduler reads each second (ids and ``updated_at``, in the list's
        order), and the schedules it reads whole by id: only active schedules, oldest
        first, however many ids (more than one statement's worth)."""
        other = await new_account(store)
        first = await scheduled(store, acct.id, created_at=at(1))
        second = await scheduled(store, other.id, created_at=at(2))
        third = await scheduled(store, acct.id, created_at=at(3))
        paused = await scheduled(store, acct.id, active=False, created_at=at(4))
        webhook = await new_workflow(store, acct.id, created_at=at(5))

        assert await store.scheduled_workflow_stamps() == [
            (first.id, first.updated_at),
            (second.id, second.updated_at),
            (third.id, third.updated_at),
        ]
        whole = await store.list_scheduled_workflows()
        ghosts = [f"wf_ghost{n}" for n in range(1200)]
        found = await store.list_scheduled_workflows(
            ids=[third.id, *ghosts, paused.id, webhook.id, first.id]
        )
        assert found == [whole[0], whole[2]]
        assert await store.list_scheduled_workflows(ids=[]) == []

        third.trigger = Trigger.model_validate(SCHEDULE | {"cron": "0 * * * *"})
        third.updated_at = at(9)
        assert await store.update_workflow(third, new_version=True)
        assert (await store.scheduled_workflow_stamps())[2] == (third.id, at(9))
        (reread,) = await store.list_scheduled_workflows(ids=[third.id])
        assert (reread.updated_at, reread.trigger.schedule.cron) == (at(9), "0 * * * *")
