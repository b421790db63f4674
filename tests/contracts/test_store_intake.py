"""The Store contract for the intake's guard rails: tenant limits and idempotent inserts."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from ipaas.executions.models import Execution, TriggerData
from ipaas.kit.ids import new_id
from ipaas.stores import Store
from ipaas.stores.sql import SqlStore
from ipaas.tenants.models import TenantLimits
from ipaas.workflows.models import Workflow
from tests.contracts.test_store import T0, Account, Q, at, new_account, new_workflow

KEY = "idem:evt_1"


def keyed(acct: Account, wf: Workflow, *, created_at: datetime = T0, key: str = KEY) -> Execution:
    return Execution(
        id=new_id("ex"),
        tenant_id=acct.id,
        workflow_id=wf.id,
        workflow_version=1,
        status=Q,
        trigger=TriggerData(body={"id": "evt_1"}),
        created_at=created_at,
        dedup_key=key,
    )


@pytest.fixture
async def acct(store: Store) -> Account:
    return await new_account(store)


@pytest.fixture
async def wf(store: Store, acct: Account) -> Workflow:
    return await new_workflow(store, acct.id)


class TestTenantLimits:
    async def test_new_tenant_has_no_overrides(self, store: Store, acct: Account) -> None:
        tenant = await store.get_tenant(acct.id)
        assert tenant is not None
        assert tenant.name == "Acme"
        assert tenant.limits == TenantLimits()
        assert await store.get_tenant("tn_missing") is None

    async def test_set_and_clear(self, store: Store, acct: Account) -> None:
        other = await new_account(store)
        limits = TenantLimits(rate_limit=2.5, rate_burst=10, max_queued=100, max_concurrency=3)
        assert await store.set_tenant_limits(acct.id, limits)
        tenant = await store.get_tenant(acct.id)
        assert tenant is not None
        assert tenant.limits == limits
        untouched = await store.get_tenant(other.id)
        assert untouched is not None
        assert untouched.limits == TenantLimits()
        assert await store.set_tenant_limits(acct.id, TenantLimits(max_queued=7))
        tenant = await store.get_tenant(acct.id)
        assert tenant is not None
        assert tenant.limits == TenantLimits(max_queued=7)
        assert not await store.set_tenant_limits("tn_missing", limits)


class TestCreateExecutionOnce:
    async def test_first_inserts_and_a_duplicate_gets_its_id(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        first = keyed(acct, wf)
        assert await store.create_execution_once(first, expired_before=at(-60)) is None
        again = keyed(acct, wf, created_at=at(30))
        assert await store.create_execution_once(again, expired_before=at(-30)) == first.id
        assert await store.get_execution(acct.id, again.id) is None
        stored = await store.get_execution(acct.id, first.id)
        assert stored is not None
        assert stored.dedup_key == KEY
        assert await store.count_queued(acct.id) == 1

    async def test_keys_are_per_workflow(self, store: Store, acct: Account, wf: Workflow) -> None:
        other = await new_workflow(store, acct.id)
        assert await store.create_execution_once(keyed(acct, wf), expired_before=at(-1)) is None
        assert await store.create_execution_once(keyed(acct, other), expired_before=at(-1)) is None
        assert await store.count_queued(acct.id) == 2

    async def test_an_expired_holder_gives_its_key_up(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        first = keyed(acct, wf)
        assert await store.create_execution_once(first, expired_before=at(-60)) is None
        # A day later the window (here: anything before at(10)) has passed.
        later = keyed(acct, wf, created_at=at(86_400))
        assert await store.create_execution_once(later, expired_before=at(10)) is None
        old = await store.get_execution(acct.id, first.id)
        new = await store.get_execution(acct.id, later.id)
        assert old is not None
        assert new is not None
        assert old.dedup_key is None
        assert new.dedup_key == KEY
        # ... and the new holder now deduplicates.
        third = keyed(acct, wf, created_at=at(86_401))
        assert await store.create_execution_once(third, expired_before=at(11)) == later.id

    async def test_a_schedule_key_is_not_an_idempotency_key(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        await store.create_execution(keyed(acct, wf, key="schedule:2026-03-01T12:00:00+00:00"))
        assert await store.create_execution_once(keyed(acct, wf), expired_before=at(-1)) is None

    async def test_concurrent_callers_create_exactly_one(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        executions = [keyed(acct, wf) for _ in range(20)]
        results = await asyncio.gather(
            *(store.create_execution_once(ex, expired_before=at(-1)) for ex in executions)
        )
        winners = [ex.id for ex, result in zip(executions, results, strict=True) if result is None]
        assert len(winners) == 1
        assert set(results) == {None, winners[0]}
        assert await store.count_queued(acct.id) == 1

    async def test_concurrent_callers_after_expiry_create_exactly_one(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        old = keyed(acct, wf)
        assert await store.create_execution_once(old, expired_before=at(-1)) is None
        executions = [keyed(acct, wf, created_at=at(100)) for _ in range(20)]
        results = await asyncio.gather(
            *(store.create_execution_once(ex, expired_before=at(50)) for ex in executions)
        )
        winners = [ex.id for ex, result in zip(executions, results, strict=True) if result is None]
        assert len(winners) == 1
        assert set(results) == {None, winners[0]}
        assert await store.count_queued(acct.id) == 2


async def test_two_stores_on_one_database_create_exactly_one(sql_url: str) -> None:
    """Two processes' stores (two engines and pools) racing on the same key."""
    stores = [SqlStore(sql_url), SqlStore(sql_url)]
    for store in stores:
        await store.startup()
    try:
        acct = await new_account(stores[0])
        wf = await new_workflow(stores[0], acct.id)
        for round_ in range(5):
            key = f"idem:race-{round_}"
            executions = [keyed(acct, wf, key=key) for _ in range(10)]
            results = await asyncio.gather(
                *(
                    stores[n % 2].create_execution_once(ex, expired_before=at(-1))
                    for n, ex in enumerate(executions)
                )
            )
            winners = [
                ex.id for ex, result in zip(executions, results, strict=True) if result is None
            ]
            assert len(winners) == 1, round_
            assert set(results) == {None, winners[0]}
        assert await stores[1].count_queued(acct.id) == 5
    finally:
        for store in stores:
            await store.shutdown()
