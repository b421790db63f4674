"""Circuit breakers per (tenant, host): end to end over real HTTP, and the shared state."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from ipaas.config import Settings
from ipaas.engine.breaker import CircuitBreaker
from ipaas.engine.connectors.base import CircuitOpenError
from ipaas.engine.retries import enqueue_due_retries
from ipaas.engine.worker import Worker
from ipaas.executions.models import StepRun, StepStatus, TriggerData
from ipaas.kit.clock import utcnow
from ipaas.runtime import Runtime
from ipaas.stores.memory import MemoryStore
from ipaas.webhooks import service as webhook_service
from tests.conftest import signup
from tests.engine.test_retries import Api, wait_for
from tests.standins.server import StandinServer

THRESHOLD = 3
COOLDOWN_S = 2.0
ONCE = {"max_attempts": 1}


class CountingStore(MemoryStore):
    """Counts the circuit methods the engine calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    async def record_circuit_failure(self, *args: Any, **kwargs: Any) -> Any:
        self.calls["record_circuit_failure"] += 1
        return await super().record_circuit_failure(*args, **kwargs)

    async def record_circuit_success(self, *args: Any, **kwargs: Any) -> Any:
        self.calls["record_circuit_success"] += 1
        return await super().record_circuit_success(*args, **kwargs)

    async def claim_circuit_probe(self, *args: Any, **kwargs: Any) -> Any:
        self.calls["claim_circuit_probe"] += 1
        return await super().claim_circuit_probe(*args, **kwargs)

    async def get_circuit(self, *args: Any, **kwargs: Any) -> Any:
        self.calls["get_circuit"] += 1
        return await super().get_circuit(*args, **kwargs)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"circuit_failure_threshold": THRESHOLD, "circuit_cooldown_s": COOLDOWN_S}
    )


@pytest.fixture
async def runtime(settings: Settings) -> Runtime:
    return Runtime.build(settings, store=CountingStore())


@pytest.fixture
async def api(client: httpx.AsyncClient, auth: dict[str, str], clean_standin: StandinServer) -> Api:
    return Api(client, auth, clean_standin)


async def circuits(api: Api, auth: dict[str, str] | None = None) -> list[dict[str, Any]]:
    r = await api.client.get("/api/circuits", headers=auth or api.auth)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


async def open_the_circuit(api: Api) -> dict[str, Any]:
    """``THRESHOLD`` executions that each fail once with a 500: the host's circuit opens."""
    api.standin.add_fault("/echo/down", status=500, count=None)
    wf = await api.workflow([api.call("call", "/echo/down", ONCE)])
    for _ in range(THRESHOLD):
        assert (await api.settled(await api.fire(wf)))["status"] == "failed"
    [circuit] = await circuits(api)
    return circuit


def host(api: Api) -> str:
    return httpx.URL(api.standin.url).netloc.decode()


class TestEndToEnd:
    async def test_opens_fails_fast_half_opens_and_closes(
        self, api: Api, worker: Worker, runtime: Runtime
    ) -> None:
        circuit = await open_the_circuit(api)
        assert (circuit["host"], circuit["state"], circuit["consecutive_failures"]) == (
            host(api),
            "open",
            THRESHOLD,
        )
        opened_at, retry_at = (
            datetime.fromisoformat(circuit[k]) for k in ("opened_at", "retry_at")
        )
        assert retry_at - opened_at == timedelta(seconds=COOLDOWN_S)

        # While open: the step fails fast without a request and waits for the cooldown.
        wf = await api.workflow([api.call("call", "/echo/down", ONCE)])
        ex = await api.fire(wf)
        detail: dict[str, Any] = {}

        async def turned_away() -> bool:
            nonlocal detail
            detail = await api.execution(ex)
            return bool(detail["steps"]) and detail["status"] == "queued"

        await wait_for(turned_away, what="circuit_open")
        [step] = detail["steps"]
        assert (step["error_code"], step["attempt"]) == ("circuit_open", 1)
        assert datetime.fromisoformat(step["next_attempt_at"]) == retry_at
        assert datetime.fromisoformat(detail["next_attempt_at"]) == retry_at
        assert len(api.hits("/echo/down")) == THRESHOLD  # the host was not contacted

        # Another tenant's calls to the same host are not held back.
        other = await signup(api.client, "other@example.com")
        other.pop("tenant_id")
        other_wf = await api.workflow([api.call("call", "/echo/fine", ONCE)], auth=other)
        r = await api.client.post(f"/api/webhooks/{other_wf}", json={})
        other_ex = r.json()["execution_id"]
        await wait_for(
            lambda: _status_is(api, other_ex, other, "succeeded"), what="other tenant's run"
        )
        assert len(api.hits("/echo/fine")) == 1
        assert await circuits(api, other) == []
        assert [c["state"] for c in await circuits(api)] == ["open"]

        # The host recovers, slowly enough to watch the probe: half-open, then closed.
        api.standin.clear_faults()
        api.standin.add_fault("/echo/down", delay_s=0.8, count=1)

        async def half_open() -> bool:
            return [c["state"] for c in await circuits(api)] == ["half_open"]

        await wait_for(half_open, timeout_s=COOLDOWN_S + 5, what="half-open")
        # Work arriving while the probe is out runs once the circuit has closed.
        waiting = await api.fire(wf)
        done = await api.settled(ex)
        assert done["status"] == "succeeded", done
        # The circuit_open record was replaced by the real first attempt: no attempt spent.
        assert [(s["attempt"], s["status"]) for s in done["steps"]] == [(1, "succeeded")]
        probe = api.hits("/echo/down")[THRESHOLD]
        assert probe["received_at"] >= retry_at.timestamp()
        [closed] = await circuits(api)
        assert (closed["state"], closed["consecutive_failures"], closed["retry_at"]) == (
            "closed",
            0,
            None,
        )
        assert (await api.settled(waiting))["status"] == "succeeded"

    async def test_a_failed_probe_reopens(self, api: Api, worker: Worker) -> None:
        first = await open_the_circuit(api)
        wf = await api.workflow([api.call("call", "/echo/down", ONCE)])
        detail = await api.settled(await api.fire(wf), timeout_s=COOLDOWN_S + 10)
        # One attempt allowed: the circuit wait cost none, the failed probe was the one.
        assert detail["status"] == "failed"
        assert [(s["attempt"], s["status_code"]) for s in detail["steps"]] == [(1, 500)]
        assert len(api.hits("/echo/down")) == THRESHOLD + 1
        [again] = await circuits(api)
        assert again["state"] == "open"
        assert again["consecutive_failures"] == THRESHOLD + 1
        assert again["opened_at"] > first["opened_at"]


async def _status_is(api: Api, execution_id: str, auth: dict[str, str], status: str) -> bool:
    r = await api.client.get(f"/api/executions/{execution_id}", headers=auth)
    return bool(r.json()["status"] == status)


class TestHotPath:
    async def test_a_success_on_a_healthy_circuit_touches_no_circuit_state(
        self, api: Api, runtime: Runtime
    ) -> None:
        store = runtime.store
        assert isinstance(store, CountingStore)
        wf = await api.workflow([api.call("a", "/echo/a"), api.call("b", "/echo/b")])
        for _ in range(5):
            await api.fire(wf)
        await Worker(runtime).run_until_empty()
        assert len(api.hits("/echo/b")) == 5
        assert store.calls == Counter()
        # A failure is written; the next success resets it once; later ones write nothing.
        api.standin.add_fault("/echo/a", status=503, count=1, retry_after=0)
        await api.fire(wf)
        await Worker(runtime).run_until_empty()
        assert store.calls == Counter(record_circuit_failure=1)
        await wait_for(lambda: _no_queued(runtime), what="the retry")
        assert store.calls == Counter(record_circuit_failure=1, record_circuit_success=1)
        await api.fire(wf)
        await Worker(runtime).run_until_empty()
        assert store.calls == Counter(record_circuit_failure=1, record_circuit_success=1)


async def _no_queued(runtime: Runtime) -> bool:
    await Worker(runtime).run_until_empty()
    stats = await runtime.store.queue_stats(now=utcnow())
    return stats.queued == 0 and stats.waiting == 0


class TestSharedState:
    """Two breakers over one store stand for two worker processes."""

    async def test_one_process_opens_the_other_follows(self) -> None:
        store = MemoryStore()
        a, b = (CircuitBreaker(store, threshold=2, cooldown_s=0.2, probe_s=5) for _ in range(2))
        for _ in range(2):
            await a.after("tn_1", "api.test", failed=True)
        with pytest.raises(CircuitOpenError) as opened:
            await a.before("tn_1", "api.test")
        assert opened.value.code == "circuit_open"
        await b.before("tn_1", "api.test")  # b has not looked yet: its call may go out
        await b.refresh()
        with pytest.raises(CircuitOpenError):
            await b.before("tn_1", "api.test")
        await a.before("tn_2", "api.test")  # another tenant: closed

        async def cooled_down() -> bool:
            try:
                await a.before("tn_1", "api.test")  # the probe, once the cooldown is over
            except CircuitOpenError:
                return False
            return True

        await wait_for(cooled_down, timeout_s=5, what="cooldown")
        with pytest.raises(CircuitOpenError):  # one probe at a time, across processes
            await b.before("tn_1", "api.test")
        await a.after("tn_1", "api.test", failed=False)
        await b.refresh()
        await b.before("tn_1", "api.test")
        [circuit] = await store.list_circuits("tn_1")
        assert (circuit.state, circuit.failures) == ("closed", 0)


class TestDueRetries:
    async def test_due_retries_go_onto_the_queue(self, runtime: Runtime) -> None:
        await runtime.startup()
        try:
            execution = await webhook_service.start(
                runtime.store,
                runtime.queue,
                workflow_id="wf_x",
                tenant_id="tn_x",
                version=1,
                trigger=TriggerData(),
            )
            assert await runtime.queue.receive(10, 1) == [execution.id]
            now = utcnow()
            await runtime.store.claim_execution(
                execution.id, owner="w", now=now, lease_until=now, timeout_s=60
            )
            step = StepRun(
                execution_id=execution.id,
                tenant_id="tn_x",
                step_id="s",
                position=0,
                type="http_request",
                status=StepStatus.failed,
                started_at=now,
                finished_at=now,
            )
            due = datetime.now(UTC) + timedelta(milliseconds=50)
            assert await runtime.store.defer_execution(
                execution.id, owner="w", next_attempt_at=due, step=step, now=now
            )
            assert await enqueue_due_retries(runtime) == []

            async def enqueued() -> bool:
                return await enqueue_due_retries(runtime) == [execution.id]

            await wait_for(enqueued, what="due")
            assert await runtime.queue.receive(10, 1) == [execution.id]
        finally:
            await runtime.shutdown()
