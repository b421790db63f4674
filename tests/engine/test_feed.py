from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from ipaas.config import Settings
from ipaas.engine.queue.memory import MemoryQueue
from ipaas.engine.worker import Worker
from ipaas.errors import StoreUnavailable
from ipaas.executions.models import Execution, ExecutionStatus, TriggerData
from ipaas.runtime import Runtime
from ipaas.stores.memory import MemoryStore
from ipaas.webhooks import service as webhook_service
from ipaas.workflows import service as workflow_service
from ipaas.workflows.schemas import WorkflowCreate
from tests.standins.server import StandinServer

T0 = datetime(2026, 3, 1, tzinfo=UTC)


async def queue_echo_calls(runtime: Runtime, standin: StandinServer, count: int) -> list[str]:
    """``count`` queued executions of a one-step workflow that calls the stand-in's echo."""
    workflow = await workflow_service.create(
        runtime.store,
        tenant_id="tn_a",
        data=WorkflowCreate(
            name="w",
            steps=[
                {
                    "id": "c",
                    "type": "http_request",  # type: ignore[list-item]
                    "config": {"url": f"{standin.url}/echo"},
                }
            ],
        ),
    )
    return [
        (
            await webhook_service.start(
                runtime.store,
                runtime.queue,
                workflow_id=workflow.id,
                tenant_id="tn_a",
                version=1,
                trigger=TriggerData(body={"n": n}),
            )
        ).id
        for n in range(count)
    ]


async def test_storm_beyond_the_buffer_is_worked_off_from_the_store(
    settings: Settings, clean_standin: StandinServer
) -> None:
    queue = MemoryQueue(buffer_size=5)
    runtime = Runtime.build(
        settings.model_copy(update={"poll_interval_s": 5.0}), store=MemoryStore(), queue=queue
    )
    await runtime.startup()
    ids = await queue_echo_calls(runtime, clean_standin, 60)
    assert queue.dropped == 55  # the buffer held 5: the rest exist only in the store
    worker = Worker(runtime, concurrency=3)
    started = time.monotonic()
    await worker.start(reaper=False)
    try:
        deadline = time.monotonic() + 20
        while await runtime.store.count_queued() or worker.running:
            assert time.monotonic() < deadline, "storm not worked off"
            await asyncio.sleep(0.01)
    finally:
        await worker.stop(grace_s=5)
        await runtime.shutdown()
    elapsed = time.monotonic() - started
    statuses = {runtime.store.executions[i].status for i in ids}  # type: ignore[attr-defined]
    assert statuses == {ExecutionStatus.succeeded}
    # Store claims run back to back, not one poll interval (5 s) per batch.
    assert elapsed < 5
    assert len(clean_standin.requests(path_prefix="/echo")) == 60


@pytest.mark.parametrize("in_order", [True, False])
async def test_a_settled_execution_hands_its_slot_on_when_its_write_allows(
    settings: Settings, clean_standin: StandinServer, in_order: bool
) -> None:
    """With one slot, and the first execution's finish held: where the store applies writes
    in order, the second execution starts meanwhile (the write of an outcome holds no
    slot, Worker._settled); elsewhere it waits for the write, which a claim beside it
    could not count yet."""
    store = MemoryStore()
    store.writes_in_order = in_order  # type: ignore[misc]
    runtime = Runtime.build(settings.model_copy(update={"tenant_max_concurrency": 0}), store=store)
    await runtime.startup()
    ids = await queue_echo_calls(runtime, clean_standin, 2)
    first_write = asyncio.Event()
    release = asyncio.Event()
    finish = store.finish_execution

    async def slow_first_finish(execution_id: str, **kwargs: object) -> bool:
        if execution_id == ids[0]:
            first_write.set()
            await release.wait()
        return await finish(execution_id, **kwargs)  # type: ignore[arg-type]

    store.finish_execution = slow_first_finish  # type: ignore[method-assign]
    worker = Worker(runtime, concurrency=1)
    await worker.start(reaper=False)
    try:
        await asyncio.wait_for(first_write.wait(), 10)
        deadline = time.monotonic() + 10
        if in_order:
            while store.executions[ids[1]].status is not ExecutionStatus.succeeded:
                assert time.monotonic() < deadline, "the second execution waited for the write"
                await asyncio.sleep(0.01)
            assert worker.running == 0  # the first holds no slot while its write is pending
        else:
            await asyncio.sleep(0.3)
            assert store.executions[ids[1]].status is ExecutionStatus.queued
            assert worker.running == 1
        assert store.executions[ids[0]].status is ExecutionStatus.running
        release.set()
        while {store.executions[i].status for i in ids} != {ExecutionStatus.succeeded}:
            assert time.monotonic() < deadline, "not both succeeded"
            await asyncio.sleep(0.01)
    finally:
        release.set()
        await worker.stop(grace_s=5)
        await runtime.shutdown()


async def test_a_failed_claim_by_id_does_not_drop_the_claims_beside_it(
    settings: Settings, clean_standin: StandinServer
) -> None:
    """A queue read's ids are claimed together, each on its own (PostgreSQL: a statement
    each). When one claim fails, the executions the others claimed are still run by this
    worker, not left running with nobody to run them until their lease expires."""
    store = MemoryStore()
    runtime = Runtime.build(settings.model_copy(update={"tenant_max_concurrency": 0}), store=store)
    await runtime.startup()
    ids = await queue_echo_calls(runtime, clean_standin, 3)
    claim = store.claim_execution

    async def failing_for_the_second(execution_id: str, **kwargs: object) -> object:
        if execution_id == ids[1]:
            raise StoreUnavailable("connection lost")
        return await claim(execution_id, **kwargs)  # type: ignore[arg-type]

    store.claim_execution = failing_for_the_second  # type: ignore[method-assign,assignment]
    worker = Worker(runtime, concurrency=3)
    try:
        claimed = await worker._claim(ids)
        assert [ex.id for ex in claimed] == [ids[0], ids[2]]
        assert store.executions[ids[1]].status is ExecutionStatus.queued
        # Every claim failed: the feed loop hears of the outage.
        with pytest.raises(StoreUnavailable):
            await worker._claim([ids[1]])
    finally:
        await runtime.shutdown()


class _FinishClaimsNext(MemoryStore):
    """A memory store whose finish also claims the next queued execution (as PostgreSQL's
    does), and whose writes are not applied in order (so the worker uses it)."""

    writes_in_order = False  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.claimed_by_finish: list[str] = []

    async def finish_and_claim_next(  # type: ignore[override]
        self, execution_id: str, *, lease_until: object, timeout_s: float, **kwargs: Any
    ) -> tuple[bool, Execution | None]:
        finished = await self.finish_execution(execution_id, **kwargs)
        queued = [e for e in self.executions.values() if e.status is ExecutionStatus.queued]
        if not finished or not queued:
            return finished, None
        nxt = await self.claim_execution(
            min(queued, key=lambda e: e.created_at).id,
            owner=kwargs["owner"],
            now=kwargs["finished_at"],
            lease_until=lease_until,  # type: ignore[arg-type]
            timeout_s=timeout_s,
        )
        if nxt is not None:
            self.claimed_by_finish.append(nxt.id)
        return finished, nxt


async def test_an_execution_a_finish_claimed_takes_the_finished_ones_slot(
    settings: Settings, clean_standin: StandinServer
) -> None:
    """The execution a finish claims runs in the finished one's slot: with one slot, each
    execution after the first is claimed by the finish before it, and never two run at once."""
    store = _FinishClaimsNext()
    runtime = Runtime.build(settings.model_copy(update={"tenant_max_concurrency": 0}), store=store)
    await runtime.startup()
    ids = await queue_echo_calls(runtime, clean_standin, 4)
    worker = Worker(runtime, concurrency=1)
    peak = 0
    await worker.start(reaper=False)
    try:
        deadline = time.monotonic() + 10
        while {store.executions[i].status for i in ids} != {ExecutionStatus.succeeded}:
            assert time.monotonic() < deadline, "not all succeeded"
            peak = max(
                peak, sum(e.status is ExecutionStatus.running for e in store.executions.values())
            )
            await asyncio.sleep(0.001)
    finally:
        await worker.stop(grace_s=5)
        await runtime.shutdown()
    assert store.claimed_by_finish == ids[1:]
    assert peak == 1
    assert worker.running == 0


async def test_ids_read_after_a_finish_took_their_rows_cost_one_read(
    settings: Settings, clean_standin: StandinServer
) -> None:
    """Where finishes claim their tenant's next execution, the queue still holds the jobs of
    the rows they took. The worker drops those with one ``queued_among`` read instead of a
    refused claim per id, and claims the ids still queued."""
    store = _FinishClaimsNext()
    runtime = Runtime.build(settings.model_copy(update={"tenant_max_concurrency": 0}), store=store)
    await runtime.startup()
    claims: list[str] = []
    claim_execution = store.claim_execution

    async def counted(execution_id: str, **kwargs: Any) -> Execution | None:
        claims.append(execution_id)
        return await claim_execution(execution_id, **kwargs)

    store.claim_execution = counted  # type: ignore[method-assign]
    try:
        ids = await queue_echo_calls(runtime, clean_standin, 4)
        worker = Worker(runtime, concurrency=4)
        # Taken from the store already, as a finish's claim would have: only ids[3] is queued.
        for taken in ids[:3]:
            assert await claim_execution(taken, owner="other", now=T0, lease_until=T0, timeout_s=60)
        claimed = await worker._claim(ids)
        assert [ex.id for ex in claimed] == [ids[3]]
        assert claims == [ids[3]]
        assert worker._prefer_store  # refused ids: the store is asked first next time
    finally:
        await runtime.shutdown()
