"""Fair claims: per-tenant concurrency caps and round-robin across tenants, on every backend."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from ipaas.errors import StoreUnavailable
from ipaas.executions.models import Execution, ExecutionStatus
from ipaas.stores import Store
from ipaas.stores.sql import SqlStore
from ipaas.stores.sql.engine import _CLAIM_LOCK_SPACE
from ipaas.tenants.models import TenantLimits
from ipaas.workflows.models import Workflow
from tests.contracts.conftest import POSTGRES_ONLY
from tests.contracts.test_store import (
    TIMEOUT_S,
    Account,
    at,
    claim,
    make_step,
    new_account,
    new_execution,
    new_workflow,
)
from tests.contracts.test_store_retries import deferred


async def claim_next(
    store: Store, limit: int, *, cap: int | None = None, owner: str = "w1"
) -> list[Execution]:
    return await store.claim_next(
        owner=owner,
        now=at(20),
        lease_until=at(50),
        timeout_s=TIMEOUT_S,
        limit=limit,
        tenant_cap=cap,
    )


async def queue(store: Store, acct: Account, wf: Workflow, n: int, *, first: int) -> list[str]:
    """``n`` queued executions, created at ``first``, ``first + 0.01``, ..."""
    return [
        (await new_execution(store, acct.id, wf.id, created_at=at(first + i / 100))).id
        for i in range(n)
    ]


async def finish(store: Store, ex: Execution) -> None:
    assert await store.finish_execution(
        ex.id, owner=ex.lease_owner or "", status=ExecutionStatus.succeeded, error=None,
        finished_at=at(21),
    )  # fmt: skip


@pytest.fixture
async def a(store: Store) -> tuple[Account, Workflow]:
    acct = await new_account(store)
    return acct, await new_workflow(store, acct.id)


@pytest.fixture
async def b(store: Store) -> tuple[Account, Workflow]:
    acct = await new_account(store)
    return acct, await new_workflow(store, acct.id)


class TestCap:
    async def test_claim_next_stops_at_the_default_cap(
        self, store: Store, a: tuple[Account, Workflow]
    ) -> None:
        await queue(store, *a, 10, first=0)
        first = await claim_next(store, 10, cap=3)
        assert len(first) == 3
        assert await claim_next(store, 10, cap=3) == []
        await finish(store, first[0])
        assert len(await claim_next(store, 10, cap=3)) == 1
        assert await store.count_queued(a[0].id) == 6

    async def test_the_tenants_override_wins_both_ways(
        self, store: Store, a: tuple[Account, Workflow], b: tuple[Account, Workflow]
    ) -> None:
        await store.set_tenant_limits(a[0].id, TenantLimits(max_concurrency=1))
        await store.set_tenant_limits(b[0].id, TenantLimits(max_concurrency=5))
        await queue(store, *a, 6, first=0)
        await queue(store, *b, 6, first=1)
        claimed = await claim_next(store, 20, cap=2)
        per_tenant = {acct.id: sum(ex.tenant_id == acct.id for ex in claimed) for acct, _ in (a, b)}
        assert per_tenant == {a[0].id: 1, b[0].id: 5}

    async def test_no_cap_without_default_or_override(
        self, store: Store, a: tuple[Account, Workflow]
    ) -> None:
        await queue(store, *a, 7, first=0)
        assert len(await claim_next(store, 10)) == 7

    async def test_claim_by_id_refused_at_the_cap_and_left_queued(
        self, store: Store, a: tuple[Account, Workflow]
    ) -> None:
        ids = await queue(store, *a, 3, first=0)
        await store.set_tenant_limits(a[0].id, TenantLimits(max_concurrency=2))
        first = [await claim(store, ex_id) for ex_id in ids[:2]]
        assert all(ex is not None for ex in first)
        assert await claim(store, ids[2]) is None
        refused = await store.get_execution(a[0].id, ids[2])
        assert refused is not None
        assert (refused.status, refused.attempt) == (ExecutionStatus.queued, 0)
        assert first[0] is not None
        await finish(store, first[0])
        assert await claim(store, ids[2]) is not None

    async def test_claim_by_id_uses_the_default_cap(
        self, store: Store, a: tuple[Account, Workflow]
    ) -> None:
        ids = await queue(store, *a, 2, first=0)
        kwargs = {"owner": "w1", "now": at(1), "lease_until": at(30), "timeout_s": TIMEOUT_S}
        assert await store.claim_execution(ids[0], **kwargs, tenant_cap=1) is not None
        assert await store.claim_execution(ids[1], **kwargs, tenant_cap=1) is None
        assert await store.claim_execution(ids[1], **kwargs, tenant_cap=2) is not None

    async def test_exact_under_concurrent_claimers(
        self, store: Store, a: tuple[Account, Workflow], b: tuple[Account, Workflow]
    ) -> None:
        ids = await queue(store, *a, 40, first=0)
        await queue(store, *b, 10, first=1)

        async def by_id(ex_id: str) -> list[Execution]:
            ex = await store.claim_execution(
                ex_id, owner="wq", now=at(20), lease_until=at(50), timeout_s=TIMEOUT_S,
                tenant_cap=5,
            )  # fmt: skip
            return [] if ex is None else [ex]

        results = await asyncio.gather(
            *(claim_next(store, 3, cap=5, owner=f"w{n}") for n in range(8)),
            *(by_id(ex_id) for ex_id in ids[::2]),
        )
        claimed = [ex for batch in results for ex in batch]
        assert len({ex.id for ex in claimed}) == len(claimed)
        assert sum(ex.tenant_id == a[0].id for ex in claimed) == 5
        # A claimer skips a tenant another one is claiming for (PostgreSQL): B may lag.
        assert sum(ex.tenant_id == b[0].id for ex in claimed) <= 5
        claimed += await claim_next(store, 20, cap=5)
        assert sum(ex.tenant_id == b[0].id for ex in claimed) == 5
        assert await claim_next(store, 20, cap=5) == []

    async def test_concurrent_claimers_of_one_tenant_wait_rather_than_come_back_empty(
        self, store: Store, a: tuple[Account, Workflow]
    ) -> None:
        # One busy tenant, several workers (PostgreSQL: each claim takes the tenant's lock):
        # a claimer that finds the tenant being claimed elsewhere waits for that claim to
        # end and then takes its own share, instead of returning nothing and polling.
        await queue(store, *a, 24, first=0)
        results = await asyncio.gather(
            *(claim_next(store, 3, cap=None, owner=f"w{n}") for n in range(8))
        )
        assert [len(batch) for batch in results] == [3] * 8
        assert len({ex.id for batch in results for ex in batch}) == 24


@pytest.mark.parametrize("store", [pytest.param("postgres", marks=POSTGRES_ONLY)], indirect=True)
class TestPostgresClaimLock:
    async def test_a_claim_by_id_counts_after_the_lock_is_released(
        self, store: Store, a: tuple[Account, Workflow], postgres_url: str
    ) -> None:
        # A claim by id is one statement (migration 0008). Another claimer holds the
        # tenant's claim lock and commits a claim while ours waits for the lock: our count
        # must include it. Counted in the statement's own snapshot (taken before the lock
        # was granted), it would not, and the tenant would run over its cap.
        assert isinstance(store, SqlStore)
        first, second = await queue(store, *a, 2, first=0)
        engine = create_async_engine(postgres_url, poolclass=NullPool)
        try:
            async with engine.connect() as other:
                await other.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:space, hashtext(:tenant))"),
                    {"space": _CLAIM_LOCK_SPACE, "tenant": a[0].id},
                )
                claim = asyncio.create_task(
                    store.claim_execution(
                        second,
                        owner="w2",
                        now=at(20),
                        lease_until=at(50),
                        timeout_s=TIMEOUT_S,
                        tenant_cap=1,
                    )
                )
                await asyncio.sleep(0.3)
                assert not claim.done(), "the claim did not wait for the tenant's lock"
                await other.execute(
                    sa.text("UPDATE execution SET status = 'running' WHERE id = :id"),
                    {"id": first},
                )
                await other.commit()
                assert await asyncio.wait_for(claim, 10) is None
        finally:
            await engine.dispose()
        # With room (cap 2) it claims, and the lock ends with the statement: a claimer
        # elsewhere takes it at once (a claim left in an open transaction would hold it).
        kwargs = {"owner": "w2", "now": at(20), "lease_until": at(50), "timeout_s": TIMEOUT_S}
        assert await store.claim_execution(second, **kwargs, tenant_cap=2) is not None
        try_lock = sa.text("SELECT pg_try_advisory_xact_lock(:space, hashtext(:tenant))")
        try:
            async with engine.connect() as other:
                taken = await other.scalar(
                    try_lock, {"space": _CLAIM_LOCK_SPACE, "tenant": a[0].id}
                )
                assert taken is True
        finally:
            await engine.dispose()

    async def test_a_failed_tenant_claim_keeps_the_others(
        self,
        store: Store,
        a: tuple[Account, Workflow],
        b: tuple[Account, Workflow],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        # claim_next claims per tenant, one statement each. When one of them fails the
        # rows another claimed are the caller's: they come back, not an error that would
        # leave them running with nobody to run them until the lease expires.
        assert isinstance(store, SqlStore)
        ids = await queue(store, *a, 1, first=0) + await queue(store, *b, 1, first=1)
        db = store._db
        run_write = db.run_write
        calls = 0

        async def second_fails(op: Any, *, one_statement: bool = False) -> Any:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise StoreUnavailable("connection lost")
            return await run_write(op, one_statement=one_statement)

        monkeypatch.setattr(db, "run_write", second_fails)
        claimed = await claim_next(store, 2)
        assert calls == 2
        assert len(claimed) == 1
        # The other tenant's execution is still queued, for the next claim.
        statuses = {}
        for (acct, _), ex_id in zip((a, b), ids, strict=True):
            ex = await store.get_execution(acct.id, ex_id)
            assert ex is not None
            statuses[ex_id] = ex.status
        assert sorted(statuses.values()) == [ExecutionStatus.queued, ExecutionStatus.running]
        assert statuses[claimed[0].id] is ExecutionStatus.running

        async def always_fails(op: Any, *, one_statement: bool = False) -> Any:
            raise StoreUnavailable("connection lost")

        # Nothing claimed and a failure: the caller hears of it.
        monkeypatch.setattr(db, "run_write", always_fails)
        with pytest.raises(StoreUnavailable):
            await claim_next(store, 2)


class TestFinishAndClaimNext:
    """``finish_and_claim_next``: where writes are not applied in order (PostgreSQL) the
    finish also claims the tenant's next due execution when no other tenant has work queued;
    elsewhere it only finishes (the worker's next claim is cheap there)."""

    async def finish_next(
        self, store: Store, ex: Execution, *, owner: str = "w1"
    ) -> tuple[bool, Execution | None]:
        return await store.finish_and_claim_next(
            ex.id, owner=owner, status=ExecutionStatus.succeeded, error=None,
            finished_at=at(21), step=make_step(ex), lease_until=at(51), timeout_s=TIMEOUT_S,
        )  # fmt: skip

    async def test_takes_the_tenants_next_in_the_same_write(
        self, store: Store, a: tuple[Account, Workflow]
    ) -> None:
        ids = await queue(store, *a, 3, first=0)
        [first] = await claim_next(store, 1, cap=1)
        finished, nxt = await self.finish_next(store, first)
        assert finished
        done = await store.get_execution(a[0].id, ids[0])
        assert done is not None
        assert done.status is ExecutionStatus.succeeded
        assert [s.step_id for s in await store.list_step_runs(a[0].id, ids[0])] == ["notify"]
        if store.writes_in_order:
            assert nxt is None
            return
        # The oldest due one, claimed for the same owner; the cap (1) still holds.
        assert nxt is not None
        assert nxt.id == ids[1]
        assert (nxt.status, nxt.lease_owner, nxt.attempt) == (ExecutionStatus.running, "w1", 1)
        assert nxt.lease_expires_at == at(51)
        assert nxt.deadline_at is not None
        assert await claim_next(store, 5, cap=1) == []

    async def test_nothing_when_another_tenant_has_work_queued(
        self, store: Store, a: tuple[Account, Workflow], b: tuple[Account, Workflow]
    ) -> None:
        await queue(store, *a, 2, first=0)
        await queue(store, *b, 1, first=5)
        [first] = await claim_next(store, 1, cap=1)
        assert first.tenant_id == a[0].id
        assert await self.finish_next(store, first) == (True, None)
        # The slot is shared out by claim_next: the tenant with fewer running goes first.
        [nxt] = await claim_next(store, 1, cap=1)
        assert nxt.tenant_id == a[0].id  # A has 0 running, B 0: A's head is older

    async def test_nothing_when_the_lease_is_lost_or_nothing_is_due(
        self, store: Store, a: tuple[Account, Workflow]
    ) -> None:
        ids = await queue(store, *a, 2, first=0)
        [first] = await claim_next(store, 1)
        assert await self.finish_next(store, first, owner="someone else") == (False, None)
        again = await store.get_execution(a[0].id, ids[1])
        assert again is not None
        assert again.status is ExecutionStatus.queued
        # The only other queued one waits for a retry (until at(100)): not due, not claimed.
        [second] = await claim_next(store, 1)
        assert second.id == ids[1]
        await deferred(store, *a, until=100)
        assert await self.finish_next(store, first) == (True, None)

    async def test_concurrent_finishes_each_take_a_different_next(
        self, store: Store, a: tuple[Account, Workflow]
    ) -> None:
        # Finishes of one event-loop iteration go to PostgreSQL as one batch (``RowFetch``):
        # each claims the tenant's next, never one another statement of the batch took,
        # and one whose lease was lost fails alone.
        ids = await queue(store, *a, 12, first=0)
        running = await claim_next(store, 6)
        assert [ex.id for ex in running] == ids[:6]
        results = await asyncio.gather(
            *(self.finish_next(store, ex, owner="w2" if n == 3 else "w1")
              for n, ex in enumerate(running))
        )  # fmt: skip
        assert [finished for finished, _ in results] == [n != 3 for n in range(6)]
        for n, ex in enumerate(running):
            done = await store.get_execution(a[0].id, ex.id)
            assert done is not None
            expected = ExecutionStatus.running if n == 3 else ExecutionStatus.succeeded
            assert done.status is expected
        taken = [nxt.id for _, nxt in results if nxt is not None]
        if store.writes_in_order:
            assert taken == []
            return
        assert len(taken) == 5
        assert sorted(taken) == sorted(ids[6:11])  # the five oldest still queued, once each
        assert all(nxt.lease_owner == "w1" for _, nxt in results if nxt is not None)


class TestRoundRobin:
    async def test_interleaves_tenants_not_fifo(
        self, store: Store, a: tuple[Account, Workflow], b: tuple[Account, Workflow]
    ) -> None:
        flood = await queue(store, *a, 20, first=0)
        few = await queue(store, *b, 3, first=5)
        assert {ex.id for ex in await claim_next(store, 4)} == {*flood[:2], *few[:2]}
        # Two running each: the older head (A's) first, then B's.
        assert [ex.id for ex in await claim_next(store, 2)] == [flood[2], few[2]]
        assert [ex.id for ex in await claim_next(store, 2)] == flood[3:5]

    async def test_fewest_running_first(
        self, store: Store, a: tuple[Account, Workflow], b: tuple[Account, Workflow]
    ) -> None:
        ids = await queue(store, *a, 3, first=0)
        for ex_id in ids:
            assert await claim(store, ex_id) is not None
        await queue(store, *a, 5, first=1)
        later = await queue(store, *b, 5, first=2)
        assert [ex.id for ex in await claim_next(store, 3)] == later[:3]

    async def test_waiting_retries_are_skipped(
        self, store: Store, a: tuple[Account, Workflow], b: tuple[Account, Workflow]
    ) -> None:
        waiting = await deferred(store, b[0], b[1], until=100)
        ids = await queue(store, *a, 2, first=5)
        assert [ex.id for ex in await claim_next(store, 5)] == ids
        ex = await store.get_execution(b[0].id, waiting)
        assert ex is not None
        assert ex.status is ExecutionStatus.queued

    async def test_many_tenants_each_get_one(self, store: Store) -> None:
        tenants = []
        for n in range(6):
            acct = await new_account(store)
            wf = await new_workflow(store, acct.id)
            await queue(store, acct, wf, 4, first=n)
            tenants.append(acct.id)
        claimed = await claim_next(store, 6)
        assert sorted(ex.tenant_id for ex in claimed) == sorted(tenants)
