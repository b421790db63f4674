"""The Store contract for retries and circuit breakers."""

from __future__ import annotations

import asyncio

import pytest

from ipaas.circuits.models import CircuitState
from ipaas.executions.models import ExecutionStatus, StepStatus
from ipaas.stores import Store
from ipaas.workflows.models import Workflow
from tests.contracts.test_store import (
    TIMEOUT_S,
    Account,
    Q,
    R,
    assert_utc,
    at,
    claim,
    make_step,
    new_account,
    new_execution,
    new_workflow,
)

CLOSED, OPEN, HALF_OPEN = CircuitState.closed, CircuitState.open, CircuitState.half_open


@pytest.fixture
async def acct(store: Store) -> Account:
    return await new_account(store)


@pytest.fixture
async def wf(store: Store, acct: Account) -> Workflow:
    return await new_workflow(store, acct.id)


async def deferred(
    store: Store, acct: Account, wf: Workflow, *, until: float, owner: str = "w1"
) -> str:
    """An execution claimed at ``at(1)`` whose first step failed and waits until ``at(until)``."""
    ex = await new_execution(store, acct.id, wf.id)
    assert await claim(store, ex.id, owner=owner, now=at(1)) is not None
    step = make_step(ex, status=StepStatus.failed).model_copy(
        update={"error": "HTTP 503", "status_code": 503, "next_attempt_at": at(until)}
    )
    assert await store.defer_execution(
        ex.id, owner=owner, next_attempt_at=at(until), step=step, now=at(2)
    )
    return ex.id


class TestDefer:
    async def test_back_to_queued_with_the_step_recorded(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        ex_id = await deferred(store, acct, wf, until=10)
        ex = await store.get_execution(acct.id, ex_id)
        assert ex is not None
        assert (ex.status, ex.next_attempt_at, ex.lease_owner) == (Q, at(10), None)
        assert ex.finished_at is None
        assert_utc(ex)
        [step] = await store.list_step_runs(acct.id, ex_id)
        assert (step.status, step.status_code, step.next_attempt_at) == (
            StepStatus.failed,
            503,
            at(10),
        )
        assert_utc(step)

    async def test_only_the_owner_defers(self, store: Store, acct: Account, wf: Workflow) -> None:
        ex = await new_execution(store, acct.id, wf.id)
        await claim(store, ex.id, owner="w1", now=at(1))
        step = make_step(ex, status=StepStatus.failed)
        assert not await store.defer_execution(
            ex.id, owner="w2", next_attempt_at=at(10), step=step, now=at(2)
        )
        assert await store.list_step_runs(acct.id, ex.id) == []
        stored = await store.get_execution(acct.id, ex.id)
        assert stored is not None
        assert stored.status is R

    async def test_a_requested_cancel_wins(self, store: Store, acct: Account, wf: Workflow) -> None:
        ex = await new_execution(store, acct.id, wf.id)
        await claim(store, ex.id, owner="w1", now=at(1))
        await store.request_cancel(acct.id, ex.id, now=at(2))
        step = make_step(ex, status=StepStatus.failed)
        assert await store.defer_execution(
            ex.id, owner="w1", next_attempt_at=at(10), step=step, now=at(3)
        )
        stored = await store.get_execution(acct.id, ex.id)
        assert stored is not None
        assert (stored.status, stored.next_attempt_at, stored.finished_at) == (
            ExecutionStatus.cancelled,
            None,
            at(3),
        )

    async def test_not_claimed_before_it_is_due(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        ex_id = await deferred(store, acct, wf, until=10)
        assert await claim(store, ex_id, owner="w2", now=at(9)) is None
        lease = at(40)
        assert (
            await store.claim_next(
                owner="w2", now=at(9), lease_until=lease, timeout_s=TIMEOUT_S, limit=10
            )
            == []
        )
        assert await store.queued_ids(limit=10) == []
        # Due, but claim_next reads only the rows ready to run (never past the waiting
        # ones): the due pass makes it ready.
        assert (
            await store.claim_next(
                owner="w2", now=at(10), lease_until=lease, timeout_s=TIMEOUT_S, limit=10
            )
            == []
        )
        assert await store.take_due_retries(now=at(10), limit=10) == [ex_id]
        claimed = await store.claim_next(
            owner="w2", now=at(10), lease_until=lease, timeout_s=TIMEOUT_S, limit=10
        )
        assert [c.id for c in claimed] == [ex_id]
        # Claimed: no longer waiting; the attempt count and the deadline carry on.
        assert (claimed[0].next_attempt_at, claimed[0].attempt) == (None, 2)
        assert claimed[0].deadline_at == at(1 + TIMEOUT_S)

    async def test_a_delay_moves_the_deadline_with_the_wait(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        """A delay step's deferral: the deadline moves (the wait does not count against the
        timeout); the reaper leaves it alone past the old one, and a claim keeps the new."""
        ex = await new_execution(store, acct.id, wf.id)
        assert await claim(store, ex.id, owner="w1", now=at(1)) is not None
        step = make_step(ex).model_copy(update={"next_attempt_at": at(500)})
        moved = at(1 + TIMEOUT_S + 498)
        assert await store.defer_execution(
            ex.id, owner="w1", next_attempt_at=at(500), step=step, now=at(2), deadline_at=moved
        )
        stored = await store.get_execution(acct.id, ex.id)
        assert stored is not None
        assert (stored.status, stored.next_attempt_at, stored.deadline_at) == (Q, at(500), moved)
        assert_utc(stored)
        assert (await store.reap(now=at(1 + TIMEOUT_S + 10))).timed_out == []
        claimed = await claim(store, ex.id, owner="w2", now=at(500))
        assert claimed is not None
        assert claimed.deadline_at == moved
        [recorded] = await store.list_step_runs(acct.id, ex.id)
        assert (recorded.status, recorded.next_attempt_at) == (StepStatus.succeeded, at(500))

    async def test_claim_by_id_once_due(self, store: Store, acct: Account, wf: Workflow) -> None:
        ex_id = await deferred(store, acct, wf, until=10)
        claimed = await claim(store, ex_id, owner="w2", now=at(11))
        assert claimed is not None
        assert claimed.next_attempt_at is None

    async def test_a_waiting_execution_is_cancelled_at_once(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        ex_id = await deferred(store, acct, wf, until=10)
        cancelled = await store.request_cancel(acct.id, ex_id, now=at(3))
        assert cancelled is not None
        assert cancelled.status is ExecutionStatus.cancelled


class TestWaiting:
    """Executions that wait (a retry's backoff, a delay) are queued but not ready: the queue
    depth the caps read leaves them out, the metrics count them apart, and every way out of
    the wait but its coming clears ``next_attempt_at``."""

    async def test_counted_apart_from_the_ready_ones(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        ex_id = await deferred(store, acct, wf, until=10)
        await new_execution(store, acct.id, wf.id)
        assert await store.count_queued(acct.id) == 1
        assert await store.count_queued() == 1
        stats = await store.queue_stats(now=at(5))
        assert (stats.queued, stats.waiting) == (1, 1)
        assert await store.take_due_retries(now=at(10), limit=10) == [ex_id]
        assert await store.count_queued(acct.id) == 2
        stats = await store.queue_stats(now=at(10))
        assert (stats.queued, stats.waiting) == (2, 0)

    async def test_a_cancel_of_one_or_of_all_ends_the_wait(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        one = await deferred(store, acct, wf, until=10)
        cancelled = await store.request_cancel(acct.id, one, now=at(3))
        assert cancelled is not None
        assert (cancelled.status, cancelled.next_attempt_at) == (ExecutionStatus.cancelled, None)
        waiting = await deferred(store, acct, wf, until=10)
        ready = await new_execution(store, acct.id, wf.id)
        pending = await store.cancel_pending(acct.id, workflow_id=None, now=at(4))
        assert pending.cancelled == 2
        for ex_id in (waiting, ready.id):
            ex = await store.get_execution(acct.id, ex_id)
            assert ex is not None
            assert (ex.status, ex.next_attempt_at) == (ExecutionStatus.cancelled, None)
        assert await store.take_due_retries(now=at(10), limit=10) == []
        assert (await store.queue_stats(now=at(10))).waiting == 0

    async def test_one_past_its_deadline_times_out(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        """Claimed at ``at(1)``: its deadline is ``at(1 + TIMEOUT_S)``; a wait beyond it
        (a retry is never scheduled so, a moved deadline can be) ends as the reaper's."""
        ex_id = await deferred(store, acct, wf, until=TIMEOUT_S + 100)
        reaped = await store.reap(now=at(1 + TIMEOUT_S))
        assert reaped.timed_out == [ex_id]
        ex = await store.get_execution(acct.id, ex_id)
        assert ex is not None
        assert (ex.status, ex.next_attempt_at) == (ExecutionStatus.timed_out, None)


class TestTakeDueRetries:
    async def test_each_due_one_once(self, store: Store, acct: Account, wf: Workflow) -> None:
        late = await deferred(store, acct, wf, until=20)
        early = await deferred(store, acct, wf, until=10)
        plain = await new_execution(store, acct.id, wf.id)
        assert await store.take_due_retries(now=at(5), limit=10) == []
        assert await store.take_due_retries(now=at(15), limit=10) == [early]
        assert await store.take_due_retries(now=at(15), limit=10) == []
        assert await store.take_due_retries(now=at(25), limit=10) == [late]
        ex = await store.get_execution(acct.id, early)
        assert ex is not None
        assert (ex.status, ex.next_attempt_at) == (Q, None)
        assert set(await store.queued_ids(limit=10)) == {early, late, plain.id}

    async def test_concurrent_takers_never_share(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        ids = {await deferred(store, acct, wf, until=10) for _ in range(8)}
        results = await asyncio.gather(
            *(store.take_due_retries(now=at(11), limit=3) for _ in range(4))
        )
        taken = [i for result in results for i in result]
        assert len(taken) == len(set(taken)) == 8
        assert set(taken) == ids


class TestRequeue:
    async def test_failed_goes_back_to_queued_with_its_steps(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        ex = await new_execution(store, acct.id, wf.id)
        await claim(store, ex.id, owner="w1", now=at(1))
        step = make_step(ex, status=StepStatus.failed)
        await store.finish_execution(
            ex.id,
            owner="w1",
            status=ExecutionStatus.failed,
            error="boom",
            finished_at=at(2),
            step=step,
        )
        statuses = [ExecutionStatus.failed]
        again = await store.requeue_execution(acct.id, ex.id, statuses=statuses)
        assert again is not None
        assert (again.status, again.error, again.finished_at, again.started_at) == (
            Q,
            None,
            None,
            None,
        )
        assert again.deadline_at is None
        assert again.attempt == 1
        assert len(await store.list_step_runs(acct.id, ex.id)) == 1
        # A fresh claim starts a new deadline.
        claimed = await claim(store, ex.id, owner="w2", now=at(100))
        assert claimed is not None
        assert (claimed.started_at, claimed.deadline_at) == (at(100), at(100 + TIMEOUT_S))

    async def test_other_states_and_tenants_are_refused(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        ex = await new_execution(store, acct.id, wf.id)
        statuses = [ExecutionStatus.failed]
        assert await store.requeue_execution(acct.id, ex.id, statuses=statuses) is None
        other = await new_account(store)
        await claim(store, ex.id, owner="w1", now=at(1))
        await store.finish_execution(
            ex.id, owner="w1", status=ExecutionStatus.failed, error="x", finished_at=at(2)
        )
        assert await store.requeue_execution(other.id, ex.id, statuses=statuses) is None
        assert await store.requeue_execution(acct.id, "ex_unknown", statuses=statuses) is None
        stored = await store.get_execution(acct.id, ex.id)
        assert stored is not None
        assert stored.status is ExecutionStatus.failed

    async def test_an_execution_of_a_deleted_workflow_is_refused(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        """Deleting a workflow stops its executions; a retry ran its steps again."""
        ex = await new_execution(store, acct.id, wf.id)
        await claim(store, ex.id, owner="w1", now=at(1))
        await store.finish_execution(
            ex.id, owner="w1", status=ExecutionStatus.failed, error="x", finished_at=at(2)
        )
        assert await store.delete_workflow(acct.id, wf.id)
        statuses = [ExecutionStatus.failed]
        assert await store.requeue_execution(acct.id, ex.id, statuses=statuses) is None
        stored = await store.get_execution(acct.id, ex.id)
        assert stored is not None
        assert (stored.status, stored.error) == (ExecutionStatus.failed, "x")


class TestReplayOf:
    async def test_round_trip(self, store: Store, acct: Account, wf: Workflow) -> None:
        first = await new_execution(store, acct.id, wf.id)
        second = first.model_copy(update={"id": first.id + "r", "replay_of": first.id})
        await store.create_execution(second)
        stored = await store.get_execution(acct.id, second.id)
        assert stored is not None
        assert stored.replay_of == first.id


class TestCircuits:
    async def failures(self, store: Store, tenant_id: str, n: int, *, now: float = 1) -> None:
        for _ in range(n):
            await store.record_circuit_failure(
                tenant_id, "api.example.com", now=at(now), threshold=3, retry_at=at(now + 30)
            )

    async def test_opens_at_the_threshold(self, store: Store, acct: Account) -> None:
        await self.failures(store, acct.id, 2)
        circuit = await store.get_circuit(acct.id, "api.example.com")
        assert circuit is not None
        assert (circuit.state, circuit.failures, circuit.opened_at) == (CLOSED, 2, None)
        assert await store.list_unclosed_circuits() == []
        await self.failures(store, acct.id, 1, now=5)
        circuit = await store.get_circuit(acct.id, "api.example.com")
        assert circuit is not None
        assert (circuit.state, circuit.failures) == (OPEN, 3)
        assert (circuit.opened_at, circuit.retry_at) == (at(5), at(35))
        assert_utc(circuit)
        # Late failures of calls already in flight keep it open, cooldown unchanged.
        await self.failures(store, acct.id, 1, now=9)
        again = await store.get_circuit(acct.id, "api.example.com")
        assert again is not None
        assert (again.state, again.failures, again.retry_at) == (OPEN, 4, at(35))
        assert [c.host for c in await store.list_unclosed_circuits()] == ["api.example.com"]

    async def test_threshold_of_one_opens_on_the_first_failure(
        self, store: Store, acct: Account
    ) -> None:
        circuit = await store.record_circuit_failure(
            acct.id, "h", now=at(1), threshold=1, retry_at=at(2)
        )
        assert (circuit.state, circuit.failures, circuit.retry_at) == (OPEN, 1, at(2))

    async def test_the_longest_key_is_recorded(self, store: Store, acct: Account) -> None:
        """A host name of 253 characters (the most DNS allows) and a port: the column was
        255 long, so PostgreSQL refused it and the circuit never opened there."""
        host = f"{'.'.join(['a' * 63] * 3)}.{'b' * 61}:65535"
        assert len(host) == 259
        circuit = await store.record_circuit_failure(
            acct.id, host, now=at(1), threshold=1, retry_at=at(2)
        )
        assert circuit.state is OPEN
        found = await store.get_circuit(acct.id, host)
        assert found is not None
        assert found.host == host

    async def test_success_resets_a_closed_count(self, store: Store, acct: Account) -> None:
        assert await store.record_circuit_success(acct.id, "api.example.com", now=at(1)) is None
        await self.failures(store, acct.id, 2)
        circuit = await store.record_circuit_success(acct.id, "api.example.com", now=at(2))
        assert circuit is not None
        assert (circuit.state, circuit.failures) == (CLOSED, 0)

    async def test_success_leaves_an_open_circuit_alone(self, store: Store, acct: Account) -> None:
        await self.failures(store, acct.id, 3)
        circuit = await store.record_circuit_success(acct.id, "api.example.com", now=at(2))
        assert circuit is not None
        assert circuit.state is OPEN

    async def test_one_probe_after_the_cooldown(self, store: Store, acct: Account) -> None:
        await self.failures(store, acct.id, 3)  # open until at(31)
        host = "api.example.com"
        assert not await store.claim_circuit_probe(acct.id, host, now=at(20), probe_until=at(50))
        probes = await asyncio.gather(
            *(
                store.claim_circuit_probe(acct.id, host, now=at(31), probe_until=at(61))
                for _ in range(5)
            )
        )
        assert sorted(probes) == [False] * 4 + [True]
        circuit = await store.get_circuit(acct.id, host)
        assert circuit is not None
        assert (circuit.state, circuit.retry_at) == (HALF_OPEN, at(61))
        # A probe that never reports back lapses: another may go.
        assert not await store.claim_circuit_probe(acct.id, host, now=at(40), probe_until=at(70))
        assert await store.claim_circuit_probe(acct.id, host, now=at(61), probe_until=at(91))

    async def test_probe_success_closes(self, store: Store, acct: Account) -> None:
        await self.failures(store, acct.id, 3)
        host = "api.example.com"
        assert await store.claim_circuit_probe(acct.id, host, now=at(31), probe_until=at(61))
        circuit = await store.record_circuit_success(acct.id, host, now=at(32))
        assert circuit is not None
        assert (circuit.state, circuit.failures, circuit.opened_at, circuit.retry_at) == (
            CLOSED,
            0,
            None,
            None,
        )
        assert await store.list_unclosed_circuits() == []

    async def test_probe_failure_reopens(self, store: Store, acct: Account) -> None:
        await self.failures(store, acct.id, 3)
        host = "api.example.com"
        assert await store.claim_circuit_probe(acct.id, host, now=at(31), probe_until=at(61))
        circuit = await store.record_circuit_failure(
            acct.id, host, now=at(32), threshold=3, retry_at=at(62)
        )
        assert (circuit.state, circuit.opened_at, circuit.retry_at) == (OPEN, at(32), at(62))

    async def test_concurrent_failures_are_all_counted(self, store: Store, acct: Account) -> None:
        await asyncio.gather(
            *(
                store.record_circuit_failure(acct.id, "h", now=at(1), threshold=100, retry_at=at(2))
                for _ in range(10)
            )
        )
        circuit = await store.get_circuit(acct.id, "h")
        assert circuit is not None
        assert circuit.failures == 10

    async def test_tenants_are_apart(self, store: Store, acct: Account) -> None:
        other = await new_account(store)
        await self.failures(store, acct.id, 3)
        await self.failures(store, other.id, 1)
        mine = await store.list_circuits(acct.id)
        theirs = await store.list_circuits(other.id)
        assert [(c.host, c.state, c.tenant_id) for c in mine] == [
            ("api.example.com", OPEN, acct.id)
        ]
        assert [(c.host, c.state, c.failures) for c in theirs] == [("api.example.com", CLOSED, 1)]
        host = "api.example.com"
        assert not await store.claim_circuit_probe(other.id, host, now=at(99), probe_until=at(9))
        assert await store.get_circuit(other.id, "nope") is None
        unclosed = await store.list_unclosed_circuits()
        assert [c.tenant_id for c in unclosed] == [acct.id]
